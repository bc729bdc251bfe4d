"""Run external programs (ffmpeg, espeak-ng) safely.

Argument lists only, never a shell; ``-nostdin`` for ffmpeg; stderr drained;
a timeout after which the whole process group is killed.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from functools import lru_cache

from .errors import EncodeError, LipSyncError

__all__ = ["ffmpeg_exe", "run", "Pipe", "start", "kill_group", "cpu_count", "background", "current_nice",
           "BACKGROUND_NICE"]

log = logging.getLogger("lipsync")

#: how much lower a clip's helper programs run (POSIX niceness, added to ours): on a machine
#: that also serves live sessions, their frames come first, as the network's scheduler puts them
#: first; alone, a program at a lower priority runs as fast
BACKGROUND_NICE = 10
_NICE: contextvars.ContextVar[int] = contextvars.ContextVar("lipsync_nice", default=0)
#: how our programs start: in a process group of their own, so that a timeout stops them whole
#: (:func:`kill_group`), but in our session. Where Linux groups each session's processes for the CPU
#: ("autogroup", the default of most distributions), a session of their own was a CPU group of its
#: own, sharing the CPU equally with all of ours whatever the program's niceness; in our session its
#: niceness counts against each of our threads. (Python 3.10 has no ``process_group``: a session of
#: their own there, whose group :func:`_lower` lowers too.)
_SPAWN = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}


@contextlib.contextmanager
def background(nice: int = BACKGROUND_NICE):
    """Run the programs this thread starts inside the block (:func:`run`, a :class:`Pipe`
    without its own ``nice``, a video decoder) ``nice`` steps lower in CPU priority.

    A clip wraps its making in it (its audio decode, espeak-ng, ffprobe), and a new live
    session the reading of its driving video (the running sessions come first); the speech
    of a live session's text keeps our priority.
    """
    token = _NICE.set(nice)
    try:
        yield
    finally:
        _NICE.reset(token)


def current_nice() -> int:
    """The niceness :func:`background` asks of programs started here now (0 outside it)."""
    return _NICE.get()


def start(args: list[str], *, nice: int | None = None, **popen) -> subprocess.Popen:
    """Start a program as all of ours start (:func:`run`, :class:`Pipe`, the video decoder): in a
    process group of its own (:func:`kill_group` stops it whole), ``nice`` steps lower (``None``:
    what :func:`background` asks here). ``popen``: the pipes, as for :class:`subprocess.Popen`;
    raises its :class:`OSError` when the program cannot be started."""
    proc = subprocess.Popen(args, **popen, **_SPAWN)
    _lower(proc, current_nice() if nice is None else nice)
    return proc


def _lower(proc: subprocess.Popen, nice: int) -> None:
    """Run ``proc`` ``nice`` steps below this process (at most 19); best effort.

    Called right after the start, before the program's own start-up work and
    before it starts threads (they inherit it). A program started in a session
    of its own (see :data:`_SPAWN`) has its session's CPU group lowered too,
    where Linux has one ("autogroup"); one in our session shares our group,
    which stays as it is.
    """
    if nice <= 0:
        return
    try:
        value = min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice)
        os.setpriority(os.PRIO_PROCESS, proc.pid, value)
        if os.getsid(proc.pid) == os.getsid(0):
            return
    except (OSError, AttributeError):  # not POSIX, not allowed, or already gone: it runs at the normal priority
        return
    try:
        with open(f"/proc/{proc.pid}/autogroup", "w") as f:
            f.write(str(value))
    except OSError:  # no autogroup here (not Linux, or a kernel without it), or already gone
        pass


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=None)
def ffmpeg_exe() -> str:
    """``ffmpeg`` from PATH, else the static binary shipped by imageio-ffmpeg."""
    env = os.environ.get("LIPSYNC_FFMPEG")
    if env:
        return env
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - any failure means: no ffmpeg
        raise EncodeError(
            "ffmpeg was not found. Install it (apt-get install ffmpeg, brew install ffmpeg) "
            "or pip install imageio-ffmpeg."
        ) from None


def kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and every child it started (it runs in a process group of its own)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
        log.warning("process %s did not exit after SIGKILL", proc.pid)


def _tail(data: bytes, lines: int = 6) -> str:
    text = data.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:])[-800:]


def run(
    args: list[str],
    *,
    timeout: float,
    input: bytes | None = None,
    what: str = "ffmpeg",
    error: type[LipSyncError] = EncodeError,
) -> bytes:
    """Run ``args`` to completion and return its stdout.

    Raises ``error`` (a :class:`LipSyncError`) with the end of stderr when the
    program fails, cannot be started, or runs past ``timeout`` seconds.
    Inside :func:`background` it runs at a lower CPU priority.
    """
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise TypeError("args must be a list of str")
    log.debug("run %s", args)
    try:
        proc = start(args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise error(f"Could not start {what} ({e.strerror or e}). Is it installed?") from None
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        raise error(f"{what} did not finish within {timeout:.0f} s and was stopped.") from None
    except BaseException:
        kill_group(proc)
        raise
    if proc.returncode != 0:
        raise error(f"{what} failed (exit {proc.returncode}): {_tail(err)}")
    return out


class Pipe:
    """A long-running process fed through stdin (the streaming encoder).

    ``nice``: run it at a lower CPU priority (POSIX niceness, e.g. 10, added to ours): on a
    busy machine it yields to the work that must keep time (live sessions); alone it runs
    as fast. ``None``: what :func:`background` asks here (0 outside it).
    stderr is drained on a thread into a bounded buffer so the child never
    blocks on a full pipe, whatever it prints.
    """

    def __init__(self, args: list[str], *, what: str = "ffmpeg", timeout: float = 3600.0, nice: int | None = None):
        self.what = what
        self.timeout = timeout
        log.debug("pipe %s", args)
        try:
            self.proc = start(args, nice=nice, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as e:
            raise EncodeError(f"Could not start {what} ({e.strerror or e}). Is it installed?") from None
        self._err = collections.deque(maxlen=64)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._expired = False
        self._timer.start()

    def _drain(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self._err.append(line[-400:])
        self.proc.stderr.close()

    def _expire(self) -> None:
        self._expired = True
        kill_group(self.proc)

    def _failure(self) -> EncodeError:
        if self._expired:
            return EncodeError(f"{self.what} did not finish within {self.timeout:.0f} s and was stopped.")
        return EncodeError(f"{self.what} failed (exit {self.proc.returncode}): {_tail(b''.join(self._err))}")

    def write(self, data) -> None:
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ValueError, OSError):
            self.proc.wait()
            self._reader.join(timeout=5)
            raise self._failure() from None

    def close(self) -> None:
        """Close stdin, wait for the exit, raise EncodeError on failure."""
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
        self._timer.cancel()
        self._reader.join(timeout=5)
        if self.proc.returncode != 0:
            raise self._failure()

    def abort(self) -> None:
        """Kill the process group (after an error elsewhere)."""
        self._timer.cancel()
        kill_group(self.proc)
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self._reader.join(timeout=5)
