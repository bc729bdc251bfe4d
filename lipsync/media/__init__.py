"""Untrusted files in, finished files out: images, audio, the MP4 writer and HLS packages."""
