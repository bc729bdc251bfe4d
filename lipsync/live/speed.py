"""The speed policy of a live session: what a frame costs, and what to give up when it does not fit.

During the first second (:data:`MEASURE_FRAMES` frames) every frame runs the
network (on silence when idle) and its cost is measured. If the mean does not fit
the frame budget (:data:`BUDGET_SHARE` of a slot), the session runs the network on
every second frame; if that still does not fit, it works at a smaller picture
size (:data:`SMALLER`, once); then it stops measuring. A frame that skipped the
network for want of a face (a video) says nothing of speed and does not count.

The policy also says how early the session must start making a frame so that it
is ready on time (:attr:`SpeedPolicy.lead`): 1.5 times the dearest of the last 8
frames, at most two slots (beyond one, the session starts a frame's network batch
before it shows the frame before). Where the network is shared with other sessions (one batch
for all, :mod:`lipsync.runtime.scheduler`), a frame's cost for the decisions is the
session's own: its share of the batch, not the time the others' frames took. The session asks; the policy owns no picture and no clock.
"""

from __future__ import annotations

import collections

import numpy as np

__all__ = ["BUDGET_SHARE", "MEASURE_FRAMES", "SMALLER", "SpeedPolicy"]

MEASURE_FRAMES = 25  #: frames per speed measurement (one second at 25 fps)
BUDGET_SHARE = 0.75  #: a frame must cost at most this share of its slot
SMALLER = 0.6  #: the working size's scale when frame step 2 is not enough


class SpeedPolicy:
    """Frame costs in, decisions out: ``note(n, seconds, ran)`` after each frame made.

    Args:
        fps: the session's frame rate.
        adapt: allow the decisions (without it the cost is still measured and reported).
    """

    STEP = "step"  #: run the network on every second frame
    SMALLER = "smaller"  #: work at a smaller picture size

    def __init__(self, fps: float, adapt: bool):
        self.slot = 1.0 / float(fps)
        self.adapt = adapt
        self.lead = 0.5 * self.slot  #: seconds before a frame's time to start making it
        self.frame_ms = 0.0  #: mean cost of the measured frames (ms)
        self.cost = 0.0  #: the last measurement's mean cost (s), when it led to a decision
        self._recent: collections.deque[float] = collections.deque(maxlen=8)  # any frames: how early to start one
        self._cost: collections.deque[float] = collections.deque(maxlen=MEASURE_FRAMES)  # frames that ran it
        self._measure_until = MEASURE_FRAMES if adapt else -1  # the first second runs the network to measure it
        self._decided: list[str] = []

    def measuring(self, n: int) -> bool:
        """Frame ``n`` runs the network whatever it shows, to be measured."""
        return n < self._measure_until

    def record(self, decision: str) -> str:
        """A decision taken for another reason (the shared network is full: :attr:`STEP`): not taken again."""
        if decision not in self._decided:
            self._decided.append(decision)
        return decision

    def note(self, n: int, dt: float, ran: bool = True, own: float | None = None) -> str | None:
        """Frame ``n`` took ``dt`` seconds to make (``ran``: the network ran or would have, given a face);
        ``own``: what of it was the session's own cost (its share of a network batch shared with
        other sessions, not the wait for theirs; default ``dt``). ``dt`` says how early to start a
        frame; ``own`` decides the step and the size, so a slow session degrades alone.

        Returns :attr:`STEP` or :attr:`SMALLER` when the session must change how it
        works (it measures again after), else None.
        """
        self._recent.append(dt)
        self.lead = min(2 * self.slot, 1.5 * max(self._recent) + 0.003)
        if not ran:  # a video frame without a face: the network did not run, so it says nothing of speed
            if self._measure_until >= 0:
                self._measure_until += 1  # measure on, until enough frames that ran it
            return None
        self._cost.append(dt if own is None else own)
        cost = float(np.mean(self._cost))
        self.frame_ms = 1000.0 * cost
        if self._measure_until < 0 or n + 1 < self._measure_until or len(self._cost) < MEASURE_FRAMES:
            return None
        if not self.adapt or cost <= BUDGET_SHARE * self.slot:
            self._measure_until = -1  # it fits: measured once and for all
            return None
        todo = [d for d in (self.STEP, self.SMALLER) if d not in self._decided]
        if not todo:
            self._measure_until = -1  # nothing smaller to try
            return None
        self._decided.append(todo[0])
        self.cost = cost
        self._cost.clear()
        self._measure_until = n + 1 + MEASURE_FRAMES
        return todo[0]
