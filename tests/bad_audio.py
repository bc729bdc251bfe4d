"""A corpus of hostile audio files, made on the fly, and a bait that records any reference followed.

Each entry: name -> (file name, maker(bait) -> bytes, words the message must hold).
Every entry must be refused with a clear AudioError, and the bait must record
no hit: no request to its web server, no open of its file.
"""

from __future__ import annotations

import errno
import http.server
import os
import subprocess
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path


class Bait:
    """A web server on 127.0.0.1 and a named pipe ``bait.wav`` that record who comes for them.

    ``hits`` lists ``"http <path>"`` for each request and ``"file"`` for each
    open of the pipe (a reader that opens it is seen at once, and gets an empty file).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                hits.append(f"http {self.path}")
                self.send_response(404)
                self.end_headers()

            def log_message(self, *a):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.file = self.folder / "bait.wav"
        os.mkfifo(self.file)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.file, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only while a reader has it open
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                time.sleep(0.01)
                continue
            self.hits.append("file")
            os.close(fd)
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> "Bait":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ffmpeg(*args: str, suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / f"out{suffix}"
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(out)], check=True, timeout=120)
        return out.read_bytes()


@lru_cache(maxsize=None)
def tone(suffix: str, *codec: str, seconds: float = 1.0, rate: int = 48000, freq: int = 440) -> bytes:
    """A sine tone written by ffmpeg in the container of ``suffix`` with the ``codec`` options."""
    return _ffmpeg("-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}",
                   *codec, suffix=suffix)


def _hls(b: Bait) -> bytes:
    return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:1.0,\n{b.file.name}\n#EXTINF:1.0,\n{b.url}/seg.ts\n#EXTINF:1.0,\nfile://{b.file}\n"
            "#EXT-X-ENDLIST\n").encode()


def _ffconcat(b: Bait) -> bytes:
    return f"ffconcat version 1.0\nfile '{b.file.name}'\nfile '{b.file.name}'\n".encode()


CORPUS = {
    "hls_playlist_named_wav": ("speech.wav", _hls, ["playlist"]),
    "hls_playlist_named_mp3": ("speech.mp3", _hls, ["playlist"]),
    "hls_playlist_with_bom": ("speech.m4a", lambda b: b"\xef\xbb\xbf" + _hls(b), ["playlist"]),
    "ffconcat_named_wav": ("speech.wav", _ffconcat, ["playlist"]),
    "ffconcat_named_mp3": ("speech.mp3", _ffconcat, ["playlist"]),
    "concat_protocol_name": ("concat:bait.wav|bait.wav.wav", _ffconcat, ["playlist"]),
    "subfile_protocol_name": ("subfile,,start,0,end,0,,:bait.wav.mp3", _hls, ["playlist"]),
    "url_list_named_mp3": ("speech.mp3", lambda b: f"{b.url}/a.mp3\n{b.file}\n".encode(), ["not an audio file"]),
    "sdp_named_wav": ("speech.wav", lambda b: (
        f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
        f"m=audio {b.url.rsplit(':', 1)[1]} RTP/AVP 0\n").encode(), ["not an audio file"]),
    "wav_header_then_playlist": ("speech.wav", lambda b: tone(".wav", "-c:a", "pcm_s16le")[:36] + _hls(b),
                                 ["could not be decoded"]),
    "html_named_wav": ("speech.wav", lambda b: f'<!doctype html><audio src="{b.url}/a.mp3">'.encode(),
                       ["not an audio file"]),
    "zero_bytes": ("empty.wav", lambda b: b"", ["empty"]),
    "truncated_mp3": ("cut.mp3", lambda b: tone(".mp3", "-c:a", "libmp3lame")[:200], ["audio"]),
    "wavpack_in_mkv": ("speech.mkv", lambda b: tone(".mkv", "-c:a", "wavpack"), ["wavpack", "not accepted"]),
    "g726_in_wav": ("speech.wav", lambda b: tone(".wav", "-c:a", "adpcm_g726", "-ar", "8000"),
                    ["g726", "not accepted"]),
    "video_without_sound": ("clip.mp4", lambda b: _ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=64x64:r=5:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", suffix=".mp4"),
        ["no sound track"]),
}
