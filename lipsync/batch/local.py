"""Local workers: N processes on this machine, each with its own loaded model.

Each worker is a fresh (spawned) Python process that builds one
:class:`~lipsync.LipSync` engine, loads the model once, then takes one job at a
time over a pipe and writes the job's files into a work folder the driver
gave it. Compute threads are split between the workers (cores // N each).

Why a small pool of our own rather than ``ProcessPoolExecutor``: when a worker
dies (out of memory, a crash in native code) the driver must know which job
it held, give that job one more try on a fresh worker, and let the other
workers carry on; and on Ctrl-C it must stop the workers cleanly so their
encoders and temporary files go away. The executor can do neither.

Signals: workers ignore SIGINT (a Ctrl-C in the terminal reaches the whole
process group; the driver decides what happens) and turn SIGTERM into
``SystemExit``, which unwinds the running job (its encoder is killed, its
temporary files removed).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import shutil
import signal
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path

from ..errors import LipSyncError
from ..proc import cpu_count
from .execute import EngineSettings, Outcome, execute, make_engine, set_threads
from .manifest import Job

__all__ = ["run_local", "MAX_ATTEMPTS", "cpu_count"]

log = logging.getLogger("lipsync")

#: a job is tried at most this many times when its worker dies under it
MAX_ATTEMPTS = 2
#: seconds a stopping worker gets to finish cleaning up before it is killed
STOP_GRACE_S = 15.0


def _on_sigterm(signum, frame):  # pragma: no cover - runs in the worker
    raise SystemExit(128 + signum)


def _worker_main(conn, settings: EngineSettings, threads: int, log_level: int) -> None:  # pragma: no cover - child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.basicConfig(level=log_level, format="%(levelname)s [worker %(process)d] %(message)s")
    try:
        set_threads(threads)
        engine = make_engine(settings)
        try:
            engine.load()
        except LipSyncError as e:
            conn.send(("setup_error", str(e)))
            return
        conn.send(("ready", engine.generator.description))
        while True:
            try:
                msg = conn.recv()
            except EOFError:  # the driver is gone
                return
            if msg is None:
                return
            job, workdir = msg
            conn.send(("done", execute(engine, job, Path(workdir))))
    except (BrokenPipeError, KeyboardInterrupt):
        return
    finally:
        # the work is over: a SIGTERM from here on (the driver stopping its workers while this one
        # runs the interpreter's exit finalizers) just ends the process, instead of raising
        # SystemExit inside a finalizer, which prints an "Exception ignored ... Traceback"
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _Worker:
    def __init__(self, ctx, settings: EngineSettings, threads: int, number: int):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=_worker_main, args=(child, settings, threads, logging.getLogger("lipsync").getEffectiveLevel()),
            name=f"lipsync-batch-{number}", daemon=True,
        )
        self.proc.start()
        child.close()
        self.ready = False
        self.job: Job | None = None
        self.dead = False


def run_local(
    jobs: list[Job],
    deliver: Callable[[Job, Outcome, int], None],
    *,
    settings: EngineSettings,
    workers: int,
    staging: Path,
) -> None:
    """Run ``jobs`` on ``workers`` local processes; ``deliver(job, outcome, attempts)``
    is called in this process as each one finishes.

    Raises:
        LipSyncError: the workers cannot start (e.g. the model is missing).
        KeyboardInterrupt: passed on after the workers were stopped.
    """
    if not jobs:
        return
    n = max(1, min(int(workers), len(jobs)))
    threads = max(1, cpu_count() // n)
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch/OpenMP state
    queue = collections.deque(jobs)
    attempts: collections.Counter[str] = collections.Counter()
    pool: list[_Worker] = []
    started = 0
    ever_ready = False
    log.info("starting %d local worker(s), %d thread(s) each", n, threads)

    def spawn() -> None:
        nonlocal started
        started += 1
        pool.append(_Worker(ctx, settings, threads, started))

    def died(w: _Worker) -> None:
        w.dead = True
        w.conn.close()
        code = w.proc.exitcode
        if w.job is None:
            if not w.ready:
                log.warning("a worker stopped while loading the model (exit code %s)", code)
            return
        job, w.job = w.job, None
        attempts[job.id] += 1
        log.warning("the worker running job %s stopped (exit code %s)", job.id, code)
        shutil.rmtree(staging / job.id, ignore_errors=True)
        if attempts[job.id] < MAX_ATTEMPTS:
            queue.appendleft(job)
        else:
            deliver(job, Outcome(job.id, "error", error=(
                f"The worker process stopped while making this video ({attempts[job.id]} times, exit code {code}); "
                "the job may need more memory than this machine has (try a smaller max_side or shorter audio)."
            )), attempts[job.id])

    try:
        for _ in range(n):
            spawn()
        while queue or any(w.job is not None for w in pool):
            # hand out work
            for w in pool:
                if w.ready and w.job is None and queue and not w.dead:
                    job = queue.popleft()
                    workdir = staging / job.id
                    shutil.rmtree(workdir, ignore_errors=True)
                    w.job = job
                    try:
                        w.conn.send((job, str(workdir)))
                    except (BrokenPipeError, OSError):
                        pass  # its sentinel will say it died
            if not pool:
                raise LipSyncError("The batch workers could not start (see the log above, run with -v).")
            by_conn = {w.conn: w for w in pool}
            by_sentinel = {w.proc.sentinel: w for w in pool}
            for ready in wait(list(by_conn) + list(by_sentinel)):
                w = by_conn.get(ready) or by_sentinel[ready]
                if w.dead:
                    continue
                try:
                    while w.conn.poll():
                        kind, payload = w.conn.recv()
                        if kind == "ready":
                            w.ready = ever_ready = True
                            log.info("worker %d ready (%s)", w.proc.pid, payload)
                        elif kind == "setup_error":
                            raise LipSyncError(payload)
                        elif kind == "done":
                            job, w.job = w.job, None
                            attempts[job.id] += 1
                            deliver(job, payload, attempts[job.id])
                except (EOFError, OSError):
                    pass
                if ready in by_sentinel or not w.proc.is_alive():
                    w.proc.join(timeout=1)
                    if w.proc.exitcode is not None:
                        died(w)
            pool[:] = [w for w in pool if not w.dead]
            busy_or_queued = len(queue) + sum(w.job is not None for w in pool)
            while len(pool) < min(n, busy_or_queued):
                if not ever_ready and started >= 2 * n:
                    raise LipSyncError("The batch workers stopped while loading the model (run with -v for details).")
                if started >= 2 * n + len(jobs):
                    break
                spawn()
    finally:
        _stop(pool)


def _stop(pool: list[_Worker]) -> None:
    """Idle workers are told to quit; busy ones get SIGTERM (their job unwinds), then SIGKILL."""
    for w in pool:
        if not w.proc.is_alive():
            continue
        try:
            if w.job is None and w.ready:
                w.conn.send(None)
            else:
                w.proc.terminate()
        except (BrokenPipeError, OSError):
            w.proc.terminate()
    for w in pool:
        w.proc.join(timeout=STOP_GRACE_S)
        if w.proc.is_alive():
            log.warning("worker %s did not stop; killing it", w.proc.pid)
            w.proc.kill()
            w.proc.join(timeout=5)
        w.conn.close()
