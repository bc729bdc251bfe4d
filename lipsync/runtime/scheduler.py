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

import atexit
import collections
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Capacity", "LiveTiming", "Pending", "Scheduler", "Ticket", "Withdrawn", "SchedulerStats", "MARGIN_S", "CAPACITY_MARGIN",
           "SHARED_LEAD_SLOTS", "WARM_SIZES", "ASSUMED_WORK_S"]

log = logging.getLogger("lipsync")

MARGIN_S = 0.006  #: a live batch is planned to end this long before its earliest frame is due
IDLE_S = 5.0  #: the network thread ends after this long without live frames (a new one starts on demand)
CAPACITY_MARGIN = 0.75  #: sessions admitted = this share of (batched frames per second / fps), rounded down
#: (with the sessions' own work counted once they have run: see :meth:`Scheduler.capacity`)
#: a live session's own work per frame (mel window, paste, enhancement, head motion), CPU time, that admission
#: assumes for one process until its sessions have run and measured their own: a photo's session with the mouth's
#: enhancement took 2.0-3.0 ms a frame (the dearest of 5 to 25 sessions) on a 2-core AMD EPYC (Zen 2), the network
#: standing in for a GPU's (``benchmarks/gpu_live.py --stand-in 4,0.03``)
ASSUMED_WORK_S = 0.003
WORK_EMA = 0.05  #: the weight of each new frame in a session's own work per frame (after its first 20)
MEASURE_S = 0.6  #: the measurement at load: this long of batched forwards on a stand-in face
#: ...after this many batches not counted: each of the network's requests runs its first inference slowly, and a
#: live batch size tries both ways to run on int8 (measured on 2 cores: 75 frames/s with one such batch, 87-94 after)
MEASURE_WARM = 3
#: live batch sizes run before the first live session with the int8 network (1 to this, or to one more than
#: admission allows): its first batch of each size is 2-6x slower (55 ms for one frame against 9, 60-75 ms for
#: two to four against 17-31, on 2 cores), so a size first seen live made every open session's frame late
#: (:meth:`Scheduler.warm`, called by :meth:`Generator.warm_live`)
WARM_SIZES = 4
WARM_MAX = 8  #: ...and never more sizes than this
WARM_RUNS = 2  #: runs of each size (the int8 network tries a batch both ways, one frame per request and whole)
MAX_LIVE_BATCH = 256  #: the most frames one live batch takes (more wait for the next)
GATHER_S = 0.003  #: a batch already late waits this long after its first frame for the tick's others
CLIP_STARVE_S = 0.25  #: a clip kept out this long gets one frame in the next pause, even a short one
OVERLOAD = 0.85  #: live batches busy the network this share of a second...
OVERLOAD_LATE = 0.1  #: ...and this share of their frames late (below): the newest session gives way
#: a frame counts as late for that when its mouth comes too late for the session to hand the frame out within one
#: slot of its time (what the session counts as on time): more than this many slots after its time, less the
#: session's own picture work per frame (:meth:`Scheduler.note_picture`), and at least half a slot. (Counting every
#: mouth ready after its time, one busy second made the newest of three sessions give way while all three kept 100 %
#: of their frames on time; so did mouths 20-40 ms late, half a slot, which the sessions still handed out in time.)
OVERLOAD_LATE_SLOTS = 1.0
OVERLOAD_WINDOW_S = 1.0
SHED_EVERY_S = 2.0  #: after one session gave way, wait this long before asking another
#: a second without a late frame, whose live batches with the frames a session that gave way skips added back
#: would busy the network below this share, RESTORE_AFTER_S after the last change: that session runs at full rate
#: again (a clip beside it ended, a spell of load passed). Between the share admission plans for (CAPACITY_MARGIN)
#: and OVERLOAD: three sessions admitted at 0.75 get back to full rate after a spell, and a restored session does
#: not tip the network over by itself.
RESTORE = 0.8
RESTORE_AFTER_S = 5.0
RESTORE_MAX_S = 60.0  #: a session that has to give way again soon after a restore waits twice as long, up to this
SHARED_LEAD_SLOTS = 2  #: beside other sessions, a session asks for each frame this many slots before it is due
#: (so that all ask as soon as the batch they shared is done); one joining them starts this far ahead on their grid
STALLED_SLOTS = 4  #: a session that started no frame for this long is not waited for by clips
#: a clip piece that ends with a live batch due to start within this long (or live frames waiting) returns only once
#: that batch has run (at most CLIP_YIELD_MAX_S): the clip's own work after its piece (pastes, the encoder's pipe)
#: would take the cores the batch computes on
CLIP_YIELD_S = 0.015
CLIP_YIELD_MAX_S = 0.06


