"""The one door through which a driving video enters: probe, check, decode.

A video is untrusted input, like a photo. Before anything is decoded:

* the file must exist, be non-empty and within ``max_bytes``;
* its container is recognised from its first bytes, not its name
  (:mod:`lipsync.media.sniff`): ISO media (MP4, MOV), Matroska (MKV, WebM) or
  AVI. ffmpeg and ffprobe then open it with that demuxer forced and the
  ``file`` protocol only, so a playlist, a concat list or anything else named
  ``.mp4`` never reaches a demuxer that could open other files or the network;
* ffprobe (JSON, with a time limit) must find a video stream whose codec is on
  :data:`ALLOWED_CODECS`, and its duration, resolution and frame count must be
  within the limits.

Decoding streams: one ffmpeg process writes raw RGB frames to a pipe and they
are read one at a time (memory does not grow with the clip). ffmpeg applies the
rotation the file asks for (its ``autorotate``), resamples to the requested
frame rate with the ``fps`` filter (variable frame rate comes out constant) and
scales to the working size. The video's own sound is ignored. A decode that
stalls or runs past its time limit is killed with its process group.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VideoError
from ..proc import current_nice, ffmpeg_exe, kill_group, run, start
from .files import check_input_file
from .sniff import DEMUXERS, input_args, sniff_as

__all__ = [
    "VideoInfo",
    "probe_video",
    "working_size",
    "VideoDecoder",
    "ALLOWED_CODECS",
    "MAX_VIDEO_SIDE",
    "MAX_VIDEO_PIXELS",
    "MAX_SOURCE_FRAMES",
    "MIN_VIDEO_SIDE",
    "VIDEO_CONTAINERS",
]

log = logging.getLogger("lipsync")

#: codecs accepted inside the containers (what phones, cameras, browsers and editors write)
ALLOWED_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg", "prores")
#: containers accepted (recognised by their first bytes; see :mod:`lipsync.media.sniff`)
VIDEO_CONTAINERS = ("mp4", "matroska", "avi")

MAX_VIDEO_SIDE = 4096  #: longest side accepted (4K and DCI 4K phone and camera videos pass)
MAX_VIDEO_PIXELS = 4096 * 2304  #: pixels per frame accepted
MIN_VIDEO_SIDE = 64
MAX_SOURCE_FRAMES = 15_000  #: frames in the file (60 s at 250 fps)
PROBE_TIMEOUT_S = 30.0
STALL_TIMEOUT_S = 30.0  #: longest ffmpeg may take to deliver one frame
#: a decode that yields less than this share of the frames the file declares is refused as damaged
MIN_DECODED_SHARE = 0.5
_HELP = "Use an MP4, MOV, WebM, MKV or AVI video (H.264, HEVC, VP8, VP9, AV1, MPEG-4, MJPEG or ProRes)."


@dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about an accepted video."""

    path: Path
    container: str  #: "mp4" (MP4/MOV), "matroska" (MKV/WebM) or "avi"
    codec: str
    stream: int  #: index of the video stream in the file
    width: int  #: display width: pixel aspect ratio and rotation applied
    height: int  #: display height
    duration_s: float | None  #: None when the file does not say (e.g. a browser recording)
    frame_rate: float | None  #: average frame rate declared
    frames: int | None  #: frames declared (or estimated from duration and rate)
    rotation: int  #: 0, 90, 180 or 270 degrees, applied while decoding

    def expected_frames(self, fps: float) -> int | None:
        """About how many frames decoding at ``fps`` gives (None if the duration is unknown)."""
        return None if self.duration_s is None else max(1, round(self.duration_s * fps))


def ffprobe_exe() -> str:
    """``ffprobe`` beside the ffmpeg in use, else on PATH."""
    env = os.environ.get("LIPSYNC_FFPROBE")
    if env:
        return env
    sibling = Path(ffmpeg_exe()).with_name("ffprobe")
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which("ffprobe")
    if found:
        return found
    raise VideoError("ffprobe (part of ffmpeg) was not found; it is needed to check videos. Install ffmpeg.")


def _sniff(path: Path) -> str:
    """The container from the file's first bytes (one of :data:`VIDEO_CONTAINERS`); VideoError otherwise."""
    return sniff_as(path, VIDEO_CONTAINERS, VideoError, kind="video", what="a video", a_kind="a video", help=_HELP)


