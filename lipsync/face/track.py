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

**Following** (``follow=True``, what a video uses): between detections the box
is followed frame by frame by template matching (normalised cross-correlation
of the face as last detected, on a small grey copy, searched near where it was),
which costs about a millisecond. The detector then runs only every
:data:`FOLLOW_DETECT_EVERY_S` (to correct the size and any drift), where the
match is lost or poor, and at a cut (a sudden change of the whole picture, after
which the face is chosen afresh by ``face_index``);
while no face is followed it runs every ``every`` frames as above. Between two
agreeing detections the followed centres are corrected linearly towards the
second detection and the size is interpolated. The detector is also given a
smaller frame where the followed face is large (:data:`DETECT_FACE_PX`).

Numpy and OpenCV; the detector is anything with ``detect(rgb) -> [(x1, y1, x2, y2, score)]``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["FaceTracker", "Track", "smooth_runs", "agree", "DETECT_EVERY_S", "CENTRE_SMOOTH_S", "SIZE_SMOOTH_S"]

DETECT_EVERY_S = 0.2  #: a detection at least this often
CENTRE_SMOOTH_S = 0.2  #: moving-average window of the box centre
SIZE_SMOOTH_S = 0.4  #: moving-average window of the box size (size jitter shows most)
REACQUIRE_S = 1.0  #: after this long without the face, any face (by face_index) may be taken
FOLLOW_DETECT_EVERY_S = 1.0  #: following a face: a detection at least this often
FOLLOW_MIN_SCORE = 0.6  #: a template match below this (normalised correlation) counts as lost
TEMPLATE_PX = 40  #: the face is matched at about this width
CUT_DIFF = 24.0  #: mean grey-level change of a 32x24 thumbnail between frames that counts as a cut
DETECT_FACE_PX = 64  #: a followed face is detected on a frame scaled so that it is about this tall


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
    """Smooth (x1, y1, x2, y2) boxes over time within each run of found frames (a jump, such as
    a cut, ends a run)."""
    out = boxes.copy()
    idx = np.flatnonzero(found)
    if idx.size == 0:
        return out
    jumps = [not agree(boxes[a], boxes[b]) for a, b in zip(idx[:-1], idx[1:])]  # a cut, or another face
    breaks = np.flatnonzero((np.diff(idx) > 1) | np.array(jumps, bool))
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
        every: detect every this many frames (default: :data:`DETECT_EVERY_S` seconds); with
            ``follow``, this applies while no face is followed.
        follow: follow the face between detections by template matching, and detect
            every :data:`FOLLOW_DETECT_EVERY_S`, at cuts and where the match is lost.
        detect_side: the detector gets frames scaled down to at most this long side
            (None: as given); a followed face, further down to about :data:`DETECT_FACE_PX`.
    """

    def __init__(
        self,
        detector,
        *,
        fps: float,
        face_index: int = 0,
        scale: float = 1.0,
        every: int | None = None,
        follow: bool = False,
        detect_side: int | None = None,
    ):
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
        self.detect_s = 0.0  #: seconds in the detector itself
        self.follow = bool(follow)
        self.detect_side = detect_side
        self.follow_every = max(self.every, int(round(FOLLOW_DETECT_EVERY_S * self.fps)))
        self._template: _Template | None = None  # the face as last detected (follow)
        self._tracked: dict[int, np.ndarray] = {}  # frame -> followed centre (x, y), given-frame pixels
        self._thumb: np.ndarray | None = None  # the previous frame's thumbnail (cut detection)

    # -- detection -------------------------------------------------------------------
    def _faces(self, frame: np.ndarray) -> list[np.ndarray]:
        self.detections += 1
        h, w = frame.shape[:2]
        k = min(1.0, self.detect_side / max(h, w)) if self.detect_side else 1.0
        if self.follow and self._near is not None:  # only the followed face is looked for: no need for detail
            size = (self._near[1][3] - self._near[1][1]) / self.scale  # its height in this frame's pixels
            k = min(k, DETECT_FACE_PX / max(size, 1.0))
        if k < 0.9 and min(h, w) * k >= 64:
            import cv2

            frame = cv2.resize(frame, (max(2, round(w * k)), max(2, round(h * k))), interpolation=cv2.INTER_AREA)
            k = frame.shape[1] / w
        else:
            k = 1.0
        t = time.perf_counter()
        found = self.detector.detect(frame)
        self.detect_s += time.perf_counter() - t
        faces = [np.asarray(f[:4], np.float64) * (self.scale / k) for f in found]
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
        if self.follow:
            self._add_following(i, frame)
        elif i % self.every == 0:
            self._key(i, frame)
        else:
            self._pending.append((i, frame))

    def _add_following(self, i: int, frame: np.ndarray) -> None:
        """Follow mode: match the template; detect on schedule, at a cut, or where the match fails."""
        import cv2

        step = max(1, min(frame.shape[:2]) // 96)  # a sparse sample is enough for a thumbnail
        thumb = cv2.resize(frame[::step, ::step], (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32).mean(axis=2)
        cut = self._thumb is not None and float(np.abs(thumb - self._thumb).mean()) > CUT_DIFF
        self._thumb = thumb
        last = self._last_key[0] if self._last_key is not None else None
        if self._template is not None and not cut:
            centre = self._template.find(frame, self._centre(i - 1))
            if centre is not None:
                c = self._tracked[i] = centre * self.scale
                half = self._template.size * self.scale / 2
                self._near = (i, np.array([c[0] - half[0], c[1] - half[1], c[0] + half[0], c[1] + half[1]]))
        if last is None or cut:
            due = True
        elif self._template is not None:
            due = i not in self._tracked or i - last >= self.follow_every
        else:
            due = i - last >= self.every
        if cut:  # a new shot: where the face was says nothing about where it is
            self._near = None
        if due:
            self._key(i, frame)
        else:
            self._pending.append((i, frame if self._template is None else None))

    def _centre(self, j: int) -> np.ndarray:
        """The followed centre at frame ``j`` (given-frame pixels): tracked, else the last key's."""
        c = self._tracked.get(j)
        if c is None:
            b = self._last_key[1]
            c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
        return c / self.scale

    def _key(self, i: int, frame: np.ndarray) -> None:
        faces = self._faces(frame)
        box = self._pick(faces, i)
        prev = self._last_key
        between = list(self._pending)
        self._pending.clear()
        if prev is not None and between:
            a = prev[1]
            followed = a is not None and all(j in self._tracked for j, _ in between)
            if followed:  # followed frame by frame from the last key
                self._place_followed(prev[0], a, i, box, [j for j, _ in between])
            elif a is not None and box is not None and agree(a, box):
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
        if self.follow:
            template = None if box is None else _Template(frame, box / self.scale)
            self._template = template if template is not None and template.ok else None
            self._tracked = {}

    def _place_followed(self, j0: int, a: np.ndarray, i: int, box: np.ndarray | None, between: list[int]) -> None:
        """Boxes of the followed frames between key ``j0`` (box ``a``) and key ``i`` (``box``):
        the followed centres, corrected linearly towards the detection at ``i`` where it agrees;
        the size interpolated between the two (or ``a``'s)."""
        size_a = np.array([a[2] - a[0], a[3] - a[1]])
        size_b, residual = size_a, np.zeros(2)
        if box is not None and agree(a, box):
            size_b = np.array([box[2] - box[0], box[3] - box[1]])
            if i in self._tracked:
                residual = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - self._tracked[i]
        for j in between:
            t = (j - j0) / (i - j0)
            c = self._tracked[j] + t * residual
            half = ((1 - t) * size_a + t * size_b) / 2
            self._found(j, np.array([c[0] - half[0], c[1] - half[1], c[0] + half[0], c[1] + half[1]]))

    def finish(self) -> Track:
        """The track of every frame added: bridged, smoothed."""
        if self._pending:  # the last frame is a key too
            j, f = self._pending.pop()
            if f is None:  # follow mode keeps no frames: the last followed position stands
                self._key_followed_end(j)
            else:
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

    def _key_followed_end(self, j: int) -> None:
        """The clip ends while following: the frames since the last key keep their followed boxes."""
        between = [k for k, _ in self._pending] + [j]
        self._pending.clear()
        j0, a = self._last_key
        self._place_followed(j0, a, j, None, between)

    def _bridge(self, boxes: np.ndarray, found: np.ndarray) -> None:
        """Fill short gaps between agreeing boxes (a missed detection) by interpolation."""
        idx = np.flatnonzero(found)
        for a, b in zip(idx[:-1], idx[1:]):
            if 1 < b - a <= self.every + 1 and agree(boxes[a], boxes[b]):
                t = ((np.arange(a + 1, b) - a) / (b - a))[:, None]
                boxes[a + 1 : b] = (1 - t) * boxes[a] + t * boxes[b]
                found[a + 1 : b] = True


