"""Requests' work folders, the generation in progress per page, Cancel, and files Gradio is still serving.

Every request works in its own folder. A finished request's folder is kept a
while (Gradio copies the results into its cache meanwhile) and removed later;
a failed or cancelled one is removed as soon as nothing reads from it. The
streamed preview's segments are the subtle case: Gradio turns each segment
the page's handler yields into a stream chunk on a worker thread, and a
Cancel can stop the handler while that thread still reads the file. The
:data:`in_use` register tracks such reads, and a job's folder is removed only
once none is left under it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .messages import CANCELLED

__all__ = [
    "KEEP_OUTPUTS_S", "new_workdir", "keep_workdir", "remove_workdirs", "Job", "start_job", "cancel_generation",
    "InUse", "in_use", "segment_seconds", "session_key", "running_jobs",
]

log = logging.getLogger("lipsync.app")

#: keep a finished request's folder this long (Gradio copies the files into its cache meanwhile)
KEEP_OUTPUTS_S = 600
#: ...and at most this many of them (requests run one at a time: older ones were copied long ago)
MAX_KEPT = 8
#: the longest a stopped job waits for Gradio to finish with its files before removing them anyway
RELEASE_TIMEOUT_S = 60.0

_workdirs: list[tuple[float, Path]] = []
#: every request folder this process made that may still exist (removed at exit, in flight or not)
_created: set[Path] = set()
_workdirs_lock = threading.Lock()


def new_workdir() -> Path:
    """A fresh folder for one request; folders of finished requests are removed after a while."""
    now = time.monotonic()
    old = []
    with _workdirs_lock:
        keep = []
        for t, d in _workdirs:
            (old if now - t > KEEP_OUTPUTS_S else keep).append((t, d))
        _workdirs[:] = keep
    for _, d in old:  # no I/O under the lock
        shutil.rmtree(d, ignore_errors=True)
    with _workdirs_lock:
        created = list(_created)
    gone = {d for d in created if not d.exists()}
    d = Path(tempfile.mkdtemp(prefix="lipsync-app-"))
    with _workdirs_lock:
        _created.difference_update(gone)
        _created.add(d)
    return d


def keep_workdir(d: Path) -> None:
    """Keep a finished request's folder for :data:`KEEP_OUTPUTS_S` seconds (the last :data:`MAX_KEPT` at most)."""
    with _workdirs_lock:
        _workdirs.append((time.monotonic(), d))
        old = _workdirs[:-MAX_KEPT]
        del _workdirs[:-MAX_KEPT]
    for _, folder in old:
        shutil.rmtree(folder, ignore_errors=True)


def remove_workdirs() -> None:
    """Remove every request folder of this process, kept or in flight (at exit)."""
    with _workdirs_lock:
        folders = [d for _, d in _workdirs] + list(_created)
        _workdirs.clear()
        _created.clear()
    for d in folders:
        shutil.rmtree(d, ignore_errors=True)


class InUse:
    """Files being read by someone else (Gradio's stream encoder): a count per path, and a wait for none."""

    def __init__(self) -> None:
        self._count: dict[Path, int] = {}
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, path: str | Path):
        p = Path(path).resolve()
        with self._cond:
            self._count[p] = self._count.get(p, 0) + 1
        try:
            yield p
        finally:
            with self._cond:
                self._count[p] -= 1
                if not self._count[p]:
                    del self._count[p]
                self._cond.notify_all()

    def busy(self, folder: str | Path) -> list[Path]:
        """The files under ``folder`` still in use."""
        f = Path(folder).resolve()
        with self._cond:
            return [p for p in self._count if p.is_relative_to(f)]

    def wait_free(self, folder: str | Path, timeout: float = RELEASE_TIMEOUT_S) -> bool:
        """Wait until no file under ``folder`` is in use; False if some still were after ``timeout``."""
        f = Path(folder).resolve()
        with self._cond:
            return self._cond.wait_for(lambda: not any(p.is_relative_to(f) for p in self._count), timeout)


#: the files of this process that Gradio is reading
in_use = InUse()

#: preview segments' lengths in seconds, by path: told by the handler that yields a segment, taken by
#: :class:`~lipsync.webapp.page.PreviewVideo` when it hands the segment to the page as it is
segment_seconds: dict[str, float] = {}


class Job:
    """A generation in progress for one browser session: how to stop it, and when it has stopped."""

    def __init__(self, key: str, workdir: Path):
        self.key = key
        self.workdir = workdir
        self.cancel = threading.Event()
        self.finished = threading.Event()  #: set once its files are removed or handed to the page

    def end(self, keep: bool) -> None:
        """Unregister; remove the folder unless it is kept, once Gradio has finished with its files."""
        try:
            if not keep:
                if not in_use.wait_free(self.workdir):
                    log.warning("Gradio still reads %s; removing it anyway", in_use.busy(self.workdir))
                shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            with _jobs_lock:
                if _jobs.get(self.key) is self:
                    del _jobs[self.key]
            self.finished.set()


_jobs: dict[str, Job] = {}
_jobs_lock = threading.Lock()


def session_key(request) -> str:
    return getattr(request, "session_hash", None) or f"call-{id(request)}"


def start_job(request, workdir: Path) -> Job:
    """Register this page's new generation; one per page: a new click stops the old one."""
    job = Job(session_key(request), workdir)
    with _jobs_lock:
        old = _jobs.get(job.key)
        if old is not None:
            old.cancel.set()
        _jobs[job.key] = job
    return job


def running_jobs() -> list[Job]:
    with _jobs_lock:
        return list(_jobs.values())


def cancel_generation(request) -> str:
    """The Cancel button: stop this session's generation and wait until it has cleaned up."""
    with _jobs_lock:
        job = _jobs.get(session_key(request))
    if job is None:
        return "Nothing is being generated."
    job.cancel.set()
    if not job.finished.wait(timeout=30):
        log.warning("a cancelled generation did not stop within 30 s")
    return CANCELLED
