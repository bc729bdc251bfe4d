"""Head motion for a still portrait: small, smooth, speech-driven movement of the head.

A frozen head with a moving mouth is what gives a photo away. This module
moves the head region a little, the way a speaker's head moves, and leaves the
rest of the picture still. Pure numpy/cv2, deterministic (a fixed seed).

**The pose** of frame ``i`` is a roll ``angle`` (degrees, about a pivot just
under the chin), and a ``shift`` (dx, dy) in pixels. It is built from:

* *sway*: for each of angle, dx and dy, a sum of three slow sinusoids (0.1 to
  0.55 Hz) with seeded random phases and weights summing to 1, so it never
  exceeds 1 and has no jitter (nothing above 0.55 Hz);
* *energy*: the sway is scaled by ``IDLE + (1 - IDLE) * speaking``, where
  ``speaking`` is the speech's loudness per frame
  (:func:`lipsync.speech.activity.activity_envelope`) held over a syllable and
  followed with a quick rise (0.2 s) and a slow fall (0.5 s): the head moves
  while the person speaks and settles back to the photo's pose in pauses, with
  a faint idle sway left;
* *nods*: each marked rise of loudness (a stressed syllable; at most one every
  0.35 s) dips the head down and back over 0.5 s along a raised cosine,
  in proportion to the rise.

At ``amount`` 1 the head turns at most :data:`MAX_ANGLE_DEG` degrees and
shifts at most :data:`MAX_SHIFT` of the face box's height either way (about
7 px for a 150 px face); both scale linearly with ``amount`` (the default 0.5
gives up to 2 degrees and about 4 px).

**Rendering** (:class:`HeadWarp`): a soft mask covers the head, hair and chin
(an ellipse around the face box, weight 1 inside, a smooth fall to 0 that
ends above the shoulders and well inside the frame edges). Each output pixel
``p`` samples the frame at ``p + mask(p) * (A^-1 p - p)``, where ``A`` is the
frame's rigid pose: inside the mask the head moves rigidly (the pasted mouth
with it, since the paste happens first), outside nothing moves (those pixels
are copied bit for bit), and in between the displacement fades smoothly,
which stretches the background by a fraction of a pixel per pixel instead of
cross-fading two images (no ghosting).

Blinks are made by :mod:`lipsync.blink` (they avoid the middle of a nod, see
:func:`nod_curve`). Breathing is not synthesised: it shows in the shoulders and
chest, which stay still here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .face import FaceBox
from .speech.activity import activity_envelope

__all__ = ["MotionTrack", "head_motion", "nod_curve", "HeadWarp", "head_mask", "MAX_ANGLE_DEG", "MAX_SHIFT", "SEED"]

MAX_ANGLE_DEG = 4.0  #: largest roll at amount 1, degrees
MAX_SHIFT = 0.05  #: largest shift at amount 1 (each of dx, dy), as a share of the face box height
NOD_SHARE = 0.4  #: share of the vertical range that nods may use (the sway gets the rest)
IDLE = 0.08  #: sway left in long pauses, relative to speaking
ATTACK_S = 0.2  #: time constant of the rise of the energy when speech starts
RELEASE_S = 0.35  #: time constant of the fall of the energy in a pause
HOLD_S = 0.25  #: loudness is held over about a syllable before the rise/fall
EASE_S = 0.08  #: the energy curve is smoothed with a Gaussian of this width (no sudden starts)
NOD_S = 0.5  #: length of one nod (down and back)
NOD_GAP_S = 0.35  #: shortest time between two nods
NOD_RISE = 0.3  #: rise of the loudness envelope (0..1) within 0.16 s that makes a nod
SEED = 20240611
_FREQS = {"angle": (0.13, 0.29, 0.47), "dx": (0.11, 0.23, 0.41), "dy": (0.17, 0.31, 0.53)}


@dataclass(frozen=True)
class MotionTrack:
    """The head pose of every frame."""

    angle: np.ndarray  #: (n,) float32 roll in degrees
    dx: np.ndarray  #: (n,) float32 pixels, + right
    dy: np.ndarray  #: (n,) float32 pixels, + down

    def __len__(self) -> int:
        return len(self.angle)

    def pose(self, i: int) -> tuple[float, float, float]:
        return float(self.angle[i]), float(self.dx[i]), float(self.dy[i])

    @property
    def still(self) -> bool:
        return not (np.any(self.angle) or np.any(self.dx) or np.any(self.dy))


def _sliding_max(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or len(x) == 0:
        return x.copy()
    half = width // 2
    padded = np.pad(x, (half, width - 1 - half), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, width).max(axis=1)


def _follow(x: np.ndarray, fps: float, attack_s: float, release_s: float) -> np.ndarray:
    """One-pole follower: rises with ``attack_s``, falls with ``release_s`` (time constants)."""
    up = 1.0 - math.exp(-1.0 / (attack_s * fps))
    down = 1.0 - math.exp(-1.0 / (release_s * fps))
    out = np.empty_like(x)
    y = 0.0
    for i, v in enumerate(x):
        y += (up if v > y else down) * (v - y)
        out[i] = y
    return out


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing (edges held): takes the corners off the follower's curve."""
    if sigma <= 0 or len(x) < 2:
        return x
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return np.convolve(np.pad(x, r, mode="edge"), k / k.sum(), mode="valid")


def _sway(t: np.ndarray, freqs: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Sum of slow sinusoids with random phases and weights summing to 1: |sway| <= 1."""
    phases = rng.uniform(0.0, 2.0 * np.pi, len(freqs))
    weights = rng.uniform(0.6, 1.0, len(freqs))
    weights /= weights.sum()
    return sum(w * np.sin(2.0 * np.pi * f * t + p) for w, f, p in zip(weights, freqs, phases))


def _nods(loud: np.ndarray, fps: float) -> np.ndarray:
    """Nod curve in [0, 1): a raised-cosine dip after each marked rise of loudness."""
    n = len(loud)
    out = np.zeros(n)
    if n < 3:
        return out
    env = np.convolve(np.pad(loud, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    k = max(1, round(0.16 * fps))
    # rise = how much louder than the quietest of the last k frames
    low = np.lib.stride_tricks.sliding_window_view(np.pad(env, (k, 0), mode="edge"), k + 1).min(axis=1)
    rise = env - low
    peak = (rise > NOD_RISE) & (rise >= np.r_[rise[1:], -1.0]) & (rise > np.r_[-1.0, rise[:-1]])
    gap = NOD_GAP_S * fps
    taken: list[int] = []
    for i in sorted(np.flatnonzero(peak), key=lambda j: -rise[j]):
        if all(abs(i - j) >= gap for j in taken):
            taken.append(int(i))
    length = max(2, round(NOD_S * fps))
    u = np.arange(length + 1) / length
    bump = np.sin(np.pi * u) ** 2
    for i in taken:
        strength = min(1.0, rise[i] / (2 * NOD_RISE))
        end = min(n, i + length + 1)
        out[i:end] += strength * bump[: end - i]
    return np.tanh(out)


def nod_curve(samples: np.ndarray, sample_rate: int, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames,) float in [0, 1): the nods' depth per frame (before ``amount``), as :func:`head_motion` uses it.

    For planning around the nods (blinks avoid their middle).
    """
    if n_frames == 0:
        return np.zeros(0)
    return _nods(activity_envelope(samples, sample_rate, n_frames, fps).astype(np.float64), fps)


def head_motion(
    samples: np.ndarray,
    sample_rate: int,
    n_frames: int,
    fps: float,
    face_height: float,
    amount: float,
    *,
    seed: int = SEED,
) -> MotionTrack:
    """The head pose of each of ``n_frames`` frames for this speech.

    Args:
        samples, sample_rate: the soundtrack (mono float).
        n_frames, fps: the video's frames.
        face_height: the face box height in pixels (shifts scale with it).
        amount: 0 (still) to 1 (the most motion).
        seed: the sway's random phases; the same inputs give the same track.

    Returns:
        :class:`MotionTrack`; all zeros when ``amount`` is 0.
    """
    zeros = np.zeros(n_frames, np.float32)
    if amount <= 0 or n_frames == 0:
        return MotionTrack(zeros, zeros.copy(), zeros.copy())
    amount = min(float(amount), 1.0)
    t = np.arange(n_frames) / fps
    loud = activity_envelope(samples, sample_rate, n_frames, fps).astype(np.float64)
    held = _sliding_max(loud, max(1, round(HOLD_S * fps)))
    energy = IDLE + (1.0 - IDLE) * _gaussian(_follow(held, fps, ATTACK_S, RELEASE_S), EASE_S * fps)
    rng = np.random.default_rng(seed)
    shift = MAX_SHIFT * float(face_height) * amount
    angle = MAX_ANGLE_DEG * amount * energy * _sway(t, _FREQS["angle"], rng)
    dx = shift * energy * _sway(t, _FREQS["dx"], rng)
    dy = shift * ((1.0 - NOD_SHARE) * energy * _sway(t, _FREQS["dy"], rng) + NOD_SHARE * _nods(loud, fps))
    return MotionTrack(angle.astype(np.float32), dx.astype(np.float32), dy.astype(np.float32))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


#: the head ellipse, in face-box units: centre above the box centre (hair), wider than the box (ears, hair)
_CENTRE_Y = 0.3  #: ellipse centre below the box top, in box heights
_RX, _RY_UP, _RY_DOWN = 0.8, 0.95, 0.7  #: semi-axes in box widths / heights (down: to the chin)
_R_OUT = 1.4  #: the weight falls from 1 (inside the ellipse) to 0 at this radius
_EDGE_ZERO, _EDGE_FULL = 0.03, 0.10  #: no motion this close to the frame edges (share of the short side), full beyond


def head_mask(shape: tuple[int, ...], box: FaceBox) -> np.ndarray:
    """(H, W) float32 weight in [0, 1]: 1 over the head, 0 over shoulders, background and edges."""
    h, w = shape[:2]
    cx = (box.x1 + box.x2) / 2.0
    cy = box.y1 + _CENTRE_Y * box.height
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    ry = np.where(ys < cy, _RY_UP * box.height, _RY_DOWN * box.height)
    r = np.sqrt(((xs - cx) / (_RX * box.width)) ** 2 + ((ys - cy) / ry) ** 2)
    mask = _smoothstep((_R_OUT - r) / (_R_OUT - 1.0))
    side = min(h, w)
    edge = np.minimum(np.minimum(xs, w - xs), np.minimum(ys, h - ys))
    mask = mask * _smoothstep((edge - _EDGE_ZERO * side) / ((_EDGE_FULL - _EDGE_ZERO) * side))
    return mask.astype(np.float32)


class HeadWarp:
    """Moves the head region of frames by a pose, leaving everything else untouched.

    Args:
        shape: the frames' (H, W, ...) shape.
        box: the face box.
        keep: optional (H, W) bool: pixels that must not move (e.g. a visible label);
            the motion fades out a few pixels around them.
    """

    def __init__(self, shape: tuple[int, ...], box: FaceBox, keep: np.ndarray | None = None):
        import cv2

        mask = head_mask(shape, box)
        if keep is not None and keep.any():
            grow = cv2.dilate(keep.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(np.float32)
            mask *= 1.0 - np.clip(cv2.GaussianBlur(grow, (0, 0), 3.0) * 2.0, 0.0, 1.0)
            mask[keep] = 0.0
        ys, xs = np.nonzero(mask > 0)
        if ys.size == 0:
            self.roi = None
            return
        self.roi = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
        y0, y1, x0, x1 = self.roi
        self.mask = mask[y0:y1, x0:x1]
        gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        self._x, self._y = gx, gy
        self.pivot = ((box.x1 + box.x2) / 2.0, box.y2 + 0.1 * box.height)

    def maps(self, angle_deg: float, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
        """Where each pixel of the region samples the frame (absolute float32 maps for cv2.remap)."""
        a = math.radians(angle_deg)
        c, s = math.cos(a), math.sin(a)
        px, py = self.pivot
        u = self._x - (px + dx)
        v = self._y - (py + dy)
        sx = c * u + s * v + px  # the rigid pose's inverse: rotate back by -angle about the pivot
        sy = -s * u + c * v + py
        m = self.mask
        return self._x + m * (sx - self._x), self._y + m * (sy - self._y)

    def apply(self, frame: np.ndarray, angle_deg: float, dx: float, dy: float) -> np.ndarray:
        """Move the head in ``frame`` (in place) by the pose; returns ``frame``."""
        import cv2

        if self.roi is None or (angle_deg == 0 and dx == 0 and dy == 0):
            return frame
        mx, my = self.maps(angle_deg, dx, dy)
        moved = cv2.remap(frame, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        y0, y1, x0, x1 = self.roi
        frame[y0:y1, x0:x1] = moved
        return frame
