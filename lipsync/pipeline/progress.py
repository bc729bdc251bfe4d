"""Progress callbacks, cancelling and the clock of the stages, shared by the recipe's steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import Cancelled

__all__ = ["Progress", "no_progress", "cancellable", "Clock"]

#: progress callback: (stage, done, total)
Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    return None


def cancellable(report: Progress, cancel: threading.Event | None) -> Progress:
    """``report``, raising :class:`Cancelled` first once ``cancel`` is set.

    Every stage reports progress, and the render loop after each batch, so
    this is where a run notices a cancel; the code around each report already
    stops the network and aborts the writer on any error.
    """
    if cancel is None:
        return report

    def checked(stage: str, done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled()
        report(stage, done, total)

    return checked


class Clock:
    """Seconds per stage, accumulated lap by lap, and how long the network was busy."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.network_busy_s = 0.0  #: seconds the network computed within the "lipsync" stage
        self._t = time.perf_counter()

    def restart(self) -> None:
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._t
        self._t = now