@dataclass
class SchedulerStats:
    """Counters since the scheduler was made (read them; the scheduler writes them)."""

    live_batches: int = 0  #: network calls made for live frames
    live_frames: int = 0  #: live frames run (a batch holds one per waiting session)
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)  #: live batches by frame count
    clip_calls: int = 0  #: network calls made for clips
    clip_frames: int = 0
    clip_waits: int = 0  #: clip calls that waited for live frames (before their piece, or after it for the next batch)
    shed: int = 0  #: sessions asked to give way (the network was full)
    restored: int = 0  #: sessions that had given way and got their full rate back


@dataclass(frozen=True)
class LiveTiming:
    """How one live forward went: the caller's wall time in the scheduler and its share of the batch."""

    wall_s: float  #: from asking to the mouth being ready (waiting included)
    share_s: float  #: the batch's cost divided among its frames, times this caller's frames
    batch: int  #: frames in the batch this one ran in


@dataclass(frozen=True)
class Capacity:
    """How many live sessions this network holds, and from what."""

    sessions: int  #: the limit: the least of :attr:`network` and :attr:`process`, at least 1
    frames_per_s: float  #: the batched rate (measured at load, then on the live batches as they run)
    fps: float
    source: str  #: ``measured at load`` or ``measured while serving``
    #: what the network holds: CAPACITY_MARGIN x frames_per_s / fps (on a CPU, with the sessions' own
    #: work spread over the cores it shares with them)
    network: int = 0
    #: what one process holds, its sessions' own work counted one thread at a time (Python runs one
    #: thread at a time); before any session has run, with :data:`ASSUMED_WORK_S` a frame
    process: int = 0
    work_s: float = 0.0  #: the dearest session's own work per frame, CPU time, as measured (0 before any has run)
    sending_s: float = 0.0  #: the CPU time carrying a frame to its visitor costs beside that (0: not counted)


class Withdrawn(RuntimeError):
    """A live frame taken back before it ran (its session closed, or the interpreter is exiting)."""


class Ticket:
    """A live session's place on the scheduler (:meth:`Scheduler.join`)."""

    __slots__ = ("t0", "fps", "order", "shed", "adapt", "next_due", "picture_s", "work_s", "work_n", "encode_s")

    def __init__(self, t0: float, order: int, adapt: bool = True, fps: float = 25.0):
        self.t0 = t0  #: when the session's frame 0 is due (``time.monotonic()``), on the shared grid
        self.fps = fps
        self.order = order
        self.adapt = adapt  #: it may give way (a session opened with ``adapt=False`` never does)
        self.shed = False  #: the network is full: this session (the newest) must run it on fewer frames
        #: when the next frame it has not started yet is due: the earliest it may ask the network for
        #: (:meth:`Scheduler.planned`; a session behind its time asks for it as soon as it can)
        self.next_due = t0
        self.picture_s = 0.0  #: its own work per frame beside the network (mel window, paste...), averaged, wall time
        self.work_s = 0.0  #: the same work's CPU time (its thread's), averaged: what admission counts
        self.work_n = 0  #: frames noted (the first is not counted in :attr:`work_s`)
        #: a driving video's face encoded per frame, wall time, averaged as :attr:`work_s`: on a CPU it computes
        #: on the network's threads, out of this session's thread's sight
        self.encode_s = 0.0


