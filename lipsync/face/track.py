"""Following one face through the frames of a video.

The detector runs on every ``every``-th frame (a *key* frame) and on the last
one. Between two keys whose boxes agree (the same face, moved less than half
its size), the box is interpolated. When they disagree (the face was lost,
came back, or jumped) the frames between are detected one by one from a small
buffer of the frames since the last key, so a loss is located to the frame.
Detections are matched to the face being followed (nearest agreeing box), so
the track does not hop to another person; with no face followed for a while,
the ``face_index``-th largest face is taken, as for a photo.

At the end, short gaps (at most ``every`` frames, e.g. one missed detection)
between agreeing boxes are bridged, and every run of frames with a face is
smoothed: a centred moving average of the box centre (0.2 s) and size (0.4 s),
whose window shrinks symmetrically at the run's ends, so a steady pan or zoom
is followed without lag or bias while detector jitter is averaged out.

Pure numpy; the detector is anything with ``detect(rgb) -> [(x1, y1, x2, y2, score)]``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["FaceTracker", "Track", "smooth_runs", "agree", "DETECT_EVERY_S", "CENTRE_SMOOTH_S", "SIZE_SMOOTH_S"]

DETECT_EVERY_S = 0.2  #: a detection at least this often
CENTRE_SMOOTH_S = 0.2  #: moving-average window of the box centre
SIZE_SMOOTH_S = 0.4  #: moving-average window of the box size (size jitter shows most)
REACQUIRE_S = 1.0  #: after this long without the face, any face (by face_index) may be taken


@dataclass
class Track:
    """Face boxes of every frame of a video."""

    boxes: np.ndarray  #: (L, 4) float64 x1, y1, x2, y2 in frame pixels (NaN where no face)
    found: np.ndarray  #: (L,) bool: the frame has a face
    detections: int  #: detector calls made

    @property
    def face_frames(self) -> int:
        return int(self.found.sum())


def agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Two (x1, y1, x2, y2) boxes plausibly show the same face a moment apart."""
    sa = max(a[2] - a[0], a[3] - a[1])
    sb = max(b[2] - b[0], b[3] - b[1])
    if sa <= 0 or sb <= 0 or not 2 / 3 <= sa / sb <= 1.5:
        return False
    ca = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    cb = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    return float(np.hypot(*(ca - cb))) <= 0.5 * max(sa, sb)


def _odd(n: float) -> int:
    n = max(1, int(round(n)))
    return n if n % 2 else n + 1


