"""The head's sway in a live session from a photo: causal, endless, louder speech moves it more.

A clip plans its head motion over the whole soundtrack (:mod:`lipsync.motion`); a
live stream has no end to look at, so :class:`HeadSway` draws slow sinusoids
(three per axis, seeded) scaled by a loudness follower with the clip's attack and
release times. At rest the head keeps a faint sway (:data:`IDLE_SWAY`): an idle
avatar waits, it does not freeze.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["IDLE_SWAY", "HeadSway"]

IDLE_SWAY = 0.3  #: head sway at rest, relative to speaking (more than a clip's pause: an idle avatar waits)


class HeadSway:
    """``sway(n, loudness) -> (angle_deg, dx, dy)`` for frames ``n = 0, 1, 2...`` in order.

    Args:
        fps: the stream's frame rate.
        face_height: the face box's height in pixels (the shifts scale with it).
        amount: head motion, 0 (still) to 1.
        seed: the same seed, the same sway.
    """

    _FREQS = ((0.13, 0.29, 0.47), (0.11, 0.23, 0.41), (0.17, 0.31, 0.53))

    def __init__(self, fps: float, face_height: float, amount: float, seed: int):
        from ..motion import ATTACK_S, MAX_ANGLE_DEG, MAX_SHIFT, RELEASE_S

        rng = np.random.default_rng(seed)
        self.phases = [rng.uniform(0.0, 2 * np.pi, 3) for _ in range(3)]
        self.weights = []
        for _ in range(3):
            w = rng.uniform(0.6, 1.0, 3)
            self.weights.append(w / w.sum())
        amount = min(max(float(amount), 0.0), 1.0)
        self.scale = (MAX_ANGLE_DEG * amount, MAX_SHIFT * face_height * amount, MAX_SHIFT * face_height * amount)
        self.up = 1.0 - math.exp(-1.0 / (ATTACK_S * fps))
        self.down = 1.0 - math.exp(-1.0 / (RELEASE_S * fps))
        self.energy = IDLE_SWAY
        self.fps = fps

    def __call__(self, n: int, loudness: float) -> tuple[float, float, float]:
        target = IDLE_SWAY + (1.0 - IDLE_SWAY) * min(1.0, loudness)
        self.energy += (self.up if target > self.energy else self.down) * (target - self.energy)
        t = n / self.fps
        out = []
        for k in range(3):
            s = float(np.sum(self.weights[k] * np.sin(2 * np.pi * np.array(self._FREQS[k]) * t + self.phases[k])))
            out.append(self.scale[k] * self.energy * s)
        return out[0], out[1], out[2]
