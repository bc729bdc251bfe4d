"""The same jobs on a Ray cluster: one actor per GPU (or several sharing it, or one per few CPUs) holds a model.

Nothing here needs a shared filesystem. The driver reads each input file once
and puts its bytes in Ray's object store (a photo used by many rows is sent
once); an actor writes them to its own temporary folder, makes the video and
returns the MP4 / zip / captions as bytes; the driver writes the files.

Failures: an actor whose process dies (out of memory, a lost node) is
restarted by Ray (``max_restarts``) and reloads the model; the job it held is
put back in the queue and goes to the next free actor, wherever that is, up
to :data:`MAX_ATTEMPTS` tries. Ray's own task retries are off
(``max_task_retries=0``) so that the driver alone decides what runs again, and
it writes each job's files and result line once: a result that arrives for a
job already written is ignored, and the file names depend only on the job id,
so even a repeat would replace a file rather than add one.

``ray`` is imported only here, and only when a Ray run is asked for.
"""

from __future__ import annotations

import collections
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..cluster import connect, gpu_share, import_ray
from ..errors import LipSyncError
from .execute import EngineSettings, Outcome, execute, make_engine, set_threads, worker_name
from .manifest import Job

__all__ = ["run_ray", "plan_workers", "MAX_ATTEMPTS"]

log = logging.getLogger("lipsync")

#: tries per job when the actor running it dies
MAX_ATTEMPTS = 3
#: restarts per actor (each reloads the model)
MAX_RESTARTS = 4
#: how long to wait for the first worker to load its model
START_TIMEOUT_S = 600.0
#: CPUs per actor on a cluster without GPUs, unless --cpus-per-worker says otherwise
DEFAULT_CPUS_PER_WORKER = 4


class RayWorker:
    """The actor: one engine, loaded once (``ready``), then ``run`` per job."""

    def __init__(self, settings: EngineSettings, threads: int):
        set_threads(threads)
        self.engine = make_engine(settings)
        self.tmp = Path(tempfile.mkdtemp(prefix="lipsync-ray-"))

    def ready(self) -> str:
        """Load the model now; a LipSyncError here (missing weights) stops the batch."""
        self.engine.load()
        return f"{worker_name()} {self.engine.generator.description}"

    def run(self, job: Job, image: bytes, audio: bytes | None) -> Outcome:
        work = Path(tempfile.mkdtemp(prefix=f"{job.id}-", dir=self.tmp))
        try:
            # the inputs keep their names: error messages name the user's file
            image_path = work / "image" / job.image.name
            image_path.parent.mkdir()
            image_path.write_bytes(image)
            audio_path = None
            if audio is not None and job.audio is not None:
                audio_path = work / "audio" / job.audio.name
                audio_path.parent.mkdir()
                audio_path.write_bytes(audio)
            outcome = execute(self.engine, job, work / "out", image=image_path, audio=audio_path)
            outcome.files = {kind: Path(p).read_bytes() for kind, p in outcome.files.items()}
            return outcome
        finally:
            shutil.rmtree(work, ignore_errors=True)


