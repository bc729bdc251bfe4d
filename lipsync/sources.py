"""Where the face comes from: a photo or a driving video, behind one interface.

The pipeline does not branch on the input kind beyond building its source.
A source gives it:

* ``kind`` ("photo" or "video"), ``width``, ``height``, ``detector``, ``box``
  (the face box of the photo, or of the video's first frame with a face) and
  ``face_frames`` (output frames that show a face);
* ``still_face``: the photo's 96x96 crop, for the network's still-face fast
  path, or None, in which case ``face_at(i)`` gives output frame ``i``'s crop;
* ``weights(speech_weights)``: how strongly each output frame gets a mouth;
* ``compositor(parts)``: an object with ``image`` (a frame-sized array) and
  ``paste(pred, out)`` that turns each frame's mouth crop into the finished
  frame, in frame order (the photo: paste, then head motion; a video: the
  frame read back, the mouth pasted in its own box, the label drawn);
* ``key_frame()``: the picture that stands for the clip and its face crop;
  ``label_avoid()``: the region the label and burned captions keep clear of;
  ``still_picture``: whether head motion may be added;
* ``close()``: removes whatever the source keeps on disk.

**A video** is decoded once (:func:`scan_video`), at the output frame rate and
working size, while the face tracker (:mod:`lipsync.face.track`) follows the
face. A short clip's frames stay in memory as decoded (up to
:data:`MEMORY_SPOOL_MB`: no compression, no round trip through the disk); a
longer one's, and a live session's, are compressed into a spool file in the
request's temporary folder (JPEG quality 95, 4:4:4; about 47 dB from the
decoded frame, finer than the H.264 output). Frames are read back in any
order, one at a time, so looping a spooled clip costs no memory: RAM holds a
frame or two per reader whatever the clip's length; the disk holds the spool
(about 0.1 MB per 512x512 frame, 0.2-0.4 MB at 720p: at most about 1.5 GB for
a 60 s, 60 fps 720p clip) until the request ends.

**Length**: a video longer than the speech is cut; a shorter one is played
back and forth (``pingpong``: 0, 1, ..., L-1, L-2, ..., 1, 0, 1, ...; no jump
at the turns) or from the start again (``loop``).

**Faces**: a frame with no face keeps its own pixels (the mouth fades out and
in over two frames at the edges of such a stretch); the request fails only
when fewer than :data:`MIN_FACE_SHARE` of the frames used show a face.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

from .blend import Blender, draw_label, paste_mouth
from .errors import ImageError, NoFaceError, ResourceError
from .face import FaceBox, face_crop, pad_box

__all__ = [
    "PhotoSource",
    "VideoSource",
    "FrameSpool",
    "scan_video",
    "scan_or_still",
    "loop_indices",
    "loop_index",
    "edge_fade",
    "LOOP_MODES",
    "MIN_FACE_SHARE",
    "ANALYSIS_SIDE",
]

log = logging.getLogger("lipsync")

from .options import LOOP_MODES  # the one home of the constant
MIN_FACE_SHARE = 0.2  #: a video fails when fewer of the frames used show a face
ANALYSIS_SIDE = 640  #: faces are detected on frames scaled down to this long side
FACE_FADE_FRAMES = 2  #: frames over which the mouth fades where the face is lost or found
SPOOL_QUALITY = 95
MEMORY_SPOOL_MB = 256  #: a clip's frames stay in memory up to this size (a live session's always go to disk)


# ----------------------------------------------------------------------------- helpers


def loop_indices(n: int, length: int, mode: str = "pingpong") -> np.ndarray:
    """Which of ``length`` source frames each of ``n`` output frames shows.

    Cut when ``n <= length``; else ``pingpong`` (back and forth, no repeated frame
    at the turns) or ``loop`` (from the start again).
    """
    if length <= 0:
        raise ValueError("length must be positive")
    if mode not in LOOP_MODES:
        raise ValueError(f"mode must be one of {LOOP_MODES}, got {mode!r}")
    t = np.arange(n)
    if n <= length or length == 1:
        return np.minimum(t, length - 1)
    return _repeat(t, length, mode)


def loop_index(t: int, length: int, mode: str = "pingpong") -> int:
    """Which of ``length`` source frames output frame ``t`` shows when the source repeats
    without end (a live session): ``pingpong`` or ``loop``, as :func:`loop_indices`."""
    if length <= 0:
        raise ValueError("length must be positive")
    if mode not in LOOP_MODES:
        raise ValueError(f"mode must be one of {LOOP_MODES}, got {mode!r}")
    return 0 if length == 1 else int(_repeat(np.array([t]), length, mode)[0])


def _repeat(t: np.ndarray, length: int, mode: str) -> np.ndarray:
    if mode == "loop":
        return t % length
    period = 2 * length - 2
    k = t % period
    return np.where(k < length, k, period - k)


def edge_fade(present: np.ndarray, frames: int = FACE_FADE_FRAMES) -> np.ndarray:
    """(n,) float32: 1 where a face is present, ramping down to 0 over ``frames`` frames
    next to frames without one (not at the clip's own ends); 0 where absent."""
    present = np.asarray(present, bool)
    n = len(present)
    out = present.astype(np.float32)
    if n == 0 or present.all() or not present.any():
        return out
    idx = np.arange(n)
    last_gap = np.maximum.accumulate(np.where(~present, idx, -(10**9)))
    next_gap = np.minimum.accumulate(np.where(~present, idx, 10**9)[::-1])[::-1]
    dist = np.minimum(idx - last_gap, next_gap - idx).astype(np.float32)
    return np.where(present, np.clip(dist / (frames + 1.0), 0.0, 1.0), 0.0).astype(np.float32)


class FrameSpool:
    """Frames written once, in order, and read back in any order, one at a time.

    A short clip's frames stay in memory as decoded, while they fit in
    ``memory_bytes`` (no compression, nothing written: a 6 s 720x528 clip is
    about 170 MB). Beyond that, or with ``memory_bytes=0``, each frame is
    JPEG-compressed (quality 95, no chroma subsampling) and appended to one
    file; only the offsets stay in memory (frames already held are moved there
    when the budget runs out). Reads use ``os.pread``, so several threads can
    read at once. A pickled copy (e.g. sent to a GPU worker process) reopens the
    file read-only by its path (a spool in memory is written to its file first).
    """

    def __init__(self, path: str | Path, memory_bytes: int = 0):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self._offsets: list[tuple[int, int]] = []
        self._end = 0
        self.shape: tuple[int, int, int] | None = None
        self.memory_bytes = int(memory_bytes)
        self._held: list[np.ndarray] | None = [] if memory_bytes > 0 else None

    def __len__(self) -> int:
        return len(self._held) if self._held is not None else len(self._offsets)

    @property
    def nbytes(self) -> int:
        """Bytes the frames take: in memory, or in the file."""
        return sum(f.nbytes for f in self._held) if self._held is not None else self._end

    @property
    def in_memory(self) -> bool:
        return self._held is not None

    def append(self, rgb: np.ndarray) -> None:
        """Add the next frame; a held frame is kept as given (the caller must not change it)."""
        if self.shape is None:
            self.shape = rgb.shape
        if self._held is not None:
            if (len(self._held) + 1) * rgb.nbytes <= self.memory_bytes:
                self._held.append(rgb)
                return
            self._spill()
        self._write(rgb)

    def _spill(self) -> None:
        """Move the frames held in memory to the file (they no longer fit, or a copy is pickled)."""
        held, self._held = self._held, None
        for rgb in held or ():
            self._write(rgb)

    def _write(self, rgb: np.ndarray) -> None:
        import cv2

        params = [cv2.IMWRITE_JPEG_QUALITY, SPOOL_QUALITY, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:  # pragma: no cover - cv2 encodes any uint8 image
            raise ResourceError("A video frame could not be compressed.")
        blob = data.tobytes()
        try:
            written = os.pwrite(self._fd, blob, self._end)
        except OSError as e:
            raise ResourceError(
                f"The video's frames could not be written to the temporary folder ({e.strerror or e}). "
                "Free some disk space or use a shorter or smaller video."
            ) from None
        if written != len(blob):
            raise ResourceError("The temporary folder is full; free some disk space or use a shorter video.")
        self._offsets.append((self._end, len(blob)))
        self._end += len(blob)

    def read(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frame ``i`` as (H, W, 3) uint8 RGB, an array of the caller's own (``out`` when given)."""
        import cv2

        held = self._held
        if held is not None:
            if out is None:
                return held[i].copy()
            np.copyto(out, held[i])
            return out
        offset, size = self._offsets[i]
        data = os.pread(self._fd, size, offset)
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:  # pragma: no cover - the file is ours
            raise ResourceError("A video frame could not be read back from the temporary folder.")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out)

    def close(self) -> None:
        self._held = [] if self._held is not None else None  # the memory goes with the file
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __getstate__(self) -> dict:
        if self._held is not None:
            self._spill()
        state = dict(self.__dict__)
        state["_fd"] = -1
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fd = os.open(self.path, os.O_RDONLY)


# ----------------------------------------------------------------------------- the photo


class PhotoSource:
    """A still portrait: one face crop for the whole clip, optional head motion.

    Args:
        image: (H, W, 3) uint8 RGB working image, label drawn.
        box: the face box.
        detector: the detector that found it ("given" for a box given by the user).
        plain: the image before the label was drawn (None: no label); head motion
            keeps the label's pixels still.
        n_frames: frames in the output.
    """

    kind = "photo"
    still_picture = True  #: a still: head motion may be added

    def __init__(self, image: np.ndarray, box: FaceBox, detector: str, *, plain: np.ndarray | None, n_frames: int):
        self.image = image
        self.box = box
        self.detector = detector
        self.plain = plain
        self.still_face = face_crop(plain if plain is not None else image, box)
        self.height, self.width = image.shape[:2]
        self.face_frames = int(n_frames)

    def weights(self, speech: np.ndarray | None) -> np.ndarray | None:
        return speech

    def face_at(self, i: int) -> np.ndarray:
        return self.still_face

    def key_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """The picture that stands for the clip (label drawn) and its 96x96 face crop."""
        return self.image, self.still_face

    def label_avoid(self) -> FaceBox:
        """Where the visible label (and burned captions) may not go: the face."""
        return self.box

    def compositor(self, parts):
        """The plain paste (the still output, exactly as without motion) or paste-then-move."""
        from .enhance import make_enhancer

        enhance, parts.enhance_note = make_enhancer(parts.request.options.enhance, parts.weights,
                                                    device=getattr(parts, "device", None))
        blender = Blender(parts.image, parts.box, enhance=enhance)
        track = parts.motion
        blinks = getattr(parts, "blinks", None)  # lipsync.blink.Blinks: eyelids per frame (None: no blinks)
        moving = track is not None and not track.still
        if not moving and blinks is None:
            return blender
        from .motion import HeadWarp

        keep = None if self.plain is None else np.any(self.image != self.plain, axis=2)
        warp = HeadWarp(self.image.shape, self.box, keep=keep) if moving else None
        return _MovingHead(blender, warp, track, blinks)

    def close(self) -> None:
        pass


class _MovingHead:
    """Paste the mouth, close the eyelids (blinks), then move the head (so mouth and eyes move with it)."""

    def __init__(self, blender: Blender, warp, track, blinks=None):
        self.blender = blender
        self.image = blender.image
        self.warp = warp
        self.track = track
        self.blinks = blinks
        self._t = 0

    def paste(self, pred: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        frame = self.blender.paste(pred, out=out)
        if self.blinks is not None:
            self.blinks.apply(frame, self._t)
        if self.warp is not None:
            self.warp.apply(frame, *self.track.pose(self._t))
        self._t += 1
        return frame


# ----------------------------------------------------------------------------- the video


class VideoSource:
    """A driving video, decoded once into a spool, with a face box per frame.

    Made by :func:`scan_video`. ``index[i]`` is the source frame output frame
    ``i`` shows (cut, ping-pong or loop); ``boxes`` / ``found`` are per source
    frame.
    """

    kind = "video"
    still_face = None
    still_picture = False  #: the video moves by itself: no head motion is added

    def __init__(
        self,
        spool: FrameSpool,
        workdir: Path,
        boxes: np.ndarray,
        found: np.ndarray,
        detector: str,
        index: np.ndarray,
        *,
        label: bool,
        detections: int = 0,
    ):
        self.spool = spool
        self.workdir = workdir
        self.boxes = boxes  # (L, 4) int y1, y2, x1, x2 (padded, clamped)
        self.found = found  # (L,) bool
        self.detector = detector
        self.index = index  # (n,) source frame per output frame
        self.label = label
        self.detections = detections
        self.frames = len(spool)
        self.height, self.width = spool.shape[:2]
        self.present = found[index]
        self.face_frames = int(self.present.sum())
        first = int(np.flatnonzero(found)[0]) if found.any() else 0
        self.box = FaceBox(*(int(v) for v in boxes[first])) if found.any() else FaceBox(0, self.height, 0, self.width)
        self.first_face_frame = first
        self.timings: dict[str, float] = {}  #: seconds of the face stage's parts (see scan_video)
        self._cleanup = weakref.finalize(self, _remove, spool, workdir)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_cleanup"]  # only the original removes the spool
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cleanup = weakref.finalize(self, self.spool.close)

    def box_at(self, i: int) -> FaceBox | None:
        """Output frame ``i``'s face box (None: no face there)."""
        s = int(self.index[i])
        return FaceBox(*(int(v) for v in self.boxes[s])) if self.found[s] else None

    def frame_at(self, i: int) -> np.ndarray:
        """Output frame ``i``'s picture, before the mouth is pasted (RGB)."""
        return self.spool.read(int(self.index[i]))

    def face_at(self, i: int) -> np.ndarray | None:
        box = self.box_at(i)
        return None if box is None else face_crop(self.frame_at(i), box)

    def key_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """The first frame with a face and its 96x96 face crop."""
        image = self.spool.read(self.first_face_frame)
        return image, face_crop(image, self.box)

    def weights(self, speech: np.ndarray | None) -> np.ndarray:
        """How strongly each output frame gets a mouth: speech x face presence (faded at its edges)."""
        w = edge_fade(self.present)
        return w if speech is None else (w * np.asarray(speech, np.float32)).astype(np.float32)

    def compositor(self, parts) -> "_VideoFrames":
        from .enhance import make_enhancer

        request = getattr(parts, "request", None)  # (tests hand in bare parts)
        enhance, note = make_enhancer(request.options.enhance if request is not None else "off", still=False,
                                      device=getattr(parts, "device", None))
        if request is not None:
            parts.enhance_note = note
        return _VideoFrames(self, parts.weights, self.label, enhance)

    def label_avoid(self) -> FaceBox | None:
        """The union of the face boxes of the frames used: where the visible label may not go."""
        used = np.unique(self.index[self.present])
        if used.size == 0:
            return None
        b = self.boxes[used]
        return FaceBox(int(b[:, 0].min()), int(b[:, 1].max()), int(b[:, 2].min()), int(b[:, 3].max()))

    def close(self) -> None:
        self._cleanup()


def _remove(spool: FrameSpool, workdir: Path) -> None:
    spool.close()
    shutil.rmtree(workdir, ignore_errors=True)


class _VideoFrames:
    """The compositor of a video: each output frame read back, its mouth pasted, the label drawn."""

    def __init__(self, source: VideoSource, strength: np.ndarray | None, label: bool, enhance=None):
        self.source = source
        self.enhance = enhance
        n = len(source.index)
        self.strength = np.ones(n, np.float32) if strength is None else np.asarray(strength, np.float32)
        self.image = np.zeros((source.height, source.width, 3), np.uint8)
        self._avoid = source.label_avoid()
        self._label = label
        if label and np.array_equal(draw_label(self.image, avoid=self._avoid), self.image):
            self._label = False  # no room beside the face (draw_label said so once)
        self._t = 0

    def paste(self, pred: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        t = self._t
        self._t += 1
        src = self.source
        s = int(src.index[t])
        frame = src.spool.read(s, out=out)
        if self.strength[t] > 0 and src.found[s]:
            paste_mouth(frame, FaceBox(*(int(v) for v in src.boxes[s])), pred, float(self.strength[t]), self.enhance)
        if self._label:
            frame = draw_label(frame, avoid=self._avoid)
        return frame


def scan_video(
    info,
    opts,
    n_frames: int | None,
    detector=None,
    progress=None,
    memory_mb: float = MEMORY_SPOOL_MB,
) -> VideoSource:
    """Decode a probed video once: spool its frames, follow the face, plan the output frames.

    Args:
        info: :class:`~lipsync.media.video.VideoInfo` from ``probe_video``.
        opts: :class:`~lipsync.options.GenerateOptions` (fps, max_side, pads, box,
            face_index, video_loop, label, max_video_s, timeout_s).
        n_frames: frames in the output (the soundtrack's length); None: each source
            frame once (a live session, which repeats them itself).
        detector: a face detector (``detect(rgb)``); not needed when ``opts.box`` is given.
        progress: ``(stage, done, total)`` callback (stage "face").
        memory_mb: the frames stay in memory up to this many MB (0: always the JPEG spool
            on disk, as a live session, which keeps them for as long as it runs).

    The source's ``timings`` say where the time went (:func:`scan_or_still` adds ``load``,
    the face detector's first-use loading): ``decode`` (waiting for ffmpeg),
    ``spool`` (keeping the frames), ``detect`` (the face detector) and ``track``
    (following the face between detections, cut detection, smoothing).

    Raises:
        VideoError: the video cannot be decoded (see :class:`~lipsync.media.video.VideoDecoder`).
        NoFaceError: fewer than :data:`MIN_FACE_SHARE` of the frames used show a face
            (only for videos of more than one frame: a one-frame video is a photo).
    """
    from .face.track import FaceTracker
    from .media.video import VideoDecoder, working_size

    report = progress or (lambda *a: None)
    w, h = working_size(info, opts.max_side)
    workdir = Path(tempfile.mkdtemp(prefix="lipsync-video-"))
    spool = None
    try:
        spool = FrameSpool(workdir / "frames.jpgs", memory_bytes=int(memory_mb * 2**20))
        tracker = None
        if opts.box is None:  # the tracker scales frames down for the detector itself, only when it runs
            tracker = FaceTracker(
                detector, fps=opts.fps, face_index=opts.face_index, follow=True, detect_side=ANALYSIS_SIDE
            )
        expected = info.expected_frames(opts.fps) or 0
        spent = {"decode": 0.0, "spool": 0.0, "track": 0.0}
        clock = time.perf_counter
        with VideoDecoder(info, opts.fps, (w, h), max_seconds=opts.max_video_s, timeout=opts.timeout_s) as frames:
            it, i, t = iter(frames), 0, clock()
            for rgb in it:
                t1 = clock()
                spool.append(rgb)
                t2 = clock()
                if tracker is not None:
                    tracker.add(rgb)
                i += 1
                report("face", i, max(expected, i))
                t3 = clock()
                spent["decode"] += t1 - t
                spent["spool"] += t2 - t1
                spent["track"] += t3 - t2
                t = t3
        length = len(spool)
        boxes = np.zeros((length, 4), np.int32)
        found = np.zeros(length, bool)
        if tracker is None:
            y1, y2, x1, x2 = opts.box
            box = pad_box((x1, y1, x2, y2), (0, 0, 0, 0), (h, w))
            boxes[:] = box.as_tuple()
            found[:] = True
            name, detections = "given", 0
        else:
            t = clock()
            track = tracker.finish()
            spent["track"] += clock() - t
            spent["detect"] = tracker.detect_s
            spent["track"] -= tracker.detect_s
            for i in np.flatnonzero(track.found):
                try:
                    box = pad_box(np.round(track.boxes[i]).astype(int), opts.pads, (h, w))
                except ImageError:  # squeezed against the frame edge: treat as no face
                    continue
                boxes[i], found[i] = box.as_tuple(), True
            name, detections = detector.name, track.detections
        if n_frames is None:
            n_frames = length
        index = loop_indices(n_frames, length, opts.video_loop)
        source = VideoSource(spool, workdir, boxes, found, name, index, label=opts.label, detections=detections)
        source.timings = {k: round(v, 4) for k, v in spent.items()}
    except BaseException:
        if spool is not None:
            spool.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    log.info(
        "video %s: %d frames at %g fps, %dx%d, face in %d (%d detector calls), frames %.1f MB %s",
        info.path.name, length, opts.fps, w, h, int(found.sum()), source.detections, spool.nbytes / 1e6,
        "in memory" if spool.in_memory else "on disk",
    )
    if length > 1:
        try:
            _check_faces(source, n_frames)
        except BaseException:
            source.close()
            raise
    return source


def scan_or_still(info, opts, n_frames: int | None, detector=None, progress=None, memory_mb: float = MEMORY_SPOOL_MB):
    """(:func:`scan_video`'s source, None), or (None, the frame) for a video of one frame, which is
    then used as a photo (a clip and a live session both do so).

    ``detector``: a callable that returns the face detector, called only when ``opts.box`` is not given.
    """
    t = time.perf_counter()
    found_by = None if opts.box is not None else detector()  # loaded on first use
    load_s = time.perf_counter() - t
    source = scan_video(info, opts, n_frames, found_by, progress, memory_mb)
    if found_by is not None:
        source.timings = {"load": round(load_s, 4), **source.timings}
    if source.frames > 1:
        return source, None
    frame = source.spool.read(0)
    source.close()
    log.info("%s has a single frame: used as a photo", info.path.name)
    return None, frame


def _check_faces(source: VideoSource, n: int) -> None:
    k = source.face_frames
    if k == 0:
        raise NoFaceError(
            f"No face was found in any of the {n} video frames used. Use a clear, well-lit video where "
            "one face looks roughly towards the camera, is not covered and fills at least a tenth of the "
            "picture's width; or give the face box yourself (--box on the command line, box= in Python)."
        )
    if k < MIN_FACE_SHARE * n:
        raise NoFaceError(
            f"A face was found in only {k} of the {n} video frames used ({100 * k / n:.0f}%); at least "
            f"{100 * MIN_FACE_SHARE:.0f}% must show it. Use a video where the face stays in view, "
            "looking roughly towards the camera."
        )