def _fraction(value) -> float | None:
    try:
        num, _, den = str(value).partition("/")
        f = float(num) / float(den or 1)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _number(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _rotation(stream: dict) -> int:
    deg = None
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            deg = side["rotation"]
    if deg is None:
        deg = (stream.get("tags") or {}).get("rotate")
    try:
        return int(round(float(deg or 0))) % 360 // 90 * 90
    except (TypeError, ValueError):
        return 0


def probe_video(
    path: str | Path,
    *,
    max_seconds: float = 60.0,
    max_bytes: int = 200_000_000,
    timeout: float = PROBE_TIMEOUT_S,
) -> VideoInfo:
    """Check an untrusted video without decoding it.

    Args:
        path: the file.
        max_seconds: refuse videos declared longer than this.
        max_bytes: refuse larger files before reading them.
        timeout: seconds ffprobe may take.

    Returns:
        :class:`VideoInfo` with the display size (rotation and pixel aspect applied).

    Raises:
        VideoError: missing, empty, too large, not an accepted container or codec,
            no video stream, too long, too large a picture, or unreadable.
    """
    path = check_input_file(
        path, "video", VideoError, max_bytes=max_bytes, empty_hint=_HELP,
        too_large_hint="Use a shorter clip or a smaller resolution.",
    )
    container = _sniff(path)
    args = [
        ffprobe_exe(), "-v", "error", "-hide_banner", *input_args(path, container),
        "-show_format", "-show_streams", "-of", "json",
    ]
    try:
        raw = run(args, timeout=timeout, what="ffprobe", error=VideoError)
        data = json.loads(raw.decode("utf-8", "replace"))
    except (VideoError, ValueError):
        raise VideoError(f"{path.name} is damaged or incomplete, or not a video this tool can read. {_HELP}") from None
    fmt = data.get("format") or {}
    if fmt.get("format_name") != DEMUXERS[container][1]:
        raise VideoError(f"{path.name} is not a video this tool can read. {_HELP}")
    streams = data.get("streams") or []
    videos = [
        s for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    if not videos:
        has_audio = any(s.get("codec_type") == "audio" for s in streams)
        what = "it holds only sound" if has_audio else "it holds no pictures"
        raise VideoError(f"{path.name} has no video track ({what}). Give a video of the person, or use --image.")
    stream = videos[0]
    codec = str(stream.get("codec_name") or "unknown")
    if codec not in ALLOWED_CODECS:
        tag = str(stream.get("codec_tag_string") or "")
        if codec == "unknown" and tag.isprintable() and tag.strip() and not tag.startswith("["):
            codec = f"unknown ({tag.strip()[:8]})"
        raise VideoError(f"{path.name} uses the {codec} video codec, which is not accepted. {_HELP}")
    try:
        w, h = int(stream.get("width") or 0), int(stream.get("height") or 0)
    except (TypeError, ValueError):
        w = h = 0
    if w <= 0 or h <= 0:
        raise VideoError(f"{path.name} does not say how large its pictures are; it may be damaged. {_HELP}")
    if max(w, h) > MAX_VIDEO_SIDE or w * h > MAX_VIDEO_PIXELS:
        raise VideoError(
            f"{path.name} is {w}x{h} pixels; the limit is {MAX_VIDEO_SIDE} pixels on the long side "
            f"and {MAX_VIDEO_PIXELS / 1e6:.1f} megapixels. Use a smaller video (1080p is plenty)."
        )
    sar = _fraction(stream.get("sample_aspect_ratio"))
    if sar and abs(sar - 1.0) > 1e-3 and 0.25 <= sar <= 4.0:
        w = max(2, round(w * sar))
    rotation = _rotation(stream)
    if rotation in (90, 270):
        w, h = h, w
    if min(w, h) < MIN_VIDEO_SIDE:
        raise VideoError(
            f"{path.name} is only {w}x{h} pixels. Use a video at least {MIN_VIDEO_SIDE} pixels on each side "
            "(256 or more works best)."
        )
    duration = _number(fmt.get("duration")) or _number(stream.get("duration"))
    if duration is not None and duration > max_seconds + 0.5:
        raise VideoError(
            f"The video lasts {duration:.0f} seconds; the limit is {max_seconds:g} seconds. Use a shorter clip "
            "(it is looped to the length of the speech)."
        )
    rate = _fraction(stream.get("avg_frame_rate")) or _fraction(stream.get("r_frame_rate"))
    declared = None
    for value in (stream.get("nb_frames"), (stream.get("tags") or {}).get("NUMBER_OF_FRAMES")):
        try:
            declared = int(value)
            break
        except (TypeError, ValueError):
            continue
    if declared is None and duration is not None and rate is not None:
        declared = round(duration * rate)
    if declared is not None and declared > MAX_SOURCE_FRAMES:
        raise VideoError(
            f"{path.name} declares {declared} frames; the limit is {MAX_SOURCE_FRAMES}. "
            "Use a shorter clip or a normal frame rate."
        )
    if declared is not None and declared <= 0:
        raise VideoError(f"{path.name} holds no video frames. {_HELP}")
    return VideoInfo(path, container, codec, int(stream.get("index", 0)), w, h, duration, rate, declared, rotation)


def working_size(info: VideoInfo, max_side: int) -> tuple[int, int]:
    """(width, height) to decode at: the long side scaled down to ``max_side`` (never up), even sides."""
    w, h = info.width, info.height
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = max(2, round(w * s)), max(2, round(h * s))
    return w - w % 2, h - h % 2


class VideoDecoder:
    """Raw RGB frames of a probed video, one at a time, from an ffmpeg pipe.

    Use as a context manager and iterate: ``(H, W, 3)`` uint8 RGB arrays at
    ``fps``, scaled to ``size``. On leaving the block ffmpeg is stopped (its
    whole process group) whatever happened.

    Args:
        info: from :func:`probe_video`.
        fps: output frame rate (the ``fps`` filter: duplicates or drops frames).
        size: (width, height), both even.
        max_seconds: decoding stops past this (a file may lie about its length);
            more frames than that are an error.
        timeout: seconds the whole decode may take.
        stall_timeout: seconds ffmpeg may take to deliver one frame.

    Raises (while iterating):
        VideoError: decoding failed, stalled, ran out of time, gave no frames,
            far fewer frames than declared, or more than ``max_seconds`` of them.
    """

    def __init__(
        self,
        info: VideoInfo,
        fps: float,
        size: tuple[int, int],
        *,
        max_seconds: float = 60.0,
        timeout: float = 1800.0,
        stall_timeout: float = STALL_TIMEOUT_S,
    ):
        self.info = info
        self.fps = float(fps)
        self.width, self.height = int(size[0]), int(size[1])
        self.max_frames = int(math.ceil((max_seconds + 0.5) * self.fps))
        self.timeout = float(timeout)
        self.stall_timeout = float(stall_timeout)
        self.frames = 0
        vf = f"fps={self.fps:.6g},scale={self.width}:{self.height}:flags=area,setsar=1,format=rgb24"
        self.args = [
            ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
            *input_args(info.path, info.container),
            "-map", f"0:{info.stream}", "-an", "-sn", "-dn", "-vf", vf,
            "-t", f"{max_seconds + 0.5:.3f}",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ]
        self.proc: subprocess.Popen | None = None
        #: a clip's decoder runs lower (made inside :func:`~lipsync.proc.background`); a live session's does not
        self._nice = current_nice()
        self._err: collections.deque = collections.deque(maxlen=32)
        self._done = threading.Event()
        self._waiting_since: float | None = None
        self._killed: str | None = None

    # -- process ---------------------------------------------------------------------
    def __enter__(self) -> "VideoDecoder":
        log.debug("decode %s", self.args)
        try:
            self.proc = start(self.args, nice=self._nice, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        except OSError as e:
            raise VideoError(f"Could not start ffmpeg ({e.strerror or e}). Is it installed?") from None
        self._started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._drain, name="lipsync-video-stderr", daemon=True),
            threading.Thread(target=self._watch, name="lipsync-video-watchdog", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop ffmpeg (if still running) and its helper threads."""
        self._done.set()
        if self.proc is None:
            return
        kill_group(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()
        for t in self._threads:
            t.join(timeout=5)

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            self._err.append(line[-300:])
        self.proc.stderr.close()

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            now = time.monotonic()
            waiting = self._waiting_since
            if now - self._started > self.timeout:
                self._killed = f"decoding the video took longer than {self.timeout:.0f} s and was stopped"
            elif waiting is not None and now - waiting > self.stall_timeout:
                self._killed = f"ffmpeg delivered no frame for {self.stall_timeout:.0f} s and was stopped"
            if self._killed:
                assert self.proc is not None
                kill_group(self.proc)
                return

    def _tail(self) -> str:
        text = b"".join(self._err).decode("utf-8", "replace").strip().splitlines()
        return " | ".join(text[-4:])[-400:]

    # -- frames ----------------------------------------------------------------------
    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end of the video."""
        assert self.proc is not None and self.proc.stdout is not None, "use VideoDecoder as a context manager"
        frame = np.empty((self.height, self.width, 3), np.uint8)
        view = memoryview(frame).cast("B")
        got = 0
        self._waiting_since = time.monotonic()
        try:
            while got < len(view):
                n = self.proc.stdout.readinto(view[got:])
                if not n:
                    break
                got += n
        finally:
            self._waiting_since = None
        name = self.info.path.name
        if self._killed:
            raise VideoError(f"{name}: {self._killed}. The file may be damaged; try another video.")
        if got == len(view):
            self.frames += 1
            if self.frames > self.max_frames:
                raise VideoError(
                    f"{name} lasts longer than it says; the limit is {self.max_frames / self.fps:.0f} seconds. "
                    "Use a shorter clip."
                )
            return frame
        self._finish()
        return None

    def _finish(self) -> None:
        """At the end of the stream: ffmpeg must have succeeded and delivered enough frames."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=self.stall_timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            code = self.proc.returncode
        for t in self._threads[:1]:
            t.join(timeout=5)
        name = self.info.path.name
        if self._killed:
            raise VideoError(f"{name}: {self._killed}. The file may be damaged; try another video.")
        if code != 0:
            log.info("decoding %s failed (exit %s): %s", name, code, self._tail())
            raise VideoError(f"{name} is damaged or incomplete: it could not be decoded. {_HELP}")
        if self.frames == 0:
            raise VideoError(f"{name} holds no picture that could be decoded. {_HELP}")
        expected = self.info.expected_frames(self.fps)
        if expected and expected >= 4 and self.frames < MIN_DECODED_SHARE * expected:
            raise VideoError(
                f"{name} is damaged or incomplete: only {self.frames} of its about {expected} frames "
                f"could be decoded. {_HELP}"
            )
        if expected and self.frames < expected - 2:
            log.warning("%s: %d of about %d frames decoded", name, self.frames, expected)

    def __iter__(self):
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame
