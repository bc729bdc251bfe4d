"""Blinks for a still portrait: the upper eyelids close over the eyes now and then.

A photo whose head moves while the eyes stay open looks dead. This module
plans natural blinks and draws them by moving each upper eyelid down over its
eye. Pure numpy/cv2 per frame; the eyelids come once per photo from the
offline face-mesh model (:mod:`lipsync.face.landmarks`).

**When** (:func:`blink_schedule`): the first blink 1-3 s in, then gaps of 2 s
plus a gamma-distributed extra (shape 2, mean 1.8 s) capped so that every gap
lies between :data:`MIN_GAP_S` and :data:`MAX_GAP_S`: about 16 blinks a
minute at irregular intervals. A blink whose middle would fall in a strong
nod (:func:`lipsync.motion.nod_curve` over :data:`NOD_LIMIT`) waits until the
nod has passed. Seeded: the same clip gets the same blinks.

**How** (:data:`CLOSE_S`, :data:`HOLD_S`, :data:`OPEN_S`, about 0.25 s in all):
the lid closes quickly along a smoothstep, stays shut a moment and opens more
slowly. The frame nearest the middle of each blink is fully shut.

**Drawing** (:class:`Blinks`): per column of each eye, between the corners,
the upper lid's edge ``U`` moves to ``U + c (L - U)`` (``L`` the lower lid, ``c``
the closure). The band of lid skin above the eye (from ``B = U - 0.6 (L - U) - 1``
down to ``U``: as deep as the eye is open there, so nothing moves at the
corners and glasses' rims above the lid stay put) is stretched over the band from ``B`` to the new edge; below the new
edge the eye shows as it was (the lid covers it, nothing is squeezed). So
every drawn pixel is the photo's own lid skin, moved; nothing outside
``B``..``L`` between the corners changes.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

log = logging.getLogger("lipsync")

__all__ = ["CLOSE_S", "HOLD_S", "OPEN_S", "SEED", "Blinks", "blink_profile", "blink_schedule", "plan_blinks"]

CLOSE_S = 0.09  #: the lid closes in this long
HOLD_S = 0.04  #: and stays shut this long
OPEN_S = 0.13  #: and opens in this long (about 0.25 s in all)
MIN_GAP_S, MAX_GAP_S = 2.0, 6.0  #: time between the starts of two blinks
FIRST_S = (1.0, 3.0)  #: the first blink starts in this range
NOD_LIMIT = 0.35  #: a blink's middle never falls where the nod curve is above this
SKIN = 0.6  #: the lid skin band above the eye, as a share of the eye's opening in that column
SEED = 20240611


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def blink_profile(t: np.ndarray) -> np.ndarray:
    """Closure in [0, 1] at ``t`` seconds after a blink's start (0 outside the blink)."""
    t = np.asarray(t, np.float64)
    close = _smooth(t / CLOSE_S)
    opening = 1.0 - _smooth((t - CLOSE_S - HOLD_S) / OPEN_S)
    return np.where((t < 0) | (t > CLOSE_S + HOLD_S + OPEN_S), 0.0, np.minimum(close, opening))


