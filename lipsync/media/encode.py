"""Write frames and a soundtrack into a browser-playable MP4 through one ffmpeg pipe.

H.264 (yuv420p, even sides), AAC, ``-movflags +faststart``. Frames are
streamed to ffmpeg's stdin as raw RGB: no intermediate video file and no list
of frames in memory. The MP4 is written to a temporary name beside the target
and renamed only when ffmpeg succeeded, so a failure never leaves a
half-written file at the requested path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import EncodeError
from ..proc import Pipe, ffmpeg_exe
from .files import part_file, publish

__all__ = ["VideoWriter", "write_wav", "TOOL_NAME"]

log = logging.getLogger("lipsync")

TOOL_NAME = "lipsync"


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Mono float audio -> 16-bit PCM wav (for muxing; no dependency beyond numpy)."""
    import wave

    pcm = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
    pcm = (pcm * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return Path(path)


class VideoWriter:
    """Context manager: ``write(frame)`` RGB uint8 frames, audio muxed at close.

    Args:
        path: the MP4 to create (replaced atomically on success).
        width, height: frame size; both must be even.
        fps: frame rate.
        audio: a wav file to mux as AAC (its whole length is kept).
        crf, preset, threads: x264 settings.
        metadata: extra MP4 metadata tags.
        timeout: seconds before ffmpeg is stopped.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        audio: str | Path | None = None,
        *,
        crf: int = 20,
        preset: str = "veryfast",
        threads: int = 0,
        audio_bitrate: str = "128k",
        metadata: dict[str, str] | None = None,
        timeout: float = 3600.0,
    ):
        if width % 2 or height % 2:
            raise EncodeError(f"Frame size {width}x{height} must be even for H.264 yuv420p.")
        self.path = Path(path)
        self.shape = (height, width, 3)
        self.frames = 0
        self.fps = fps
        self._tmp = part_file(self.path, ".part.mp4")
        args = [
            ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-framerate", f"{fps:g}", "-i", "pipe:0",
        ]  # fmt: skip
        if audio is not None:
            args += ["-i", str(Path(audio).resolve())]
        args += ["-map", "0:v:0"]
        if audio is not None:
            args += ["-map", "1:a:0"]
        args += [
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-threads", str(threads),
            "-pix_fmt", "yuv420p", "-profile:v", "high", "-r", f"{fps:g}",
        ]  # fmt: skip
        if audio is not None:
            args += ["-c:a", "aac", "-b:a", audio_bitrate]
        for k, v in (metadata or {}).items():
            args += ["-metadata", f"{k}={v}"]
        args += ["-movflags", "+faststart+use_metadata_tags", "-f", "mp4", str(self._tmp)]
        try:
            self._pipe = Pipe(args, what="ffmpeg (encode)", timeout=timeout)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != self.shape or frame.dtype != np.uint8:
            self.abort()
            raise EncodeError(f"Frame {frame.shape} {frame.dtype} does not match {self.shape} uint8.")
        try:
            self._pipe.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except BaseException:
            self.abort()
            raise
        self.frames += 1

    def close(self) -> Path:
        """Finish the file; on failure nothing is left at ``path``."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            if self.frames == 0:
                raise EncodeError("No video frames were produced.")
            self._pipe.close()
            publish(self._tmp, self.path)
        except BaseException:
            self._pipe.abort()
            self._tmp.unlink(missing_ok=True)
            raise
        return self.path

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pipe.abort()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