class Pending:
    """A live frame's forward on its way: :meth:`result` waits for it (:meth:`Scheduler.submit`)."""

    __slots__ = ("prep", "mels", "due", "late_after", "done", "out", "error", "t", "t_mono", "share", "batch", "ready")

    def __init__(self, prep, mels: np.ndarray, due: float, late_after: float):
        self.prep, self.mels, self.due = prep, mels, due
        self.late_after = late_after  #: ready after this, the frame counts as late for the overload rule
        self.t_mono = time.monotonic()
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
        inherit: called on the thread that starts the network thread; returns what the network thread
            runs first (e.g. the caller's compute-thread count, which torch keeps per thread).
    """

    def __init__(self, run_many: Callable[[list], list[np.ndarray]], *, name: str = "lipsync-network",
                 inherit: Callable[[], Callable[[], None]] | None = None, cores: int | None = None):
        self._run_many = run_many
        #: the CPU cores the network computes on when the sessions' own work shares them (a CPU engine);
        #: None: the network has a device of its own
        self.cores = cores
        self._work_s = 0.0  # the sessions' own work per frame (CPU time), as last measured (kept after they close)
        self._encode_s = 0.0  # ...and a driving video's face encoder (wall time), the same way
        self._inherit = inherit
        self._name = name
        self._cond = threading.Condition()
        self._waiting: list[Pending] = []
        self._busy = False  # a batch (live or clip) is on the network
        self._thread: threading.Thread | None = None
        self._sessions = 0  # open live sessions (each asks for at most one frame at a time)
        self._tickets: list[Ticket] = []  # the open sessions, oldest first
        self._joined = 0
        self._recent: collections.deque = collections.deque()  # (end, seconds) of the last second's live batches
        self._window_from = 0.0  # the overload window starts here (after a join, a leave or a session giving way)
        self._last_shed = -math.inf  # when a session last gave way or got its full rate back
        self._restored = -math.inf  # when a session last got its full rate back
        self._restore_wait = RESTORE_AFTER_S  # how long after a change before a restore (doubles on flapping)
        self._grid: tuple[float, float] | None = None  # (origin, fps) of the open sessions' frames
        self._live = _Rate()
        self._clip = _Rate()
        self._measured: tuple[float, str] | None = None  # (frames per second, how)
        self._served_s = 0.0  # network seconds of live batches since the last re-measure
        self._served_frames = 0
        self.stats = SchedulerStats()
        self._warmed: set[int] = set()  # live batch sizes run (warmed, or seen live)
        self._warming = threading.Lock()  # one warm-up at a time; a second caller waits for it
        self._stopping = False
        _ALL.add(self)

    # -- sessions ---------------------------------------------------------------------------
    def join(self, fps: float, now: float | None = None, adapt: bool = True) -> Ticket:
        """A live session opens: count it, and say when its frame 0 is due. The first session sets
        the shared grid; a later one starts on its tick :data:`SHARED_LEAD_SLOTS` ahead, so that its
        first frames are asked for as early as the others' are (and share their batches)."""
        now = time.monotonic() if now is None else now
        with self._cond:
            self._sessions += 1
            self._joined += 1
            if self._grid is None or self._grid[1] != fps or self._sessions == 1:
                self._grid = (now, fps)
                t0 = now
            else:
                origin, rate = self._grid
                t0 = origin + math.ceil((now + SHARED_LEAD_SLOTS / rate - origin) * rate) / rate
            ticket = Ticket(t0, self._joined, adapt, fps)
            self._tickets.append(ticket)
            self._window_from = now
            return ticket

    @staticmethod
    def planned(ticket: Ticket | None, due: float) -> None:
        """A session started its frame due at ``due`` (with the network or without: at rest, or
        between the frames it runs the network on): its next may ask for the network from then on."""
        if ticket is not None:
            ticket.next_due = max(ticket.next_due, due + 1.0 / ticket.fps)

    def note_picture(self, ticket: Ticket | None, seconds: float, cpu_s: float | None = None,
                     encode_s: float = 0.0) -> None:
        """A session's own work on one frame beside the network (its mel window, paste, blink, head
        motion): ``seconds`` of wall time (how long its frame needs after its mouth) and ``cpu_s`` of
        its thread's CPU time (default: ``seconds``), which admission counts: on a CPU it takes the cores
        the network computes on, and on any device the one interpreter its process runs Python on.
        ``encode_s``: the wall time of a driving video's face encoder in that frame, which on a CPU
        runs on the network's threads (admission counts it as network time there)."""
        if ticket is None or not math.isfinite(seconds) or seconds < 0:
            return
        cpu_s = seconds if cpu_s is None or not math.isfinite(cpu_s) or cpu_s < 0 else cpu_s
        ticket.picture_s = seconds if ticket.picture_s == 0.0 else 0.95 * ticket.picture_s + 0.05 * seconds
        # a session's first frame pays once for what the next ones reuse (8 ms against 1.7-2 ms, the first
        # session of a process): not counted; then the mean of the frames so far, then a moving average
        n = ticket.work_n = ticket.work_n + 1
        if n >= 2:
            weight = max(WORK_EMA, 1.0 / (n - 1))
            ticket.work_s += (cpu_s - ticket.work_s) * weight
            if math.isfinite(encode_s) and encode_s >= 0:
                ticket.encode_s += (encode_s - ticket.encode_s) * weight

    def _remember(self, tickets: list[Ticket]) -> None:
        """(Lock held.) The dearest of ``tickets``' own work per frame, kept for admission once they have closed."""
        measured = [t for t in tickets if t.work_s]
        if measured:
            self._work_s = max(t.work_s for t in measured)
            self._encode_s = max(t.encode_s for t in measured)

    def leave(self, ticket: Ticket | None = None) -> None:
        """A live session closed."""
        with self._cond:
            self._sessions = max(0, self._sessions - 1)
            if ticket in self._tickets:
                self._tickets.remove(ticket)
                self._remember([ticket, *self._tickets])
            if self._sessions == 0:
                self._grid = None
                self._restore_wait = RESTORE_AFTER_S  # the next sessions start afresh
            self._window_from = time.monotonic()
            self._cond.notify_all()

    def _check_load(self, end: float, dt: float, frames: int, late: int) -> None:
        """After a live batch (lock held): a second of live batches that kept the network busy beyond
        :data:`OVERLOAD` while :data:`OVERLOAD_LATE` of their frames came too late to be handed out within a
        slot (:data:`OVERLOAD_LATE_SLOTS`; the network, not a session's own work, is what is short) makes the
        newest session at full rate give way (its frame step goes to 2). A quiet second after that gives the
        oldest that gave way its full rate back, where its skipped frames fit (:data:`RESTORE`)."""
        recent = self._recent
        recent.append((end, dt, frames, late))
        while recent and recent[0][0] < end - OVERLOAD_WINDOW_S:
            recent.popleft()
        if end - max(self._window_from, self._last_shed) < OVERLOAD_WINDOW_S:
            return
        busy = sum(r[1] for r in recent) / OVERLOAD_WINDOW_S
        frames = sum(r[2] for r in recent)
        late_share = sum(r[3] for r in recent) / max(1, frames)
        if late_share == 0 and end - self._last_shed >= self._restore_wait:
            # the oldest that gave way gets its full rate back, if its skipped frames (every second one) fit
            ticket = next((t for t in self._tickets if t.shed), None)
            if ticket is not None and busy * (1 + ticket.fps / 2 / max(1, frames)) < RESTORE:
                ticket.shed = False
                self._last_shed = self._restored = end
                self.stats.restored += 1
                log.info("live: the network has room again: a session runs it on every frame again")
                return
        if busy <= OVERLOAD or late_share <= OVERLOAD_LATE or end - self._last_shed < SHED_EVERY_S:
            return
        if len(self._tickets) < 2:
            return  # alone, a session's own speed policy decides: giving way would spare no one
        for ticket in reversed(self._tickets):
            if ticket.adapt and not ticket.shed:
                ticket.shed = True
                if end - self._restored < 2 * self._restore_wait:  # it was too early: wait longer next time
                    self._restore_wait = min(RESTORE_MAX_S, 2 * self._restore_wait)
                self._last_shed = end
                self.stats.shed += 1
                log.warning("live: the network is full (busy %.0f%% of the last second with %d sessions): the newest "
                            "runs it on every second frame", 100 * busy, self._sessions)
                return

    @property
    def sessions(self) -> int:
        return self._sessions

    # -- live ----------------------------------------------------------------------------------
    def live(self, prep, mels: np.ndarray, due: float | None = None) -> tuple[np.ndarray, LiveTiming]:
        """A live frame's mouth: ``mels`` (B, 80, 16) on the prepared face, batched with the frames
        other sessions are waiting for. ``due``: when the frame is shown (``time.monotonic()``)."""
        return self.submit(prep, mels, due).result()

    def submit(self, prep, mels: np.ndarray, due: float | None = None, ticket: Ticket | None = None) -> Pending:
        """:meth:`live` without waiting: the frame joins the next batch; ``.result()`` gives its mouths.
        ``ticket``: the asking session's (clips then plan their pieces around its next frame)."""
        due = time.monotonic() if due is None else due
        slot = 1.0 / (ticket.fps if ticket is not None else 25.0)
        picture = ticket.picture_s if ticket is not None else 0.0
        w = Pending(prep, mels, due, due + max(0.5 * slot, OVERLOAD_LATE_SLOTS * slot - picture))
        with self._cond:
            self.planned(ticket, w.due)
            self._waiting.append(w)
            if self._thread is None:
                first = self._inherit() if self._inherit is not None else None
                self._thread = threading.Thread(target=self._loop, args=(first,), name=self._name, daemon=True)
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

    def cancel(self, pending: Pending) -> bool:
        """Take back a frame not yet in a batch (its session closed); True if it was taken back."""
        with self._cond:
            if pending in self._waiting:
                self._waiting.remove(pending)
                pending.error = Withdrawn("the live session closed")
                pending.done.set()
                return True
            return False

    def stop(self, timeout: float = 2.0) -> None:
        """End the network thread (the interpreter is exiting): frames still waiting get an error."""
        with self._cond:
            self._stopping = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self, first: Callable[[], None] | None = None) -> None:
        if first is not None:
            first()
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        for w in self._waiting:
                            w.error = Withdrawn("the interpreter is exiting")
                            w.done.set()
                        self._waiting.clear()
                        self._thread = None
                        return
                    if self._waiting and not self._busy:
                        launch = self._launch_at()
                        # all open sessions are waiting (or more than that): nothing more will join this batch;
                        # late already, the others of the tick are given a moment (they ask together)
                        now = time.monotonic()
                        first = min(w.t_mono for w in self._waiting)
                        if len(self._waiting) >= self._sessions or now >= max(launch, first + GATHER_S):
                            break
                        self._cond.wait(max(0.0005, max(launch, first + GATHER_S) - now))
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
                now = time.monotonic()
                self._check_load(now, dt, frames, sum(len(w.mels) for w in batch if w.late_after < now))
                self._cond.notify_all()
            ready = time.perf_counter()
            for w in batch:
                w.share, w.batch, w.ready = dt * len(w.mels) / frames, frames, ready
                w.done.set()

    # -- clips ---------------------------------------------------------------------------------
    def clip(self, frames: int):
        """Hold the network for a clip's next piece: ``with scheduler.clip(n) as b: run b frames``.

        Waits while live frames wait; ``b`` (1 to ``frames``) is what fits before the next live
        batch must start, all of ``frames`` when no live session is open. A piece that ends as the
        next live batch is due returns once that batch has run (:data:`CLIP_YIELD_S`).
        """
        return self._piece(frames, count=True)

    @contextmanager
    def _piece(self, frames: int, count: bool):
        """:meth:`clip`; ``count`` False: not a clip's frames (a warm-up): not in the stats nor the clip's rate."""
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
            self.stats.clip_waits += int(waited and count)
        t = time.perf_counter()
        try:
            yield b
        finally:
            dt = time.perf_counter() - t
            with self._cond:
                self._busy = False
                if count:
                    self._clip.note(dt, b)
                    self.stats.clip_calls += 1
                    self.stats.clip_frames += b
                self._cond.notify_all()
                if self._sessions and (self._waiting or self._gap() < CLIP_YIELD_S):
                    self.stats.clip_waits += int(not waited and count)
                    ran, until = self.stats.live_batches, time.monotonic() + CLIP_YIELD_MAX_S
                    while self.stats.live_batches == ran and self._sessions and time.monotonic() < until:
                        self._cond.wait(max(0.0005, until - time.monotonic()))

    def _gap(self) -> float:
        """Seconds until the next live batch must start (lock held, no live frame waiting): the batch
        of the earliest frame a session may still ask for, all open sessions in it.

        That frame is each session's next not yet started (:meth:`planned`): a session behind its
        time asks for it as soon as it can, so a clip piece must not fill the time it needs to catch
        up, and a session ahead of the others must not hide that they still need an earlier tick. A
        session that has not started a frame for :data:`STALLED_SLOTS` slots (no one takes its frames)
        is counted as asking on the next tick from now."""
        if self._grid is None:
            return math.inf
        now = time.monotonic()
        origin, fps = self._grid
        tick = origin + math.ceil((now - origin) * fps) / fps
        nexts = [t.next_due if t.next_due >= now - STALLED_SLOTS / fps else tick for t in self._tickets]
        cost = (self._live.per_frame or 0.0) * self._sessions
        return max(0.0, min(nexts, default=tick) - cost - MARGIN_S - now)

    # -- capacity -----------------------------------------------------------------------------
    def measure(self, prep_and_mels: Callable[[int], tuple], batch: int = 4, seconds: float = MEASURE_S) -> float:
        """Measure the batched rate now (frames per second): ``prep_and_mels(batch)`` gives the
        ``run_many`` items of one batch on stand-in faces. Runs as a clip would (live first)."""
        items = prep_and_mels(batch)
        n = sum(len(m) for _, m in items)
        for _ in range(MEASURE_WARM):
            with self.clip(n):
                self._run_many(items)
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

    def warm(self, prep_and_mels: Callable[[int], tuple], sizes: range) -> float:
        """Run each live batch size in ``sizes`` not run yet (:data:`WARM_RUNS` times, on stand-in faces
        from ``prep_and_mels(size)``), as a clip would: a network's first batch of a size is slow, and
        one first seen live would make every open session's frame late. Returns the seconds it took
        (0 where every size had run)."""
        t0, ran = time.perf_counter(), False
        with self._warming:
            for size in sizes:
                with self._cond:
                    if size in self._warmed or size in self.stats.batch_sizes:
                        continue
                ran, whole = True, 0
                items = prep_and_mels(size)
                for _ in range(WARM_RUNS):
                    with self._piece(size, count=False) as b:  # all of them while no live session is open
                        self._run_many(items[:b])
                    whole += b == size
                if whole:  # beside live sessions a piece may hold fewer: that size is tried again next time
                    with self._cond:
                        self._warmed.add(size)
        return time.perf_counter() - t0 if ran else 0.0

    def capacity(self, fps: float = 25.0, *, sending_s: float = 0.0, sending_locked_s: float = 0.0) -> Capacity | None:
        """The live sessions this network holds at ``fps``, or None before any measurement.

        ``sending_s``: the CPU time each session's frame costs beside its own work to carry it to
        its visitor (WebRTC's encoders and event loop, measured by the web server:
        :mod:`lipsync.live.web.sending`), of which ``sending_locked_s`` runs Python under the
        interpreter lock. It counts as the sessions' own work does: spread over the cores on a
        CPU, and its locked part one thread at a time in :attr:`Capacity.process`.

        Measured at load (:meth:`measure`), then re-measured from the live batches as
        they run (every 10 s of network time): the rate the sessions actually get.

        Once sessions have run, their own work beside the network counts too (:meth:`note_picture`:
        the dearest session's, as its thread's CPU time per frame; not its wall time, which grows
        with every session waiting for a core or the interpreter lock and made admission shrink as
        sessions were added: 15 ms a frame at 10 sessions that took 2.6 ms of CPU each):

        - on a CPU (:attr:`cores` set) it shares the cores with the network: each frame counts its
          network time (1 / rate, the whole machine), a driving video's face encoder (its wall time:
          it runs on the network's threads, out of the session thread's sight) and that work spread
          over the cores, and the sessions admitted keep the machine busy at most
          :data:`CAPACITY_MARGIN` of the time.
          (Measured on 2 cores at 100 frames/s: three sessions by the network alone, which held
          90-97 % on time; two with their picture work counted, which held 99.6 %.)
        - on any device, one process runs its sessions' Python one thread at a time: at most
          :data:`CAPACITY_MARGIN` / (fps x that work) sessions (:attr:`Capacity.process`; with
          :data:`ASSUMED_WORK_S` until sessions have run). On a GPU, where the network costs the host
          little, this is what one process holds. (Measured on an H200: one process held 15 sessions
          at 97 % and fell behind at 20, the GPU far from full.)
        """
        with self._cond:
            if self._served_s >= 10.0 and self._served_frames >= 250:
                rate = self._served_frames / self._served_s
                self._measured = (rate, "measured while serving")
                self._served_s, self._served_frames = 0.0, 0
            if self._measured is None:
                return None
            rate, how = self._measured
            self._remember(self._tickets)
            work, encode = self._work_s, self._encode_s
        # on a CPU a video's face encoder runs on the network's threads: the whole machine, as the network
        per_frame = 1.0 / rate + (encode + (work + sending_s) / self.cores if self.cores else 0.0)
        network = max(1, int(CAPACITY_MARGIN / (fps * per_frame)))
        process = max(1, int(CAPACITY_MARGIN / (fps * ((work or ASSUMED_WORK_S) + sending_locked_s))))
        if work:
            how += f", with the sessions' own work ({1000 * work:.1f} ms of CPU a frame; {process} in one process)"
        if sending_s:
            how += (f", and sending them ({1000 * sending_s:.1f} ms of CPU a frame, {1000 * sending_locked_s:.1f} "
                    "of it on the event loop)")
        if encode and self.cores:
            how += f", and a driving video's face encoder ({1000 * encode:.1f} ms a frame)"
        elif process < network and not work:
            how += f", {process} in one process (its sessions' own work not measured yet: {1000 * ASSUMED_WORK_S:g} ms a frame)"
        return Capacity(min(network, process), round(rate, 1), fps, how, network, process, work, sending_s)


_ALL: "weakref.WeakSet[Scheduler]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    # a network thread must not start a batch while the interpreter tears down torch and OpenVINO
    for scheduler in list(_ALL):
        scheduler.stop()


def env_sessions() -> int | None:
    """``$LIPSYNC_LIVE_SESSIONS`` as a fixed limit, or None for ``auto`` (the default: measured)."""
    env = os.environ.get("LIPSYNC_LIVE_SESSIONS", "").strip().lower()
    if env in ("", "auto"):
        return None
    if env.isdigit() and int(env) > 0:
        return int(env)
    log.warning("live: LIPSYNC_LIVE_SESSIONS=%r is not 'auto' or a positive whole number; using auto", env)
    return None