def plan_workers(nodes: list[dict], *, workers: int | None, cpus_per_worker: int | None, device: str,
                 per_gpu: int = 1):
    """How many actors, and each one's resources, for the live ``nodes`` (``ray.nodes()``).

    Returns:
        ``(count, num_cpus, num_gpus)``: ``per_gpu`` actors per GPU (each with 1/``per_gpu`` of
        it) when there are GPUs (and ``device`` is not ``cpu``), else one per ``cpus_per_worker``
        CPUs of each node. ``workers`` caps (or, on CPUs, sets) the count.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", n.get("alive", False))]
    gpus = [int(r.get("GPU", 0)) for r in alive]
    cpus = [int(r.get("CPU", 0)) for r in alive]
    if sum(gpus) > 0 and device != "cpu":
        num_cpus = cpus_per_worker or 1
        count = sum(gpus) * per_gpu
        return (min(count, workers) if workers else count), num_cpus, gpu_share(per_gpu)
    biggest = max(cpus, default=0)
    if biggest < 1:
        raise LipSyncError("The Ray cluster has no CPUs or GPUs to run on.")
    if cpus_per_worker:
        num_cpus = cpus_per_worker
    elif workers:
        num_cpus = max(1, sum(cpus) // workers)
    else:
        num_cpus = DEFAULT_CPUS_PER_WORKER
    num_cpus = min(num_cpus, biggest)
    count = sum(c // num_cpus for c in cpus)
    return (workers or max(1, count)), num_cpus, 0


def run_ray(
    jobs: list[Job],
    deliver: Callable[[Job, Outcome, int], None],
    *,
    settings: EngineSettings,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int | None = None,
    workers_per_gpu: int = 1,
    on_connected: Callable[[], None] | None = None,
) -> None:
    """Run ``jobs`` on Ray actors; ``deliver(job, outcome, attempts)`` runs here as each finishes.

    Args:
        address: a cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:10001``);
            None starts a local instance (unless Ray is already initialised in this
            process, which is then used as it is).
        workers: number of actors (default: one per GPU, else one per ``cpus_per_worker`` CPUs).
        workers_per_gpu: actors that share each GPU, each with its own model (its clips' CPU work,
            decoding, face finding and encoding, leaves one process's GPU idle much of the time).
        on_connected: called once Ray is connected (the driver re-installs its signal handlers).

    Raises:
        LipSyncError: Ray missing, the cluster unreachable, or no worker could load the model.
    """
    if not jobs:
        return
    ray = import_ray()
    from ray.exceptions import GetTimeoutError, RayError, RayTaskError

    started = connect(address or "local")
    if on_connected:
        on_connected()
    actors: list = []
    try:
        count, num_cpus, num_gpus = plan_workers(
            ray.nodes(), workers=workers, cpus_per_worker=cpus_per_worker, device=settings.device,
            per_gpu=workers_per_gpu,
        )
        count = min(count, len(jobs))
        log.info("starting %d Ray worker(s), each with %d CPU(s) and %g GPU(s)", count, num_cpus, num_gpus)
        Actor = ray.remote(RayWorker).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=MAX_RESTARTS, max_task_retries=0
        )
        actors = [Actor.remote(settings, num_cpus) for _ in range(count)]
        loading = {a.ready.remote(): a for a in actors}  # ready ref -> actor
        running: dict = {}  # run ref -> (actor, job)
        idle: list = []
        queue = collections.deque(jobs)
        attempts: collections.Counter[str] = collections.Counter()
        uses = collections.Counter(p for j in jobs for p in (j.image, j.audio) if p is not None)
        blobs: dict[Path, object] = {}
        ever_ready = False
        last_error = "no reason given"
        deaths: collections.Counter[int] = collections.Counter()  # per actor (index in actors)
        stalled_since: float | None = None

        def revive(actor) -> None:
            """A dead actor comes back (restarted by Ray) until its restarts are used up."""
            i = actors.index(actor)
            deaths[i] += 1
            if deaths[i] <= MAX_RESTARTS:
                loading[actor.ready.remote()] = actor
            else:
                log.warning("a Ray worker stopped %d times; no longer used", deaths[i])

        def blob(path: Path | None):
            if path is None:
                return None
            if path not in blobs:
                blobs[path] = ray.put(path.read_bytes())
            return blobs[path]

        def release(path: Path | None) -> None:
            if path is not None:
                uses[path] -= 1
                if uses[path] <= 0:
                    blobs.pop(path, None)

        while queue or running:
            while idle and queue:
                actor, job = idle.pop(), queue.popleft()
                try:
                    ref = actor.run.remote(job, blob(job.image), blob(job.audio))
                except OSError as e:  # the input vanished since it was checked
                    attempts[job.id] += 1
                    deliver(job, Outcome(job.id, "error", error=f"Could not read the input: {e}"), attempts[job.id])
                    idle.append(actor)
                    continue
                running[ref] = (actor, job)
            if not loading and not running:
                if queue:
                    raise LipSyncError(
                        f"Every Ray worker stopped ({last_error}); {len(queue)} job(s) did not run. "
                        "Run the command again to resume them."
                    )
                break
            # with jobs running, wait for one; with none, wait for a worker only so long
            if running:
                stalled_since = None
            elif stalled_since is None:
                stalled_since = time.monotonic()
            timeout = None if running else max(1.0, START_TIMEOUT_S - (time.monotonic() - stalled_since))
            done, _ = ray.wait(list(loading) + list(running), num_returns=1, timeout=timeout)
            if not done:
                what = "start" if not ever_ready else "come back"
                raise LipSyncError(
                    f"No Ray worker could {what} within {START_TIMEOUT_S:.0f} s ({len(queue)} job(s) waiting): each "
                    f"needs {num_cpus} CPU(s) and {num_gpus} GPU(s); the cluster has {ray.cluster_resources()}. "
                    "Use --cpus-per-worker or --workers to ask for less. Run the command again to resume."
                )
            ref = done[0]
            if ref in loading:
                actor = loading.pop(ref)
                try:
                    info = ray.get(ref)
                except RayTaskError as e:  # ready() raised: the same for every worker (missing weights)
                    raise LipSyncError(_reason(e)) from None
                except RayError as e:  # died while starting; Ray may be restarting it
                    last_error = _reason(e)
                    log.warning("a Ray worker stopped while loading the model: %s", last_error)
                    revive(actor)
                    continue
                ever_ready = True
                log.info("Ray worker ready: %s", info)
                idle.append(actor)
                continue
            actor, job = running.pop(ref)
            try:
                outcome = ray.get(ref)
            except RayTaskError as e:  # execute() catches errors, so this is the actor's plumbing
                attempts[job.id] += 1
                release(job.image), release(job.audio)
                deliver(job, Outcome(job.id, "error", error=f"internal error on the Ray worker: {e}"),
                        attempts[job.id])
                idle.append(actor)
                continue
            except (RayError, GetTimeoutError) as e:  # the actor died (or its node): try again elsewhere
                attempts[job.id] += 1
                last_error = _reason(e)
                log.warning("the Ray worker running job %s stopped (%s); attempt %d of %d",
                            job.id, type(e).__name__, attempts[job.id], MAX_ATTEMPTS)
                if attempts[job.id] < MAX_ATTEMPTS:
                    queue.appendleft(job)
                else:
                    release(job.image), release(job.audio)
                    deliver(job, Outcome(job.id, "error", error=(
                        f"The Ray worker stopped while making this video ({attempts[job.id]} times); the job may "
                        "need more memory than a worker has (try a smaller max_side or shorter audio)."
                    )), attempts[job.id])
                revive(actor)  # back in the pool once restarted
                continue
            attempts[job.id] += 1
            release(job.image), release(job.audio)
            idle.append(actor)
            deliver(job, outcome, attempts[job.id])
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if started:
            ray.shutdown()


def _reason(e: BaseException) -> str:
    """The user's error inside a Ray error (a LipSyncError raised by the worker), else Ray's words."""
    cause = getattr(e, "cause", None)
    for _ in range(3):
        if isinstance(cause, LipSyncError):
            return str(cause)
        cause = getattr(cause, "cause", None)
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