class _Template:
    """The face as detected, matched in later frames by normalised cross-correlation.

    Matching runs on grey copies scaled so the face is about :data:`TEMPLATE_PX` wide,
    within a window around the last position (the face may move half its size
    between frames).
    """

    def __init__(self, frame: np.ndarray, box: np.ndarray):
        h, w = frame.shape[:2]
        self.k = min(1.0, TEMPLATE_PX / max(1.0, box[2] - box[0]))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        self.ok = x2 - x1 >= 8 and y2 - y1 >= 8
        if not self.ok:
            return
        self.size = np.array([x2 - x1, y2 - y1], np.float64)
        self.image = self._grey(frame[y1:y2, x1:x2])

    def _grey(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        size = (max(4, round(g.shape[1] * self.k)), max(4, round(g.shape[0] * self.k)))
        return cv2.resize(g, size, interpolation=cv2.INTER_AREA)

    def find(self, frame: np.ndarray, centre: np.ndarray) -> np.ndarray | None:
        """The face's centre in ``frame`` (its pixels) near ``centre``, or None where the match is poor."""
        import cv2

        if not self.ok:
            return None
        h, w = frame.shape[:2]
        reach = 0.5 * self.size
        x1 = int(max(0, centre[0] - self.size[0] / 2 - reach[0]))
        y1 = int(max(0, centre[1] - self.size[1] / 2 - reach[1]))
        x2 = int(min(w, centre[0] + self.size[0] / 2 + reach[0]))
        y2 = int(min(h, centre[1] + self.size[1] / 2 + reach[1]))
        window = self._grey(frame[y1:y2, x1:x2])
        th, tw = self.image.shape
        if window.shape[0] < th or window.shape[1] < tw:
            return None
        scores = cv2.matchTemplate(window, self.image, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        if not np.isfinite(best) or best < FOLLOW_MIN_SCORE:
            return None
        dx, dy = _subpixel(scores, bx, by)
        sx, sy = (x2 - x1) / window.shape[1], (y2 - y1) / window.shape[0]
        return np.array([x1 + (bx + dx + tw / 2) * sx, y1 + (by + dy + th / 2) * sy])


def _subpixel(scores: np.ndarray, x: int, y: int) -> tuple[float, float]:
    """Offset of the peak from (x, y) by a parabola through its neighbours (each within +-0.5)."""

    def vertex(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.0 if d >= 0 else float(np.clip(0.5 * (a - c) / d, -0.5, 0.5))

    h, w = scores.shape
    dx = vertex(scores[y, x - 1], scores[y, x], scores[y, x + 1]) if 0 < x < w - 1 else 0.0
    dy = vertex(scores[y - 1, x], scores[y, x], scores[y + 1, x]) if 0 < y < h - 1 else 0.0
    return dx, dy