def blink_schedule(
    n_frames: int, fps: float, nods: np.ndarray | None = None, *, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """When to blink in a clip of ``n_frames`` at ``fps``.

    Args:
        nods: optional (n_frames,) nod depth per frame (:func:`lipsync.motion.nod_curve`).

    Returns:
        (closure per frame (n_frames,) float32 in [0, 1], the frame of each blink's middle (k,) int).
    """
    rng = np.random.default_rng(seed)
    closure = np.zeros(n_frames, np.float32)
    mids: list[int] = []
    duration = CLOSE_S + HOLD_S + OPEN_S
    peak = CLOSE_S + HOLD_S / 2
    start = rng.uniform(*FIRST_S)
    last = -math.inf
    span = n_frames / fps
    while start + duration <= span:
        mid = round((start + peak) * fps)  # the shut moment falls on a frame
        while nods is not None and mid < n_frames and nods[mid] > NOD_LIMIT:
            mid += 1  # wait for the nod to pass
        start = mid / fps - peak
        if math.isfinite(last) and start - last > MAX_GAP_S:  # a long nod pushed it too late: blink just before the nod instead
            mid = round((last + MAX_GAP_S + peak) * fps)
            start = mid / fps - peak
        if start + duration > span:
            break
        t = np.arange(n_frames) / fps - start
        closure = np.maximum(closure, blink_profile(t).astype(np.float32))
        mids.append(mid)
        last = start
        extra = min(rng.gamma(2.0, 0.9), MAX_GAP_S - MIN_GAP_S - 0.5)  # room for a nod's delay
        start = last + MIN_GAP_S + extra
    return closure, np.asarray(mids, int)


class _EyeWarp:
    """The remap of one eye's region for a closure ``c``."""

    def __init__(self, upper: np.ndarray, lower: np.ndarray, shape: tuple[int, ...]):
        h, w = shape[:2]
        up = upper[np.argsort(upper[:, 0])]
        lo = lower[np.argsort(lower[:, 0])]
        xa, xb = float(min(up[0, 0], lo[0, 0])), float(max(up[-1, 0], lo[-1, 0]))
        x0, x1 = max(0, int(math.floor(xa))), min(w, int(math.ceil(xb)) + 1)
        xs = np.arange(x0, x1, dtype=np.float32) + 0.0
        u = np.interp(xs, up[:, 0], up[:, 1]).astype(np.float32)
        low = np.interp(xs, lo[:, 0], lo[:, 1]).astype(np.float32)
        low = np.maximum(low, u)
        gap = low - u
        top = u - (SKIN * gap + 1.0)  # the skin band is as deep as the eye is open there (none at the corners)
        y0, y1 = max(0, int(math.floor(top.min())) - 1), min(h, int(math.ceil(low.max())) + 2)
        self.roi = (y0, y1, x0, x1)
        self.u, self.gap, self.top = u[None, :], gap[None, :], top[None, :]
        gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        self.gx, self.gy = gx, gy
        self.valid = x1 > x0 and y1 > y0 and float(gap.max()) > 0.5

    def maps(self, c: float) -> tuple[np.ndarray, np.ndarray]:
        edge = self.u + c * self.gap  # the lid's new edge
        y = self.gy
        band = (y >= self.top) & (y < edge)
        scale = (self.u - self.top) / np.maximum(edge - self.top, 1e-3)
        src = np.where(band, self.top + (y - self.top) * scale, y)
        return self.gx, src.astype(np.float32)


class Blinks:
    """Eyelids per frame: ``apply(frame, t)`` closes them by the schedule's closure at frame ``t``.

    Args:
        right, left: the two eyes (:class:`lipsync.face.landmarks.Eye`), image pixels.
        closure: (n,) closure per frame in [0, 1] (:func:`blink_schedule`).
        shape: the frames' shape.
        mids: the frame of each blink's middle.
    """

    def __init__(self, right, left, closure: np.ndarray, shape: tuple[int, ...], mids: np.ndarray | None = None):
        self.closure = np.asarray(closure, np.float32)
        self.mids = np.asarray([] if mids is None else mids, int)
        self.eyes = [e for e in (_EyeWarp(right.upper, right.lower, shape), _EyeWarp(left.upper, left.lower, shape))
                     if e.valid]

    def __len__(self) -> int:
        return len(self.mids)

    def apply(self, frame: np.ndarray, t: int) -> np.ndarray:
        """Close the eyelids in ``frame`` (in place) by frame ``t``'s closure; returns ``frame``."""
        c = float(self.closure[t]) if 0 <= t < len(self.closure) else 0.0
        return self.close(frame, c)

    def close(self, frame: np.ndarray, c: float) -> np.ndarray:
        """Close the eyelids in ``frame`` (in place) by closure ``c`` in [0, 1] (a live stream's own schedule)."""
        import cv2

        if c <= 0.0:
            return frame
        for eye in self.eyes:
            y0, y1, x0, x1 = eye.roi
            mx, my = eye.maps(c)
            frame[y0:y1, x0:x1] = cv2.remap(frame, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return frame


_mesh_lock = threading.Lock()
_meshes: dict = {}  # model path -> FaceMesh: loaded once per process (per model file), not once per clip or visitor


def find_eyes(rgb: np.ndarray, box):
    """(eyelids of the face in ``box``, "") from the face-mesh model, or (None, "off: why not").

    The model loads once per process and model file (a changed ``LIPSYNC_FACE_LANDMARKS`` loads
    the new one); one caller runs it at a time. Never raises for a missing or broken model: a
    clip or a live session goes on without blinks.
    """
    from .face.landmarks import FaceMesh, LandmarksUnavailable, model_path

    try:
        with _mesh_lock:
            path = str(model_path())
            mesh = _meshes.get(path)
            if mesh is None:
                _meshes.clear()
                mesh = _meshes[path] = FaceMesh(path)
            return mesh(rgb, box), ""
    except LandmarksUnavailable as e:
        log.warning("no blinks: %s", e)
        return None, f"off: {e}"
    except Exception as e:  # noqa: BLE001 - a broken model must not stop the video
        log.warning("no blinks: the landmark model failed: %s", e)
        return None, f"off: the landmark model failed ({type(e).__name__}: {e})"


def plan_blinks(source, speech, n_frames: int, opts) -> tuple[Blinks | None, str]:
    """The blinks of a clip, or None and the reason there are none (never raises for a missing model).

    Args:
        source: the face source (only a photo blinks: a video's eyes move by themselves).
        speech: the soundtrack (nods come from it when the head moves).
        n_frames: frames in the clip.
        opts: :class:`~lipsync.options.GenerateOptions` (``blink``, ``fps``, ``motion``).
    """
    if not opts.blink:
        return None, "off (asked for)"
    if source.kind != "photo":
        return None, "off: a video's own eyes blink"
    eyes, why = find_eyes(source.plain if source.plain is not None else source.image, source.box)
    if eyes is None:
        return None, why
    nods = None
    if opts.motion > 0:
        from .motion import nod_curve

        nods = nod_curve(speech.samples, speech.sample_rate, n_frames, opts.fps)
    closure, mids = blink_schedule(n_frames, opts.fps, nods)
    blinks = Blinks(eyes.right, eyes.left, closure, source.image.shape, mids)
    if not blinks.eyes:
        return None, "off: no open eyes found in the photo"
    return blinks, f"on: {len(mids)} blinks in {n_frames / opts.fps:.1f} s (eyelids from the face mesh)"