def _centred_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Moving average of a 1-D run; near the ends the window shrinks to stay centred."""
    n = len(x)
    half = np.minimum(window // 2, np.minimum(np.arange(n), n - 1 - np.arange(n)))
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(n)
    return (c[i + half + 1] - c[i - half]) / (2 * half + 1)


def smooth_runs(boxes: np.ndarray, found: np.ndarray, centre_window: int, size_window: int) -> np.ndarray:
    """Smooth (x1, y1, x2, y2) boxes over time within each run of found frames."""
    out = boxes.copy()
    idx = np.flatnonzero(found)
    if idx.size == 0:
        return out
    breaks = np.flatnonzero(np.diff(idx) > 1)
    for run in np.split(idx, breaks + 1):
        b = boxes[run]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        cx, cy = _centred_mean(cx, centre_window), _centred_mean(cy, centre_window)
        w, h = _centred_mean(w, size_window), _centred_mean(h, size_window)
        out[run] = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return out


class FaceTracker:
    """Feed the frames of a video in order with :meth:`add`; :meth:`finish` gives the :class:`Track`.

    Args:
        detector: has ``detect(rgb) -> [(x1, y1, x2, y2, score), ...]``.
        fps: the frames' rate (sets the detection interval and the smoothing windows).
        face_index: which face to take when none is being followed (0 = the largest).
        scale: frame pixels per pixel of the frames given to :meth:`add` (frames may be
            given downscaled to save detection time; boxes come out in full-size pixels).
        every: detect every this many frames (default: :data:`DETECT_EVERY_S` seconds).
    """

    def __init__(self, detector, *, fps: float, face_index: int = 0, scale: float = 1.0, every: int | None = None):
        self.detector = detector
        self.fps = float(fps)
        self.face_index = int(face_index)
        self.scale = float(scale)
        self.every = int(every or max(1, round(DETECT_EVERY_S * self.fps)))
        self._boxes: list[np.ndarray | None] = []
        self._pending: deque = deque()  # (index, frame) since the last key
        self._last_key: tuple[int, np.ndarray | None] | None = None
        self._near: tuple[int, np.ndarray] | None = None  # (index, box) of the face followed
        self.detections = 0

    # -- detection -------------------------------------------------------------------
    def _faces(self, frame: np.ndarray) -> list[np.ndarray]:
        self.detections += 1
        faces = [np.asarray(f[:4], np.float64) * self.scale for f in self.detector.detect(frame)]
        return sorted(faces, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def _pick(self, faces: list[np.ndarray], i: int) -> np.ndarray | None:
        """The followed face among ``faces`` at frame ``i`` (None if it is not there)."""
        near = self._near
        if near is not None and i - near[0] <= REACQUIRE_S * self.fps:
            ok = [f for f in faces if agree(near[1], f)]
            if not ok:
                return None
            c = np.array([(near[1][0] + near[1][2]) / 2, (near[1][1] + near[1][3]) / 2])
            return min(ok, key=lambda f: float(np.hypot((f[0] + f[2]) / 2 - c[0], (f[1] + f[3]) / 2 - c[1])))
        return faces[self.face_index] if self.face_index < len(faces) else None

    def _found(self, i: int, box: np.ndarray | None) -> None:
        self._boxes[i] = box
        if box is not None:
            self._near = (i, box)

    # -- frames ----------------------------------------------------------------------
    def add(self, frame: np.ndarray) -> None:
        """The next frame (RGB, possibly downscaled by ``1 / scale``)."""
        i = len(self._boxes)
        self._boxes.append(None)
        if i % self.every == 0:
            self._key(i, frame)
        else:
            self._pending.append((i, frame))

    def _key(self, i: int, frame: np.ndarray) -> None:
        faces = self._faces(frame)
        box = self._pick(faces, i)
        prev = self._last_key
        between = list(self._pending)
        self._pending.clear()
        if prev is not None and between:
            a = prev[1]
            if a is not None and box is not None and agree(a, box):
                j0 = prev[0]
                for j, _ in between:  # the same face at both ends: interpolate
                    t = (j - j0) / (i - j0)
                    self._boxes[j] = (1 - t) * a + t * box
            elif a is not None or box is not None:  # lost, found or jumped: find where, frame by frame
                for j, f in between:
                    self._found(j, self._pick(self._faces(f), j))
                box = self._pick(faces, i)
        self._found(i, box)
        self._last_key = (i, box)

    def finish(self) -> Track:
        """The track of every frame added: bridged, smoothed."""
        if self._pending:  # the last frame is a key too
            j, f = self._pending.pop()
            self._key(j, f)
        n = len(self._boxes)
        boxes = np.full((n, 4), np.nan)
        found = np.zeros(n, bool)
        for i, b in enumerate(self._boxes):
            if b is not None:
                boxes[i], found[i] = b, True
        self._bridge(boxes, found)
        boxes = smooth_runs(boxes, found, _odd(CENTRE_SMOOTH_S * self.fps), _odd(SIZE_SMOOTH_S * self.fps))
        return Track(boxes, found, self.detections)

    def _bridge(self, boxes: np.ndarray, found: np.ndarray) -> None:
        """Fill short gaps between agreeing boxes (a missed detection) by interpolation."""
        idx = np.flatnonzero(found)
        for a, b in zip(idx[:-1], idx[1:]):
            if 1 < b - a <= self.every + 1 and agree(boxes[a], boxes[b]):
                t = ((np.arange(a + 1, b) - a) / (b - a))[:, None]
                boxes[a + 1 : b] = (1 - t) * boxes[a] + t * boxes[b]
                found[a + 1 : b] = True
