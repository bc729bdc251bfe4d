"""A corpus of hostile and awkward driving videos, made on the fly (shared by several tests).

Each entry: name -> (file name, bytes maker, expectation, words the message must hold).
Expectation "error": a clean VideoError / exit 2 / readable message, nothing written;
"photo": accepted and used as a photo (a one-frame video).
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path


from videos import pan_frames, write_video


def _ffmpeg(*args: str, suffix: str = ".mp4") -> bytes:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / f"out{suffix}"
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(out)], check=True, timeout=120)
        return out.read_bytes()


@lru_cache(maxsize=None)
def _pan_mp4(faststart: bool) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        extra = ["-movflags", "+faststart"] if faststart else []
        path = write_video(Path(d) / "pan.mp4", pan_frames(50), codec=[
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-g", "10", *extra])
        return path.read_bytes()


def _cut(data: bytes, share: float) -> bytes:
    return data[: int(len(data) * share)]


def _one_frame() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return write_video(Path(d) / "one.mp4", pan_frames(50)[:1]).read_bytes()


@lru_cache(maxsize=None)
def avi(codec: str = "mjpeg", size: str = "128x96", seconds: float = 1.0) -> bytes:
    """A real AVI written by ffmpeg (testsrc pictures at 25 fps)."""
    extra = {"mjpeg": ["-q:v", "5"], "mpeg4": ["-vtag", "XVID", "-q:v", "5"], "libx264": ["-pix_fmt", "yuv420p"]}
    return _ffmpeg("-f", "lavfi", "-i", f"testsrc=s={size}:r=25:d={seconds}", "-c:v", codec, *extra[codec],
                   suffix=".avi")


def patch_avi(data: bytes, *, fourcc: bytes | None = None, size: tuple[int, int] | None = None,
              frames: int | None = None) -> bytes:
    """An AVI with its first video stream's header rewritten: codec FourCC, declared size or frame count."""
    b = bytearray(data)
    avih, strh = b.find(b"avih"), b.find(b"strh")
    strf = b.find(b"strf", strh)
    assert min(avih, strh, strf) > 0 and b[strh + 8 : strh + 12] == b"vids"
    if fourcc is not None:  # strh fccHandler, BITMAPINFOHEADER biCompression
        b[strh + 12 : strh + 16] = fourcc
        b[strf + 24 : strf + 28] = fourcc
    if size is not None:  # biWidth, biHeight; avih dwWidth, dwHeight
        b[strf + 12 : strf + 20] = struct.pack("<ii", *size)
        b[avih + 40 : avih + 48] = struct.pack("<II", *size)
    if frames is not None:  # avih dwTotalFrames, strh dwLength
        b[avih + 24 : avih + 28] = struct.pack("<I", frames)
        b[strh + 40 : strh + 44] = struct.pack("<I", frames)
    return bytes(b)


#: a RIFF AVI header, then an HLS playlist naming a local file and a local web server
AVI_THEN_PLAYLIST = (
    b"RIFF\x00\x10\x00\x00AVI LIST\x20\x00\x00\x00hdrl"
    b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/x.ts\n#EXTINF:1,\nfile:///etc/passwd\n"
    b"#EXT-X-ENDLIST\n"
)


def _mp3() -> bytes:
    return _ffmpeg("-f", "lavfi", "-i", "sine=frequency=200:duration=1", "-c:a", "libmp3lame", suffix=".mp3")


CORPUS = {
    "zero_bytes": ("empty.mp4", lambda: b"", "error", ["empty"]),
    "truncated_moov_at_end": ("cut.mp4", lambda: _cut(_pan_mp4(False), 0.6), "error", ["damaged or incomplete"]),
    "truncated_faststart": ("cut_fast.mp4", lambda: _cut(_pan_mp4(True), 0.35), "error", ["damaged or incomplete"]),
    "huge_resolution_8192": ("huge.mkv", lambda: _ffmpeg(
        "-f", "lavfi", "-i", "color=s=8192x8192:r=25:d=0.04", "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "31",
        suffix=".mkv"), "error", ["8192x8192", "limit"]),
    "hls_playlist_named_mp4": ("clip.mp4", lambda: (
        b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nfile:///etc/passwd\n"
        b"#EXTINF:10.0,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n"), "error", ["playlist"]),
    "concat_list_named_mp4": ("clip.mp4", lambda: b"ffconcat version 1.0\nfile '/etc/passwd'\nfile 'clip.mp4'\n",
                              "error", ["playlist"]),
    "audio_only_mp4": ("voice.mp4", lambda: _ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=200:duration=1", "-c:a", "aac"), "error", ["no video track", "sound"]),
    "audio_with_cover_art": ("song.mp4", lambda: _ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=200:duration=1", "-i", str(Path(__file__).parents[1] / "assets" / "astronaut.jpg"),
        "-map", "0", "-map", "1", "-c:a", "aac", "-c:v", "mjpeg", "-disposition:v:0", "attached_pic"),
        "error", ["no video track"]),
    "mp3_named_mp4": ("song.mp4", _mp3, "error", ["not a video"]),
    "html_named_webm": ("page.webm", lambda: b"<!doctype html><html><body><video src=x></video></body></html>",
                        "error", ["not a video"]),
    "png_codec_in_mov": ("anim.mov", lambda: _ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=128x128:r=5:d=1", "-c:v", "png", suffix=".mov"), "error", ["png", "codec"]),
    "too_long_61s": ("long.mp4", lambda: _ffmpeg(
        "-f", "lavfi", "-i", "color=s=64x64:r=1:d=61", "-c:v", "libx264", "-pix_fmt", "yuv420p"),
        "error", ["61 seconds", "limit"]),
    "too_small_32px": ("tiny.mp4", lambda: _ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=32x32:r=25:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p"),
        "error", ["32x32"]),
    "one_frame": ("still.mp4", _one_frame, "photo", []),
    "avi_truncated": ("cut.avi", lambda: _cut(avi("mpeg4"), 0.3), "error", ["damaged or incomplete"]),
    "avi_bogus_codec": ("odd.avi", lambda: patch_avi(avi(), fourcc=b"ZZZZ"), "error", ["ZZZZ", "codec"]),
    "avi_huge_resolution_8192": ("huge.avi", lambda: _ffmpeg(
        "-f", "lavfi", "-i", "color=s=8192x8192:r=25:d=0.04", "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "31",
        suffix=".avi"), "error", ["8192x8192", "limit"]),
    "avi_declares_ten_million_frames": ("long.avi", lambda: patch_avi(avi(), frames=10_000_000),
                                        "error", ["seconds", "limit"]),
    "avi_header_before_playlist": ("clip.avi", lambda: AVI_THEN_PLAYLIST, "error", ["no video track"]),
    "hls_playlist_named_avi": ("clip.avi", lambda: b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/x.ts\n",
                               "error", ["playlist"]),
}


@lru_cache(maxsize=None)
def make(name: str) -> bytes:
    """The bytes of corpus entry ``name`` (made once per test session)."""
    return CORPUS[name][1]()


def child_processes() -> list:
    """Live (not zombie) child processes of this test process."""
    import psutil

    return [c for c in psutil.Process().children(recursive=True) if c.is_running() and c.status() != "zombie"]
