"""One network, many callers: the frames of every live session run as one batch, clips in the gaps.

A :class:`~lipsync.runtime.generator.Generator` owns one :class:`Scheduler`. Every
forward pass goes through it:

* **Live frames** (:meth:`Scheduler.live`, from any number of session threads) wait
  in a queue with the moment their frame is due. The scheduler's network thread runs
  them together as one batch (int8 on a CPU, fp16 on CUDA: the faces' maps or features
  stacked, see :meth:`Generator.forward_many`), as soon as every open session has asked
  for its frame, or when the earliest frame must start to be ready in time
  (:data:`MARGIN_S` before its due time, less the batch's expected cost). Sessions are
  put on one frame grid when they open (:meth:`Scheduler.join`), so the frames of one
  tick are asked for together and share a batch.
* **Clip frames** (:meth:`Scheduler.clip`, a clip's batches: ``generate``, the Generate
  tab, a batch job on the same engine) run on the caller's thread, only while no live
  frame waits, and in pieces small enough to end before the next live batch must start.
  Alone, a clip runs its batches whole.

Each call is counted (:attr:`Scheduler.stats`), and the batched rate measured on live
batches is what admission reads (:meth:`Scheduler.capacity`).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Capacity", "LiveTiming", "Pending", "Scheduler", "SchedulerStats", "MARGIN_S", "CAPACITY_MARGIN"]

log = logging.getLogger("lipsync")

MARGIN_S = 0.006  #: a live batch is planned to end this long before its earliest frame is due
IDLE_S = 5.0  #: the network thread ends after this long without live frames (a new one starts on demand)
CAPACITY_MARGIN = 0.85  #: sessions admitted = this share of (batched frames per second / fps)
MEASURE_S = 0.6  #: the measurement at load: this long of batched forwards on a stand-in face
MAX_LIVE_BATCH = 256  #: the most frames one live batch takes (more wait for the next)
CLIP_STARVE_S = 0.25  #: a clip kept out this long gets one frame in the next pause, even a short one


@dataclass
class SchedulerStats:
    """Counters since the scheduler was made (read them; the scheduler writes them)."""

    live_batches: int = 0  #: network calls made for live frames
    live_frames: int = 0  #: live frames run (a batch holds one per waiting session)
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)  #: live batches by frame count
    clip_calls: int = 0  #: network calls made for clips
    clip_frames: int = 0
    clip_waits: int = 0  #: clip calls that waited for live frames first


@dataclass(frozen=True)
class LiveTiming:
    """How one live forward went: the caller's wall time in the scheduler and its share of the batch."""

    wall_s: float  #: from asking to the mouth being ready (waiting included)
    share_s: float  #: the batch's cost divided among its frames, times this caller's frames
    batch: int  #: frames in the batch this one ran in


@dataclass(frozen=True)
class Capacity:
    """How many live sessions this network holds, and from what."""

    sessions: int  #: the limit: CAPACITY_MARGIN x frames_per_s / fps, at least 1
    frames_per_s: float  #: the batched rate (measured at load, then on the live batches as they run)
    fps: float
    source: str  #: ``measured at load`` or ``measured while serving``


