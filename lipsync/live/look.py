"""Blinks and the mouth's enhancement for a live session (which has no fixed length).

**Blinks** (:class:`BlinkClock`): the offline clip plans all its blinks at once
(:func:`lipsync.blink.blink_schedule`); a live stream draws them as it goes, from
the same distribution: the first 1-3 s in, then each next start 2 s plus a
gamma-distributed extra after the last one's start (every gap 2-6 s), with the
same 0.25 s profile (:func:`lipsync.blink.blink_profile`) and the shut moment on a
frame. A blink that falls due while the head nods deeper than
:data:`lipsync.blink.NOD_LIMIT` waits for the nod to pass (at most until the gap's
6 s bound). The eyelids come once per session from the offline face-mesh model;
where it cannot load there are no blinks and the session's ``mode.blink`` says why.

**Enhancement** (:class:`MouthEnhance`): the paste's enhancer
(:func:`lipsync.enhance.make_enhancer`) scaled by the mouth's speech weight, so
rest frames are the plain paste (the enhancer does not run) and the
enhancement fades in and out with the mouth's easing. ``face`` (the GFPGAN
restorer, about a second a frame on a CPU) runs only where CUDA is; elsewhere
live mode uses ``fast``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger("lipsync")

__all__ = ["BlinkClock", "MouthEnhance", "live_enhancer", "load_eyes", "scale_eyes"]


class BlinkClock:
    """The closure of each frame of an endless stream: ``clock(n, nod)`` for frames ``n = 0, 1, 2...`` in order.

    Args:
        fps: the stream's frame rate.
        seed: the same seed, the same blinks.
    """

    def __init__(self, fps: float, seed: int | None = None):
        from ..blink import CLOSE_S, FIRST_S, HOLD_S, OPEN_S, SEED

        self.fps = float(fps)
        self.rng = np.random.default_rng(SEED if seed is None else seed)
        self.duration = CLOSE_S + HOLD_S + OPEN_S
        self.peak = CLOSE_S + HOLD_S / 2
        self.due = float(self.rng.uniform(*FIRST_S))  #: when the next blink may start (s)
        self.start: float | None = None  #: the current blink's start (s), None between blinks
        self.last = -math.inf  #: the last blink's start (s)
        self.mids: list[int] = []  #: the frame of each blink's middle so far

    def __call__(self, n: int, nod: float = 0.0) -> float:
        """Closure in [0, 1] of frame ``n``; ``nod``: the head's nod depth at this frame (0 when it does not nod)."""
        from ..blink import MAX_GAP_S, MIN_GAP_S, NOD_LIMIT, blink_profile

        t = n / self.fps
        if self.start is not None:
            if t - self.start <= self.duration:
                return float(blink_profile(t - self.start))
            self.last, self.start = self.start, None
            extra = min(self.rng.gamma(2.0, 0.9), MAX_GAP_S - MIN_GAP_S - 0.5)  # room for a nod's delay
            self.due = self.last + MIN_GAP_S + float(extra)
        if t < self.due:
            return 0.0
        waited_too_long = math.isfinite(self.last) and t + self.peak - self.last >= MAX_GAP_S - 1.0 / self.fps
        if nod > NOD_LIMIT and not waited_too_long:
            return 0.0  # wait for the nod to pass
        mid = n + round(self.peak * self.fps)  # the shut moment falls on a frame
        self.start = mid / self.fps - self.peak
        self.mids.append(mid)
        return float(blink_profile(t - self.start))


def load_eyes(plain: np.ndarray, box):
    """The photo's eyelids from the offline face mesh, or (None, why not); never raises for a missing model."""
    from ..blink import find_eyes

    eyes, why = find_eyes(plain, box)
    return (None, why) if eyes is None else (eyes, "on: about 16 blinks a minute, eyelids from the face mesh")


def scale_eyes(eyes, sx: float, sy: float):
    """``eyes`` (:class:`~lipsync.face.landmarks.EyeLandmarks`) in a picture resized by (sx, sy)."""
    import dataclasses

    k = np.array([sx, sy], np.float32)
    return dataclasses.replace(
        eyes,
        right=dataclasses.replace(eyes.right, upper=eyes.right.upper * k, lower=eyes.right.lower * k),
        left=dataclasses.replace(eyes.left, upper=eyes.left.upper * k, lower=eyes.left.lower * k),
    )


class MouthEnhance:
    """The paste's enhancer, scaled per frame by :attr:`strength` (the mouth's speech weight).

    At strength 0 it is the plain stretch and the enhancer does not run. :attr:`calls`
    counts the frames it ran on.
    """

    def __init__(self, enhancer):
        self.enhancer = enhancer
        self.strength = 0.0
        self.calls = 0

    def __call__(self, pred: np.ndarray, region: np.ndarray) -> np.ndarray:
        if self.strength <= 0.0:
            import cv2

            return cv2.resize(np.ascontiguousarray(pred), (region.shape[1], region.shape[0]),
                              interpolation=cv2.INTER_LINEAR)  # as the plain paste
        self.calls += 1
        self.enhancer.weights = np.array([min(self.strength, 1.0)], np.float32)  # one weight: this frame's
        return self.enhancer(pred, region)


def live_enhancer(mode: str, *, still: bool = True) -> tuple[MouthEnhance | None, str]:
    """(enhancer or None, what runs) for a live session's ``enhance`` mode (off, fast or face).

    ``still``: the face region is the same photo on every frame (its reference is computed
    once); False for a driving video, whose every frame has its own (see
    :class:`~lipsync.enhance.detail.DetailTransfer`).
    """
    from ..enhance import make_enhancer
    from ..options import ENHANCE_MODES

    mode = str(mode).strip().lower()
    if mode not in ENHANCE_MODES:
        from ..errors import InputError

        raise InputError(f"enhance must be one of {', '.join(ENHANCE_MODES)}, got {mode!r}.")
    if mode == "off":
        return None, "off (asked for)"
    if mode == "face":
        import torch

        if not torch.cuda.is_available():
            enhancer, _ = make_enhancer("fast", np.zeros(1, np.float32), still=still)
            return MouthEnhance(enhancer), "fast (face asked for: it runs live only on CUDA, about a second a frame on a CPU)"
        enhancer, note = make_enhancer("face", np.zeros(1, np.float32), still=still, device="cuda")
        return MouthEnhance(enhancer), note
    enhancer, note = make_enhancer("fast", np.zeros(1, np.float32), still=still)
    return MouthEnhance(enhancer), note
