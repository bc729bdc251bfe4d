"""The batch driver: check every row, skip what is finished, run the rest, record each result.

    >>> from lipsync.batch import run_batch
    >>> summary = run_batch("jobs.csv", "out/", workers=2)
    >>> summary.ok, summary.failed, summary.results

Order of work:

1. read and check the whole jobs file (:func:`~lipsync.batch.manifest.load_manifest`);
   with ``strict``, any bad row stops here, before anything is written;
2. lock ``out_dir/results.jsonl``, remove temporary files an interrupted run left,
   and decide for each row: bad (recorded), finished (skipped), failed before
   (skipped unless ``retry_failed``) or to run;
3. run the jobs on local worker processes or on Ray;
4. as each job finishes, put its files in place (atomic renames) and append
   its line to ``results.jsonl``, in that order, with SIGINT/SIGTERM held off
   for those few milliseconds; a job is written once per run.

**Finished** means: the last line for the id says ``ok``, was made from the
same row and input files (the job's fingerprint), and every file it lists is
in the folder with the recorded size and sha256. Anything less runs again.
A job that **failed** is not run again by a plain re-run (its line says why;
the exit status stays non-zero) unless ``retry_failed`` is given or its row
or input files changed.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError
from .execute import EngineSettings, Outcome
from .manifest import Job, Manifest, RowError, load_manifest
from .results import (
    OUTPUT_NAMES,
    RESULTS_NAME,
    TEMP_PREFIX,
    ResultsLog,
    file_entry,
    is_complete,
    put_file,
    record_key,
    remove_stale_temps,
)

__all__ = ["run_batch", "BatchSummary", "Interrupted", "EXIT_JOBS_FAILED"]

log = logging.getLogger("lipsync")

#: the command's exit status when the batch ran but one or more jobs failed
EXIT_JOBS_FAILED = 3

#: progress callback: (done, total, ok, failed) for the jobs run now
BatchProgress = Callable[[int, int, int, int], None]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the batch (``signum`` says which)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class BatchSummary:
    """What a batch run did. ``ok + failed == rows`` (every row is one or the other now)."""

    out_dir: Path
    results: Path  #: results.jsonl
    rows: int = 0  #: rows in the jobs file
    ok: int = 0  #: rows whose video is finished (now or before)
    failed: int = 0  #: rows that are bad or whose job failed (now or before)
    ran: int = 0  #: jobs run in this run
    already_done: int = 0  #: skipped: finished before
    failed_before: int = 0  #: skipped: failed before (see ``retry_failed``)
    bad_rows: int = 0  #: rows that did not pass the checks
    elapsed_s: float = 0.0  #: wall time of running the jobs (workers' start-up included)
    records: list[dict] = field(default_factory=list)  #: the lines written in this run

    @property
    def success(self) -> bool:
        return self.failed == 0 and self.ok == self.rows

    @property
    def jobs_per_minute(self) -> float:
        return 60.0 * self.ran / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Signals:
    """SIGINT/SIGTERM raise :class:`Interrupted`, except inside ``critical()``,
    where they are held until its end (so a job's files and its results line
    are written together). Only in the main thread; elsewhere a no-op."""

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self._old: dict[int, object] = {}
        self._critical = False
        self._pending: int | None = None
        self.received: int | None = None  #: the last signal, for when a library re-raises a plain KeyboardInterrupt

    def _handler(self, signum, frame):
        self.received = signum
        if self._critical:
            self._pending = signum
            return
        raise Interrupted(signum)

    def install(self) -> None:
        """(Re)install the handlers (Ray's ``init`` installs its own SIGTERM handler)."""
        if not self.active:
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            old = signal.signal(s, self._handler)
            self._old.setdefault(s, old)

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    @contextlib.contextmanager
    def critical(self):
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
            if self._pending is not None:
                signum, self._pending = self._pending, None
                raise Interrupted(signum)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _bad_row_record(err: RowError) -> dict:
    return {
        "id": err.id, "row": err.row, "status": "error", "error": err.message, "wall_s": 0.0,
        "job": None, "attempts": 0, "worker": None, "finished": _now(), "files": {}, "result": None,
    }


def run_batch(
    jobs: str | Path | Manifest,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    ray: bool = False,
    ray_address: str | None = None,
    cpus_per_worker: int | None = None,
    workers_per_gpu: int | None = None,
    retry_failed: bool = False,
    strict: bool = False,
    settings: EngineSettings | None = None,
    progress: BatchProgress | None = None,
    notify: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Make every video of a jobs file into ``out_dir``.

    Args:
        jobs: the jobs file (CSV/TSV/JSON Lines) or an already loaded :class:`Manifest`.
        out_dir: where ``<id>.mp4``, ``<id>_hls.zip``, ``<id>.vtt`` and ``results.jsonl`` go.
        workers: local worker processes (default 1); with ``ray``, the number of actors
            (default: one per GPU, else one per ``cpus_per_worker`` CPUs).
        ray: run on Ray; ``ray_address`` joins a cluster (``auto`` or ``HOST:PORT``),
            None starts a local Ray instance (or uses the one this process already has).
        cpus_per_worker: CPUs each Ray actor reserves (and uses as threads).
        workers_per_gpu: with ``ray``, actors that share each GPU (default 1).
        retry_failed: run the jobs that failed before again.
        strict: any bad row stops the batch before any work.
        settings: how each worker builds its engine (checkpoint, device, ...).
        progress: ``(done, total, ok, failed)`` after each job run now.
        notify: one line of text for the person (bad rows, skipped failures); default: the log.

    Returns:
        :class:`BatchSummary`; ``summary.success`` is True when every row's video is finished.

    Raises:
        InputError: a problem with the jobs file as a whole, bad rows with ``strict``,
            or the output folder in use.
        LipSyncError: the workers cannot start (model missing, Ray unreachable).
        Interrupted: SIGINT/SIGTERM; what finished is recorded, nothing partial is left.
    """
    settings = settings or EngineSettings()
    say = notify or (lambda line: log.warning("%s", line))
    if workers is not None and int(workers) < 1:
        raise InputError("--workers must be 1 or more.")
    if cpus_per_worker is not None and int(cpus_per_worker) < 1:
        raise InputError("--cpus-per-worker must be 1 or more.")
    if workers_per_gpu is not None and (int(workers_per_gpu) != workers_per_gpu or workers_per_gpu < 1):
        raise InputError("--workers-per-gpu must be a whole number, 1 or more.")
    if workers_per_gpu is not None and not ray:
        raise InputError("--workers-per-gpu shares GPUs between Ray workers: add --ray (here, --workers N runs N "
                         "processes, which share the GPU already).")
    manifest = jobs if isinstance(jobs, Manifest) else load_manifest(jobs)
    out = Path(out_dir).expanduser()
    manifest = _refuse_overwriting_inputs(manifest, out)
    if strict and manifest.errors:
        listed = "; ".join(str(e) for e in manifest.errors[:10])
        more = f" (and {len(manifest.errors) - 10} more)" if len(manifest.errors) > 10 else ""
        raise InputError(f"{len(manifest.errors)} bad row(s) in {manifest.path.name}, nothing was run: {listed}{more}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out-dir {out} is a file; give a folder.")
    out.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary(out_dir=out, results=out / RESULTS_NAME, rows=manifest.rows)
    guard = _Signals()
    guard.install()
    staging: Path | None = None
    try:
        with ResultsLog(out) as results:
            remove_stale_temps(out)
            state = results.read()

            # -- 2. what to do with each row
            for err in manifest.errors:
                summary.bad_rows += 1
                summary.failed += 1
                say(f"bad {err}")
                prev = state.get(record_key({"id": err.id, "row": err.row}))
                if prev and prev.get("status") == "error" and prev.get("error") == err.message and not prev.get("job"):
                    continue  # recorded already, in the same words
                rec = _bad_row_record(err)
                results.append(rec)
                summary.records.append(rec)
            to_run: list[Job] = []
            for job in manifest.jobs:
                prev = state.get(job.id)
                fp = job.fingerprint()
                if is_complete(prev, out, fp, job.hls):
                    summary.already_done += 1
                    summary.ok += 1
                elif prev and prev.get("status") == "error" and prev.get("job") == fp and not retry_failed:
                    summary.failed_before += 1
                    summary.failed += 1
                    say(f"skipped {job.id} (row {job.row}), it failed before: {prev.get('error')} "
                        "(--retry-failed runs it again)")
                else:
                    to_run.append(job)
            log.info(
                "%d row(s): %d finished before, %d failed before, %d bad, %d to run",
                manifest.rows, summary.already_done, summary.failed_before, summary.bad_rows, len(to_run),
            )
            if not to_run:
                return summary

            # -- 3./4. run, and write each result as it comes
            staging = out / f"{TEMP_PREFIX}staging-{secrets.token_hex(4)}"
            committed: set[str] = set()
            done = {"n": 0, "ok": 0, "failed": 0}
            if progress:
                progress(0, len(to_run), 0, 0)

            def deliver(job: Job, outcome: Outcome, attempts: int) -> None:
                if job.id in committed:  # never write a job twice in one run
                    log.warning("a second result for job %s was ignored", job.id)
                    return
                try:
                    with guard.critical():
                        rec = _commit(out, job, outcome, attempts)
                        results.append(rec)
                        committed.add(job.id)
                finally:
                    shutil.rmtree(staging / job.id, ignore_errors=True)
                summary.records.append(rec)
                summary.ran += 1
                done["n"] += 1
                if rec["status"] == "ok":
                    summary.ok += 1
                    done["ok"] += 1
                else:
                    summary.failed += 1
                    done["failed"] += 1
                    say(f"failed {job.id} (row {job.row}): {rec['error']}")
                if progress:
                    progress(done["n"], len(to_run), done["ok"], done["failed"])

            t0 = time.perf_counter()
            try:
                if ray:
                    from .ray_backend import run_ray

                    run_ray(to_run, deliver, settings=settings, address=ray_address, workers=workers,
                            cpus_per_worker=cpus_per_worker, workers_per_gpu=workers_per_gpu or 1,
                            on_connected=guard.install)
                else:
                    from .local import run_local

                    staging.mkdir()
                    run_local(to_run, deliver, settings=settings, workers=workers or 1, staging=staging)
            except KeyboardInterrupt as e:  # Ray turns a signal during its calls into a plain one
                if isinstance(e, Interrupted):
                    raise
                raise Interrupted(guard.received or signal.SIGINT) from None
            finally:
                summary.elapsed_s = time.perf_counter() - t0
            return summary
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        guard.restore()


def _refuse_overwriting_inputs(manifest: Manifest, out: Path) -> Manifest:
    """A job whose output would replace an input file (of any row) becomes a bad row."""
    inputs = {p for j in manifest.jobs for p in (j.image, j.audio) if p is not None}
    jobs, errors = [], list(manifest.errors)
    for job in manifest.jobs:
        outputs = [(out / pattern.format(id=job.id)).resolve() for pattern in OUTPUT_NAMES.values()]
        hit = next((p for p in outputs if p in inputs), None)
        if hit is None:
            jobs.append(job)
        else:
            msg = f"The output {hit.name} would replace an input file in {hit.parent}; choose another --out-dir or id."
            errors.append(RowError(job.row, job.id, msg, job.id))
    return Manifest(manifest.path, jobs, sorted(errors, key=lambda e: e.row))


def _commit(out: Path, job: Job, outcome: Outcome, attempts: int) -> dict:
    """Put the job's files in place (or not, on error) and build its results line."""
    files: dict[str, dict] = {}
    status, error, result = outcome.status, outcome.error, outcome.result
    if status == "ok":
        try:
            for kind, source in outcome.files.items():
                dest = out / OUTPUT_NAMES[kind].format(id=job.id)
                put_file(dest, source)
                files[kind] = file_entry(dest)
            for kind, pattern in OUTPUT_NAMES.items():  # outputs of an older version of this job
                if kind not in files:
                    (out / pattern.format(id=job.id)).unlink(missing_ok=True)
        except OSError as e:
            status, error = "error", f"Could not write the output to {out} ({e.strerror or e})."
            files = {}
        if result is not None:
            result = dict(result)
            for kind, key in (("video", "video"), ("captions", "captions")):
                if kind in files:
                    result[key] = files[kind]["name"]  # relative to the folder of results.jsonl
    return {
        "id": job.id, "row": job.row, "status": status, "error": error, "wall_s": round(outcome.wall_s, 3),
        "job": job.fingerprint(), "attempts": attempts, "worker": outcome.worker or None, "finished": _now(),
        "files": files, "result": result if status == "ok" else None,
    }