class Pending:
    """A live frame's forward on its way: :meth:`result` waits for it (:meth:`Scheduler.submit`)."""

    __slots__ = ("prep", "mels", "due", "done", "out", "error", "t", "share", "batch", "ready")

    def __init__(self, prep, mels: np.ndarray, due: float):
        self.prep, self.mels, self.due = prep, mels, due
        self.done = threading.Event()
        self.out = self.error = None
        self.t = time.perf_counter()
        self.share, self.batch = 0.0, 0
        self.ready = math.inf  #: when the mouths were ready (``time.perf_counter()``)

    def result(self) -> tuple[np.ndarray, LiveTiming]:
        """The mouths and how the call went; raises what the network raised."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.out, LiveTiming(self.ready - self.t, self.share, self.batch)


class _Rate:
    """Seconds per frame of one kind of call, as a moving average (with the batch size it was seen at)."""

    def __init__(self, first: float | None = None):
        self.per_frame = first

    def note(self, seconds: float, frames: int) -> None:
        x = seconds / max(1, frames)
        self.per_frame = x if self.per_frame is None else 0.8 * self.per_frame + 0.2 * x


class Scheduler:
    """The one way into a generator's network (see the module's text).

    Args:
        run_many: ``[(prepared face, (B, 80, 16) mels), ...] -> [(B, 96, 96, 3) float32, ...]``: one batch.
        name: the network thread's name.
    """

    def __init__(self, run_many: Callable[[list], list[np.ndarray]], *, name: str = "lipsync-network"):
        self._run_many = run_many
        self._name = name
        self._cond = threading.Condition()
        self._waiting: list[Pending] = []
        self._busy = False  # a batch (live or clip) is on the network
        self._thread: threading.Thread | None = None
        self._sessions = 0  # open live sessions (each asks for at most one frame at a time)
        self._grid: tuple[float, float] | None = None  # (origin, fps) of the open sessions' frames
        self._live = _Rate()
        self._clip = _Rate()
        self._last_due = -math.inf  # the latest frame time a live batch has served
        self._measured: tuple[float, str] | None = None  # (frames per second, how)
        self._served_s = 0.0  # network seconds of live batches since the last re-measure
        self._served_frames = 0
        self.stats = SchedulerStats()

    # -- sessions ---------------------------------------------------------------------------
    def join(self, fps: float, now: float | None = None) -> float:
        """A live session opens: count it, and return when its frame 0 is due (on the shared grid:
        the first session sets it; later ones start on its next tick, at most one frame later)."""
        now = time.monotonic() if now is None else now
        with self._cond:
            self._sessions += 1
            if self._grid is None or self._grid[1] != fps or self._sessions == 1:
                self._grid = (now, fps)
                return now
            origin, rate = self._grid
            return origin + math.ceil((now - origin) * rate) / rate

    def leave(self) -> None:
        """A live session closed."""
        with self._cond:
            self._sessions = max(0, self._sessions - 1)
            if self._sessions == 0:
                self._grid = None
            self._cond.notify_all()

    @property
    def sessions(self) -> int:
        return self._sessions

    # -- live ----------------------------------------------------------------------------------
    def live(self, prep, mels: np.ndarray, due: float | None = None) -> tuple[np.ndarray, LiveTiming]:
        """A live frame's mouth: ``mels`` (B, 80, 16) on the prepared face, batched with the frames
        other sessions are waiting for. ``due``: when the frame is shown (``time.monotonic()``)."""
        return self.submit(prep, mels, due).result()

    def submit(self, prep, mels: np.ndarray, due: float | None = None) -> Pending:
        """:meth:`live` without waiting: the frame joins the next batch; ``.result()`` gives its mouths."""
        w = Pending(prep, mels, time.monotonic() if due is None else due)
        with self._cond:
            self._waiting.append(w)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return w

    def _launch_at(self) -> float:
        """When the waiting frames must start, planned from the live rate (call with the lock held)."""
        if not self._waiting:
            return math.inf
        due = min(w.due for w in self._waiting)
        frames = sum(len(w.mels) for w in self._waiting) + max(0, self._sessions - len(self._waiting))
        cost = (self._live.per_frame or 0.0) * frames
        return due - cost - MARGIN_S

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._waiting and not self._busy:
                        launch = self._launch_at()
                        # all open sessions are waiting (or more than that): nothing more will join this batch
                        if len(self._waiting) >= self._sessions or time.monotonic() >= launch:
                            break
                        self._cond.wait(max(0.0005, launch - time.monotonic()))
                        continue
                    if not self._waiting and not self._busy and self._sessions == 0:
                        if not self._cond.wait(IDLE_S) and not self._waiting and self._sessions == 0:
                            self._thread = None
                            return
                        continue
                    self._cond.wait(0.05 if self._waiting else IDLE_S)
                batch = self._waiting[:MAX_LIVE_BATCH]
                del self._waiting[: len(batch)]
                self._busy = True
            t = time.perf_counter()
            frames = sum(len(w.mels) for w in batch)
            try:
                outs = self._run_many([(w.prep, w.mels) for w in batch])
                for w, out in zip(batch, outs):
                    w.out = out
            except BaseException as e:  # noqa: BLE001 - every waiting caller gets the error
                for w in batch:
                    w.error = e
            dt = time.perf_counter() - t
            with self._cond:
                self._busy = False
                self._live.note(dt, frames)
                self._served_s += dt
                self._served_frames += frames
                st = self.stats
                st.live_batches += 1
                st.live_frames += frames
                st.batch_sizes[frames] += 1
                self._last_due = max(self._last_due, max(w.due for w in batch))
                self._cond.notify_all()
            ready = time.perf_counter()
            for w in batch:
                w.share, w.batch, w.ready = dt * len(w.mels) / frames, frames, ready
                w.done.set()

    # -- clips ---------------------------------------------------------------------------------
    @contextmanager
    def clip(self, frames: int):
        """Hold the network for a clip's next piece: ``with scheduler.clip(n) as b: run b frames``.

        Waits while live frames wait; ``b`` (1 to ``frames``) is what fits before the next live
        batch must start, all of ``frames`` when no live session is open.
        """
        waited, since = False, time.monotonic()
        with self._cond:
            while True:
                if not self._busy and not self._waiting:
                    if self._sessions == 0:
                        b = frames
                        break
                    per = self._clip.per_frame or self._live.per_frame
                    b = 1 if per is None else min(frames, int(self._gap() / per))
                    if b < 1 and time.monotonic() - since >= CLIP_STARVE_S:
                        b = 1  # never starved: the live frames absorb one clip frame within their slot
                    if b >= 1:
                        break
                waited = True
                self._cond.wait(0.003)
            self._busy = True
            self.stats.clip_waits += int(waited)
        t = time.perf_counter()
        try:
            yield b
        finally:
            dt = time.perf_counter() - t
            with self._cond:
                self._busy = False
                self._clip.note(dt, b)
                self.stats.clip_calls += 1
                self.stats.clip_frames += b
                self._cond.notify_all()

    def _gap(self) -> float:
        """Seconds until the next live batch must start (lock held, no live frame waiting): the batch
        of the first tick not yet served, all open sessions in it."""
        if self._grid is None:
            return math.inf
        now = time.monotonic()
        origin, fps = self._grid
        after = max(now, self._last_due + 0.5 / fps)
        tick = origin + math.ceil((after - origin) * fps) / fps
        cost = (self._live.per_frame or 0.0) * self._sessions
        return max(0.0, tick - cost - MARGIN_S - now)

    # -- capacity -----------------------------------------------------------------------------
    def measure(self, prep_and_mels: Callable[[int], tuple], batch: int = 4, seconds: float = MEASURE_S) -> float:
        """Measure the batched rate now (frames per second): ``prep_and_mels(batch)`` gives the
        ``run_many`` items of one batch on stand-in faces. Runs as a clip would (live first)."""
        items = prep_and_mels(batch)
        n = sum(len(m) for _, m in items)
        with self.clip(n):
            self._run_many(items)  # warm
        done, t0 = 0, time.perf_counter()
        while True:
            with self.clip(n):
                self._run_many(items)
            done += n
            if time.perf_counter() - t0 >= seconds:
                break
        rate = done / (time.perf_counter() - t0)
        with self._cond:
            self._measured = (rate, "measured at load")
        return rate

    def capacity(self, fps: float = 25.0) -> Capacity | None:
        """The live sessions this network holds at ``fps``, or None before any measurement.

        Measured at load (:meth:`measure`), then re-measured from the live batches as
        they run (every 10 s of network time): the rate the sessions actually get.
        """
        with self._cond:
            if self._served_s >= 10.0 and self._served_frames >= 250:
                rate = self._served_frames / self._served_s
                self._measured = (rate, "measured while serving")
                self._served_s, self._served_frames = 0.0, 0
            if self._measured is None:
                return None
            rate, how = self._measured
        return Capacity(max(1, int(CAPACITY_MARGIN * rate / fps)), round(rate, 1), fps, how)


def env_sessions() -> int | None:
    """``$LIPSYNC_LIVE_SESSIONS`` as a fixed limit, or None for ``auto`` (the default: measured)."""
    env = os.environ.get("LIPSYNC_LIVE_SESSIONS", "").strip().lower()
    if env in ("", "auto"):
        return None
    if env.isdigit() and int(env) > 0:
        return int(env)
    log.warning("live: LIPSYNC_LIVE_SESSIONS=%r is not 'auto' or a positive whole number; using auto", env)
    return None
