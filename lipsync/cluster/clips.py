"""Clips made on a Ray cluster's workers: the Generate tab (and the ``/generate`` API) of ``app.py --ray``.

Two halves of one job:

* :class:`ClipJobs` runs on a worker (inside the live worker's actor, beside its live sessions, on the
  same engine: the engine's scheduler serves live frames first and clip frames in the gaps). A job works
  in a folder of its own and streams back what it makes as it makes it: progress, the captions, each
  preview segment's bytes, then the result with the MP4's bytes. The MP4 stays there a while, so the
  app can ask for its HLS package next, made there too.
* :class:`ClusterClips` is the app's side. It has the engine's :meth:`~lipsync.LipSync.run` and
  :meth:`~lipsync.LipSync.stream` (the same arguments, the same :class:`~lipsync.Result` with its files
  in the app's folder), plus :meth:`ClusterClips.package`. A job goes to the ready worker with the most
  room; a worker that dies before the first preview segment passes the job to the next, one that dies
  later ends it with a plain line. Cancel reaches the worker and stops it there.

``ray`` is imported only by the app's side, when a cluster is in use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import BackendError, Cancelled, LipSyncError
from ..media.segments import Segment, SegmentStream

log = logging.getLogger("lipsync")

__all__ = ["ClipJobs", "ClusterClips", "KEEP_S", "STOPPED", "NONE_READY"]

CLIP_PREFIX = "lipsync-clip-"  #: a job's folder: lipsync-clip-<worker's pid>-<random>
KEEP_S = 300.0  #: how long a worker keeps a finished clip's MP4 for its HLS package
STOPPED = "The machine making your video stopped. Press Generate again."
NONE_READY = "No machine of the cluster is ready to make videos yet; try again in a minute."
GENERIC = "Something went wrong while making the video on the cluster, and it has been logged there. Please try again."
#: the request's fields that may name a file on the app's machine (sent as bytes, written on the worker)
FILE_FIELDS = ("image", "audio", "video")
PROGRESS_EVERY_S = 0.2  #: a worker sends progress this often at most (and at each new stage)


# ----------------------------------------------------------------------------- the worker's side


@dataclasses.dataclass
class _Job:
    folder: Path
    cancel: threading.Event
    result: object = None  #: the Result, once made
    done_at: float | None = None  #: when the job ended (kept for its HLS package until KEEP_S later)


def _localize(request, files: dict[str, tuple[str, bytes]], folder: Path):
    """``request`` with its files written into ``folder`` and its output there (checked again, here)."""
    changes = {}
    for name, (filename, data) in files.items():
        path = folder / f"{name}-{Path(filename).name or name}"
        path.write_bytes(data)
        changes[name] = path
    return dataclasses.replace(request, out=folder / Path(request.out).name, **changes)


def remove_orphans(folder: Path | None = None) -> list[str]:
    """Remove the clip folders of workers that died here (killed, out of memory): each folder is named after
    its worker's process, and a restarted worker removes those whose process is gone. Returns their names."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{CLIP_PREFIX}*"):
        pid = path.name[len(CLIP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class ClipJobs:
    """A worker's clips, each in a folder of its own (see the module's text).

    Args:
        engine: the worker's loaded engine (shared with its live sessions).
        threads: clips made at once here (each holds a thread while it runs).
    """

    def __init__(self, engine, threads: int = 2):
        self.engine = engine
        self.jobs: dict[str, _Job] = {}
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lipsync-clip")
        self._prefix = f"{CLIP_PREFIX}{os.getpid()}-"
        remove_orphans()

    def _sweep(self) -> None:
        now = time.monotonic()
        for job_id, job in list(self.jobs.items()):
            if job.done_at is not None and now - job.done_at > KEEP_S:
                self._drop(job_id)

    def _drop(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            shutil.rmtree(job.folder, ignore_errors=True)

    async def make(self, job_id: str, request, files: dict[str, tuple[str, bytes]]):
        """Make ``request`` (its files given as ``{field: (file name, bytes)}``); yields, as they come:
        ``("progress", stage, done, total)``, ``("captions", cues)``, ``("segment", index, name, bytes,
        start_s, end_s, frames)``, then ``("result", result, mp4 bytes, captions bytes or None)``, or
        ``("error", LipSyncError)`` (a Cancelled after :meth:`cancel`)."""
        self._sweep()
        folder = Path(tempfile.mkdtemp(prefix=self._prefix))
        job = self.jobs[job_id] = _Job(folder, threading.Event())
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()

        def put(item) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        def work() -> None:
            last = {"t": 0.0, "stage": None}

            def report(stage: str, done: int, total: int) -> None:
                now = time.monotonic()
                if stage != last["stage"] or now - last["t"] >= PROGRESS_EVERY_S or done >= total:
                    last.update(t=now, stage=stage)
                    put(("progress", stage, done, total))

            try:
                req = _localize(request, files, folder)
                stream = self.engine.stream(req, report, cancel=job.cancel, folder=folder / "preview",
                                            on_captions=lambda cues: put(("captions", cues)))
                for seg in stream:
                    put(("segment", seg.index, seg.path.name, seg.path.read_bytes(), seg.start_s, seg.end_s,
                         seg.frames))
                    seg.path.unlink(missing_ok=True)
                result = stream.result
                job.result = result
                captions = result.captions.read_bytes() if result.captions else None
                put(("result", result, Path(result.video).read_bytes(), captions))
            except LipSyncError as e:
                put(("error", e))
            except Exception:  # noqa: BLE001 - the app gets a plain line; this worker's log the traceback
                log.exception("cluster: a clip failed")
                put(("error", LipSyncError(GENERIC)))
            finally:
                put(None)

        running = loop.run_in_executor(self._pool, work)
        try:
            while (item := await items.get()) is not None:
                yield item
        finally:
            if job.result is None:  # failed, cancelled, or the app stopped listening: stop, then nothing is kept
                job.cancel.set()
            await asyncio.shield(running)
            job.done_at = time.monotonic()
            if job.result is None:
                self._drop(job_id)

    def cancel(self, job_id: str) -> bool:
        """Stop job ``job_id`` at its next check (its stream then ends with a Cancelled)."""
        job = self.jobs.get(job_id)
        if job is None or job.result is not None:
            return False
        job.cancel.set()
        return True

    async def package(self, job_id: str) -> dict:
        """The HLS package of finished job ``job_id``: ``{"zip": bytes, "hls": HlsResult}`` (its paths are
        this worker's), or ``{"error": plain line}``; the job's folder goes either way."""
        from ..media.hls import package_hls

        job = self.jobs.get(job_id)
        if job is None or job.result is None:
            return {"error": "The video is no longer on the machine that made it; press Generate again."}
        result = job.result
        try:
            hls = await asyncio.get_running_loop().run_in_executor(self._pool, lambda: package_hls(
                result.video, job.folder / "hls", zip_path=job.folder / "lipsync_hls.zip", captions=result.captions))
            return {"zip": hls.zip.read_bytes(), "hls": hls}
        except LipSyncError as e:
            return {"error": e}
        finally:
            self._drop(job_id)

    def discard(self, job_id: str) -> None:
        """The app wants nothing more of job ``job_id``: stop it if it runs, and remove its folder once ended."""
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.cancel.set()
        if job.done_at is not None:
            self._drop(job_id)

    def close(self) -> None:
        """Stop every clip and remove every folder (the worker is shutting down)."""
        for job in self.jobs.values():
            job.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for job_id in list(self.jobs):
            self._drop(job_id)


# ----------------------------------------------------------------------------- the app's side


def _portable(request) -> dict[str, tuple[str, bytes]]:
    """The request's files named by path, as ``{field: (file name, bytes)}``: they travel beside the
    request (the worker writes them back)."""
    files = {}
    for name in FILE_FIELDS:
        value = getattr(request, name)
        if isinstance(value, (str, Path)):
            path = Path(value)
            files[name] = (path.name, path.read_bytes())
    return files


class ClusterClips:
    """The app's clip engine on a cluster: :meth:`run`, :meth:`stream` and :meth:`package` as the local one
    (see the module's text).

    Args:
        remote: the app's :class:`~lipsync.live.web.remote.RemoteLive`: its workers, ready or loading.
        timeout_s: the longest wait for any one message from a worker (a hung worker ends the job).
    """

    def __init__(self, remote, *, timeout_s: float = 300.0):
        self.remote = remote
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}  #: worker key -> clips there now
        self._made: dict[str, tuple[object, str]] = {}  #: MP4 path on this machine -> (worker, job id)

    # -- the page's status line ----------------------------------------------------------------
    def status(self) -> tuple[str, str]:
        """("ready" | "loading" | "error", a plain line) for the page."""
        workers = self.remote.describe()
        ready = [w for w in workers if w["ready"]]
        if ready:
            return "ready", f"on {len(ready)} machine{'s' if len(ready) != 1 else ''} of the cluster"
        if workers:
            return "loading", ""
        broken = getattr(self.remote, "broken", {})
        return "error", (f"The model could not be loaded on the cluster's machines. {next(iter(broken.values()))}"
                         if broken else NONE_READY)

    # -- choosing a worker -----------------------------------------------------------------------
    def _choose(self, tried: set[str]):
        with self._lock:
            ready = [w for w in list(self.remote.workers.values()) if w.info is not None and w.place.key not in tried]
            if not ready:
                return None
            # the most room: live sessions and clips there now, against what it holds
            return min(ready, key=lambda w: ((len(w.peers) + self._running.get(w.place.key, 0))
                                             / max(1, w.info["capacity"]), self._running.get(w.place.key, 0)))

    def _count(self, worker, n: int) -> None:
        with self._lock:
            key = worker.place.key
            self._running[key] = self._running.get(key, 0) + n
            if self._running[key] <= 0:
                del self._running[key]

    # -- the engine's calls ----------------------------------------------------------------------
    def run(self, request, progress=None, *, predict=None, on_segment=None, cancel: threading.Event | None = None,
            on_captions=None):
        """Make ``request`` on a worker; the :class:`~lipsync.Result`, its MP4 (and captions) at ``request.out``.
        ``predict`` is not used (the network runs on the worker)."""
        del predict
        return self._make(request, progress, on_segment, cancel or threading.Event(), on_captions)

    def stream(self, request, progress=None, *, cancel: threading.Event | None = None, folder=None, predict=None,
               on_captions=None) -> SegmentStream:
        """As :meth:`lipsync.LipSync.stream`: the preview's segments as the worker makes them, then ``result``."""
        del predict
        return SegmentStream(lambda on_segment, stop: self._make(request, progress, on_segment, stop, on_captions),
                             folder=folder, cancel=cancel)

    def _make(self, request, progress, on_segment, cancel: threading.Event, on_captions):
        files = _portable(request)
        tried: set[str] = set()
        while True:
            worker = self._choose(tried)
            if worker is None:
                raise BackendError(STOPPED if tried else NONE_READY)
            tried.add(worker.place.key)
            job_id = secrets.token_hex(8)
            self._count(worker, 1)
            try:
                started, result = self._on(worker, job_id, request, files, progress, on_segment, cancel, on_captions)
            finally:
                self._count(worker, -1)
            if result is not None:
                return result
            if started:  # the worker died after the preview had begun: the page cannot start over by itself
                raise BackendError(STOPPED)
            log.warning("cluster: the worker on %s stopped before the clip began; trying another", worker.place.address)

    def _on(self, worker, job_id, request, files, progress, on_segment, cancel, on_captions):
        """One try on ``worker``: (whether a segment was handed over, the Result or None if the worker died)."""
        from ray.exceptions import (ActorUnschedulableError, GetTimeoutError, NodeDiedError, RayActorError,
                                    RayTaskError)

        ray = self.remote.ray
        stream = worker.handle.clip.remote(job_id, request, files)
        ended = threading.Event()

        def watch() -> None:  # a Cancel reaches the worker at once, however long its next message takes
            while not ended.wait(0.1):
                if cancel.is_set():
                    try:
                        worker.handle.cancel_clip.remote(job_id)
                    except Exception:  # noqa: BLE001 - the worker is gone: nothing to stop
                        pass
                    return

        watcher = threading.Thread(target=watch, name="lipsync-clip-cancel", daemon=True)
        watcher.start()
        started = False
        spool = Path(tempfile.mkdtemp(prefix="lipsync-remote-"))
        try:
            while True:
                try:
                    ready, _ = ray.wait([stream], timeout=self.timeout_s)
                    if not ready:
                        raise GetTimeoutError("no message from the worker")
                    item = ray.get(next(stream))
                except StopIteration:
                    raise BackendError(STOPPED) from None
                except GetTimeoutError:
                    log.warning("cluster: the worker on %s sent nothing for %.0f s", worker.place.address,
                                self.timeout_s)
                    worker.handle.discard_clip.remote(job_id)
                    raise BackendError(STOPPED) from None
                except RayTaskError:
                    log.exception("cluster: a clip failed on %s", worker.place.address)
                    raise LipSyncError(GENERIC) from None
                except (RayActorError, ActorUnschedulableError, NodeDiedError):
                    # the worker, or its machine, is gone (an actor pinned to a dead node is unschedulable)
                    return started, None
                kind = item[0]
                if kind == "progress":
                    if progress is not None:
                        progress(*item[1:])
                elif kind == "captions":
                    if on_captions is not None:
                        on_captions(item[1])
                elif kind == "segment":
                    index, name, data, start_s, end_s, frames = item[1:]
                    path = spool / name
                    path.write_bytes(data)
                    started = True
                    if on_segment is not None:
                        on_segment(Segment(index, path, start_s, end_s, frames))
                elif kind == "error":
                    error = item[1]
                    raise Cancelled() if isinstance(error, Cancelled) or cancel.is_set() else error
                elif kind == "result":
                    return started, self._keep(worker, job_id, request, *item[1:])
        finally:
            ended.set()
            shutil.rmtree(spool, ignore_errors=True)

    def _keep(self, worker, job_id: str, request, result, mp4: bytes, captions: bytes | None):
        """The worker's Result with its files written beside ``request.out`` on this machine."""
        out = Path(request.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(mp4)
        vtt = None
        if captions is not None:
            vtt = out.with_name(Path(result.captions).name)
            vtt.write_bytes(captions)
        result = dataclasses.replace(result, video=out, captions=vtt)
        with self._lock:
            self._made[str(out)] = (worker, job_id)
            while len(self._made) > 64:  # packages never asked for: the workers drop those after KEEP_S
                self._made.pop(next(iter(self._made)))
        return result

    def package(self, result, workdir: Path, progress=None):
        """The HLS package of a clip made here (zip at ``workdir / "lipsync_hls.zip"``), made on its worker.

        Raises:
            LipSyncError: it could not be made (a plain line).
        """
        from ray.exceptions import GetTimeoutError, RayError

        with self._lock:
            made = self._made.pop(str(result.video), None)
        if made is None:
            raise LipSyncError("The video is no longer on the machine that made it; press Generate again.")
        worker, job_id = made
        if progress is not None:
            progress("hls", 0, 1)
        try:
            reply = self.remote.ray.get(worker.handle.package_clip.remote(job_id), timeout=self.timeout_s)
        except (RayError, GetTimeoutError):
            raise BackendError(STOPPED) from None
        if "error" in reply:
            error = reply["error"]
            raise error if isinstance(error, LipSyncError) else LipSyncError(str(error))
        hls = reply["hls"]
        zip_path = Path(workdir) / "lipsync_hls.zip"
        zip_path.write_bytes(reply["zip"])
        outdir = Path(workdir) / "hls"
        if progress is not None:
            progress("hls", 1, 1)
        return dataclasses.replace(hls, outdir=outdir, master=outdir / "master.m3u8", zip=zip_path,
                                   subtitles=outdir / "subs" / "index.m3u8" if hls.subtitles else None)
