"""Write frames and a soundtrack into a browser-playable MP4 through one ffmpeg pipe.

H.264 (yuv420p, even sides), AAC, ``-movflags +faststart``. Frames are
streamed to ffmpeg's stdin as raw RGB: no intermediate video file and no list
of frames in memory. The MP4 is written to a temporary name beside the target
and renamed only when ffmpeg succeeded, so a failure never leaves a
half-written file at the requested path.

Keyframes fall every :data:`KEYFRAME_S` seconds (:func:`keyframe_interval`
frames), in every MP4, so that the same encode can also be cut into segments
that each start on a keyframe (``segments=``, see :mod:`lipsync.media.segments`):
a streamed run and a plain run encode the same frames the same way and write
the same MP4.

The writer owns everything it will publish: the MP4's part file, ffmpeg's
process group and the *sidecars* (e.g. the WebVTT captions beside the MP4).
Used as a context manager, any exception inside the block kills ffmpeg and
removes every part file; the user's earlier files of the same names are left
as they were. Sidecars are written and renamed into place only once the MP4 is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import EncodeError
from ..proc import BACKGROUND_NICE, Pipe, ffmpeg_exe
from .files import part_file, publish
from .segments import SegmentOutput, tee_quote

__all__ = ["VideoWriter", "write_wav", "keyframe_interval", "TOOL_NAME", "KEYFRAME_S", "ENCODER_NICE"]

log = logging.getLogger("lipsync")

TOOL_NAME = "lipsync"
#: seconds between keyframes: where a live preview can be cut into segments
KEYFRAME_S = 1.0
#: the clip encoder's niceness: on a machine that also serves live sessions, their frames come
#: first (the network's scheduler runs clips in the gaps; this does the same for x264's threads)
ENCODER_NICE = BACKGROUND_NICE
#: fewest frames between keyframes (the encoder reorders up to 2 frames; segment cuts need room)
MIN_GOP = 4


def keyframe_interval(fps: float, seconds: float = KEYFRAME_S) -> int:
    """Frames from one keyframe to the next: ``seconds`` of video, at least :data:`MIN_GOP` frames."""
    return max(MIN_GOP, int(round(float(fps) * seconds)))


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
        segments: also cut the same encode into MPEG-TS segments, reported as
            they are finished (see :class:`~lipsync.media.segments.SegmentOutput`,
            whose ``gop`` must be :func:`keyframe_interval` of ``fps``).
        sidecars: files that belong with the MP4, ``{path: text or bytes}``:
            written under part names and published right after the MP4, never
            without it (a failed encode leaves any earlier file at ``path`` as it was).

    Use it as a context manager: ``close()`` at the end of the block publishes,
    an exception aborts (kills ffmpeg's process group, removes the part files).
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
        segments: SegmentOutput | None = None,
        sidecars: dict[str | Path, str | bytes] | None = None,
    ):
        if width % 2 or height % 2:
            raise EncodeError(f"Frame size {width}x{height} must be even for H.264 yuv420p.")
        gop = keyframe_interval(fps)
        if segments is not None and segments.gop != gop:
            raise EncodeError(f"Segments of {segments.gop} frames do not match the keyframes every {gop} frames.")
        self.path = Path(path)
        self.shape = (height, width, 3)
        self.frames = 0
        self.fps = fps
        exe = ffmpeg_exe()  # before the part file: a missing ffmpeg leaves nothing behind
        self._tmp = part_file(self.path, ".part.mp4")
        args = [
            exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-framerate", f"{fps:g}", "-i", "pipe:0",
        ]
        if audio is not None:
            args += ["-i", str(Path(audio).resolve())]
        args += ["-map", "0:v:0"]
        if audio is not None:
            args += ["-map", "1:a:0"]
        args += [
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-threads", str(threads),
            "-pix_fmt", "yuv420p", "-profile:v", "high", "-r", f"{fps:g}",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
            "-force_key_frames", f"expr:eq(mod(n,{gop}),0)", "-flags", "+global_header",
        ]
        if audio is not None:
            args += ["-c:a", "aac", "-b:a", audio_bitrate]
        for k, v in (metadata or {}).items():
            args += ["-metadata", f"{k}={v}"]
        if segments is None:
            args += ["-movflags", "+faststart+use_metadata_tags", "-f", "mp4", str(self._tmp)]
        else:  # one encode, two muxers: the MP4 and the segments get the same packets
            mp4 = "[f=mp4:movflags=+faststart+use_metadata_tags]" + str(self._tmp.resolve())
            args += ["-f", "tee", tee_quote(mp4) + "|" + tee_quote(segments.tee_slave())]
        self._segments = segments
        self._sidecars = {Path(k): v for k, v in (sidecars or {}).items()}
        self._sidecar_parts: list[tuple[Path, Path]] = []
        try:
            self._pipe = Pipe(args, what="ffmpeg (encode)", timeout=timeout, nice=ENCODER_NICE)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        if segments is not None:
            segments.start()
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
        """Finish the MP4 and publish it, then its sidecars; on failure nothing new is left at any path."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            if self.frames == 0:
                raise EncodeError("No video frames were produced.")
            if self._segments is not None:
                self._segments.stop()  # the rest, the last one with its true length, once ffmpeg is done
            self._pipe.close()
            if self._segments is not None:
                self._segments.finish(self.frames)
            parts = self._write_sidecars()
            publish(self._tmp, self.path)
            for tmp, dest in parts:
                publish(tmp, dest)
        except BaseException:
            if self._segments is not None:
                self._segments.stop()
            self._pipe.abort()
            self._remove_parts()
            raise
        return self.path

    def _write_sidecars(self) -> list[tuple[Path, Path]]:
        """Each sidecar written under a part name beside its path: [(part, path)]; on failure none is left."""
        parts = self._sidecar_parts
        for dest, content in self._sidecars.items():
            try:
                tmp = part_file(dest, ".part" + dest.suffix)
                parts.append((tmp, dest))
                data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
                tmp.write_bytes(data)
            except OSError as e:
                raise EncodeError(f"Could not write {dest.name} ({e.strerror or e}).") from None
        return parts

    def _remove_parts(self) -> None:
        self._tmp.unlink(missing_ok=True)
        for tmp, _dest in self._sidecar_parts:
            tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._segments is not None:
            self._segments.stop()
        self._pipe.abort()
        self._remove_parts()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
