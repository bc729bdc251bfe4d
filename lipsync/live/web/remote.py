"""The live sessions of one app, placed on workers of a Ray cluster (``install(..., ray=ADDRESS)``).

The app keeps the signalling: its routes and their checks (the page's origin, JSON only,
sizes, one offer a second and one session per visitor, consent for a face of one's own) run
here, as on one machine. Each admitted offer goes to the ready worker with the most free
places (:class:`~lipsync.live.web.worker.LiveWorker`: one loaded engine per GPU, or several
processes sharing each GPU (``workers_per_gpu``), else one per node, with its capacity), which
opens the session and answers with its own machine's ICE candidates: the media flows between
the visitor and that machine, not through the app.

**Failover.** The app pings every worker each :data:`PING_S`. A worker whose process or
machine dies (Ray says so, or it leaves pings unanswered for ``dead_after_s``) ends its
sessions: their page learns it from the status route (410, :data:`STOPPED`), and new
sessions go to the remaining workers. Ray restarts a worker whose process died on a
machine that is still up; it serves again once its model is loaded. Machines that join the
cluster later get workers within :data:`DISCOVER_S`.

``ray`` is imported only here, when a cluster is asked for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...batch.execute import EngineSettings
from ...cluster import Place, connect, env_workers_per_gpu, import_ray, plan_nodes
from .http import HTTPProblem
from .server import LOADING, MAX_PENDING, OFFER_INTERVAL_S, busy, check_offer, release_place, take_place
from .worker import ICE_VARS, LiveWorker

log = logging.getLogger("lipsync")

__all__ = ["DISCOVER_S", "PING_S", "STOPPED", "RemoteLive"]

STOPPED = "The machine serving this live session stopped; start again."
NONE_SERVING = "No machine is serving the live avatar right now; try again in a minute."
UNREACHABLE = "The machine serving the live avatar is not answering; try again in a moment."
GONE = "No such live session (it ended or never existed); start a new one."
PING_S = 1.0  #: how often the app asks each worker what it holds
DEAD_AFTER_S = 10.0  #: a worker that leaves pings unanswered this long is taken for dead
DISCOVER_S = 10.0  #: how often the app looks for machines that joined (or left) the cluster
MAX_RESTARTS = 4  #: Ray restarts a worker whose process died this often (each reloads the model)
ENDED_KEEP_S = 600.0  #: how long the status route remembers why a session ended


def _died() -> tuple[type[BaseException], ...]:
    """Ray's errors for a worker that is gone for good: dead (restarts used up), or its machine gone."""
    from ray.exceptions import ActorDiedError, ActorUnschedulableError

    return ActorDiedError, ActorUnschedulableError


class WorkerGone(Exception):
    """The worker died under a call (its sessions are ended already)."""


@dataclass
class Worker:
    """The app's view of one worker."""

    place: Place
    handle: object
    info: dict | None = None  #: from ``ready()``: capacity, node_id, address, pid, incarnation; None while loading
    loading: asyncio.Task | None = None
    peers: dict[str, float] = field(default_factory=dict)  #: session id -> when it was placed here
    opening: int = 0  #: offers being opened here now
    last_ok: float = field(default_factory=time.monotonic)

    @property
    def free(self) -> int:
        return 0 if self.info is None else self.info["capacity"] - len(self.peers) - self.opening


class RemoteLive:
    """The route-facing twin of :class:`~lipsync.live.web.server.LiveServer`, with the sessions on Ray workers.

    Args:
        address: the cluster's head (``HOST:PORT``, or ``auto``); joined now.
        settings: how each worker builds its engine (default: each machine's environment, then ``auto``).
        image: the default portrait (a path or bytes; default: the package's example on each worker).
        max_sessions: each worker's capacity (default: ``LIPSYNC_LIVE_SESSIONS`` on its machine, else what
            its network holds, measured when it loads).
        max_side, max_s: the picture's long side and a session's longest life (as :class:`LiveServer`).
        per_client, offer_interval_s, max_pending: the app's admission (as :class:`LiveServer`).
        cpus_per_worker: CPUs each worker reserves in Ray's count (a GPU worker's network threads; a CPU
            machine's one worker computes on all its cores).
        workers_per_gpu: worker processes per GPU, each with its own engine and its share of the GPU
            (default ``$LIPSYNC_WORKERS_PER_GPU``, else 1). One process's picture work, not the GPU, limits
            the sessions it holds; several share the GPU and use more of the machine's cores.
        dead_after_s: a worker silent this long is taken for dead.

    Raises:
        LipSyncError: Ray is not installed, or the cluster cannot be reached.
    """

    def __init__(self, address: str, *, settings: EngineSettings | None = None, image=None,
                 max_sessions: int | None = None, max_side: int = 512, max_s: float | None = None,
                 per_client: int = 1, offer_interval_s: float = OFFER_INTERVAL_S, max_pending: int = MAX_PENDING,
                 cpus_per_worker: float = 1, workers_per_gpu: int | None = None,
                 dead_after_s: float = DEAD_AFTER_S):
        self.address = address
        self.settings = settings
        self.image = Path(image).read_bytes() if isinstance(image, (str, Path)) else image
        self.max_sessions = max_sessions
        self.max_side = max_side
        self.max_s = max_s
        self.per_client = per_client
        self.offer_interval_s = offer_interval_s
        self.max_pending = max_pending
        self.cpus_per_worker = cpus_per_worker
        self.workers_per_gpu = env_workers_per_gpu() if workers_per_gpu is None else workers_per_gpu
        self.dead_after_s = dead_after_s
        self.workers: dict[str, Worker] = {}  #: by :attr:`Place.key`
        self.owners: dict[str, tuple[str, str]] = {}  #: session id -> (visitor's address, worker's key)
        self.ended: dict[str, tuple[str, str, float]] = {}  #: session id -> (visitor, why, when): ended by a death
        self.broken: dict[str, str] = {}  #: worker key -> why its model could not be loaded (not tried again)
        self.pending: dict[str, int] = {}
        self._last_offer: dict[str, float] = {}
        self._monitor: asyncio.Task | None = None
        self._last_discovery = 0.0
        self._closed = False
        self.ray = import_ray()
        self._joined = connect(address)
        try:
            self._discover(self.ray.nodes())
        except BaseException:
            self._leave()
            raise
        if self.workers_per_gpu > 1 and not any(w.place.num_gpus for w in self.workers.values()):
            log.warning("live: %d workers per GPU were asked for, but the cluster has no GPU (or the device is "
                        "cpu): one worker per machine", self.workers_per_gpu)
        self._start()

    # -- workers ----------------------------------------------------------------------------
    def _discover(self, nodes: list[dict]) -> None:
        """A worker for each place of the cluster's live machines (``ray.nodes()``) that has none; the workers
        of machines that left go."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._last_discovery = time.monotonic()
        device = self.settings.device if self.settings is not None else os.environ.get("LIPSYNC_DEVICE", "auto")
        places = plan_nodes(nodes, device=device, cpus_per_worker=self.cpus_per_worker, per_gpu=self.workers_per_gpu)
        alive = {p.node_id for p in places}
        for worker in list(self.workers.values()):
            if worker.place.node_id not in alive:
                self._lost(worker, dead=True)
        env = {k: os.environ[k] for k in ICE_VARS if k in os.environ}
        actor = self.ray.remote(LiveWorker)
        for place in places:
            if place.key in self.workers or place.key in self.broken:
                continue
            handle = actor.options(
                num_cpus=place.num_cpus, num_gpus=place.num_gpus, max_restarts=MAX_RESTARTS, max_task_retries=0,
                max_concurrency=1000, scheduling_strategy=NodeAffinitySchedulingStrategy(place.node_id, soft=False),
            ).remote(self.settings, capacity=self.max_sessions, max_side=self.max_side, max_s=self.max_s,
                     image=self.image, env=env, threads=place.threads, cores=place.cores,
                     gpu_share=place.num_gpus or 1.0)
            self.workers[place.key] = Worker(place, handle)
            log.info("live: a worker is starting on %s (%s)", place.address, place.key[:8])

    def _start(self) -> None:
        """Load every worker's model and watch them, once this runs on an event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # made outside a loop: the first request starts it
        if self._closed:
            return
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.ensure_future(self._watch())
        for worker in self.workers.values():
            if worker.info is None and (worker.loading is None or worker.loading.done()):
                worker.loading = asyncio.ensure_future(self._load(worker))

    async def _load(self, worker: Worker) -> None:
        from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

        from ...errors import LipSyncError

        for attempt in range(60):
            try:
                info = await worker.handle.ready.remote()
            except RayTaskError as e:  # ready() raised: the model cannot be loaded there (missing weights...)
                cause = getattr(e, "cause", None)
                reason = str(cause) if isinstance(cause, LipSyncError) else "the details are in the worker's log"
                log.warning("live: the worker on %s could not load the model: %s", worker.place.address, reason)
                self.broken[worker.place.key] = reason
                self._lost(worker, dead=True)
                return
            except ActorUnavailableError:  # restarting: ask again
                await asyncio.sleep(min(5.0, 0.5 * (attempt + 1)))
                continue
            except (RayActorError, *_died()) as e:
                log.warning("live: the worker on %s stopped while loading: %s", worker.place.address,
                            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                self._lost(worker, dead=True)
                return
            if self.workers.get(worker.place.key) is worker:
                worker.info, worker.last_ok = info, time.monotonic()
                log.info("live: worker ready on %s (pid %s): %s, %d session(s) at once", info["address"], info["pid"],
                         info["engine"], info["capacity"])
            return
        self._lost(worker, dead=True)

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(PING_S)
            try:
                await asyncio.gather(*(self._ping(w) for w in list(self.workers.values()) if w.info is not None))
                if time.monotonic() - self._last_discovery > DISCOVER_S or not self.workers:
                    self._discover(await asyncio.to_thread(self.ray.nodes))
                    self._start()
                self._forget_old()
            except Exception:  # noqa: BLE001 - the GCS may be restarting: the next round tries again
                log.exception("live: watching the cluster's workers failed this round")

    async def _ping(self, worker: Worker) -> None:
        from ray.exceptions import ActorUnavailableError, RayActorError

        asked = time.monotonic()
        try:
            reply = await asyncio.wait_for(asyncio.wrap_future(worker.handle.ping.remote().future()),
                                           self.dead_after_s)
        except _died():
            self._lost(worker, dead=True)
            return
        except ActorUnavailableError:  # Ray is restarting it (or cannot reach it): no use killing it again
            if time.monotonic() - worker.last_ok > self.dead_after_s:
                self._lost(worker, dead=False)
            return
        except (RayActorError, asyncio.TimeoutError):  # hung: have Ray replace its process
            if time.monotonic() - worker.last_ok > self.dead_after_s:
                self._lost(worker, dead=False, kill=True)
            return
        if self.workers.get(worker.place.key) is not worker or worker.info is None:
            return
        worker.last_ok = time.monotonic()
        if reply["incarnation"] != worker.info["incarnation"]:  # Ray restarted it: its sessions are gone
            self._lost(worker, dead=False)
            return
        for key in ("capacity", "how"):  # re-measured as it serves
            if key in reply:
                worker.info[key] = reply[key]
        held = set(reply["sessions"])
        for peer_id, placed in list(worker.peers.items()):
            if peer_id not in held and placed < asked:  # it ended there (and told its page why)
                worker.peers.pop(peer_id, None)
                self.owners.pop(peer_id, None)

    def _lost(self, worker: Worker, *, dead: bool, kill: bool = False) -> None:
        """End ``worker``'s sessions (their pages learn it from the status route); drop it when ``dead``,
        else load it again once Ray has restarted it (``kill``: have Ray restart an unresponsive one first)."""
        now = time.monotonic()
        for peer_id in worker.peers:
            client, _ = self.owners.pop(peer_id, ("", ""))
            self.ended[peer_id] = (client, STOPPED, now)
        if worker.peers:
            log.warning("live: the worker on %s stopped; %d session(s) ended", worker.place.address, len(worker.peers))
        worker.peers.clear()
        worker.info = None
        if dead:
            if self.workers.get(worker.place.key) is worker:
                del self.workers[worker.place.key]
            if worker.loading is not None and not worker.loading.done() and worker.loading is not asyncio.current_task():
                worker.loading.cancel()
            try:
                self.ray.kill(worker.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        else:
            if kill:
                try:
                    self.ray.kill(worker.handle, no_restart=False)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            worker.last_ok = time.monotonic()
            self._start()  # ready() again: it answers once the restarted process has loaded the model

    def _forget_old(self) -> None:
        now = time.monotonic()
        if self.ended and (len(self.ended) > 4096 or min(t for _, _, t in self.ended.values()) < now - ENDED_KEEP_S):
            self.ended = {k: v for k, v in self.ended.items() if now - v[2] < ENDED_KEEP_S}
        if len(self._last_offer) > 4096:
            self._last_offer = {c: t for c, t in self._last_offer.items() if now - t < 60}

    async def _call(self, worker: Worker, method: str, *args):
        """``worker.method(*args)``: its value, or the refusal it answered as HTTPProblem; WorkerGone if it died."""
        from ray.exceptions import RayActorError

        try:
            reply = await getattr(worker.handle, method).remote(*args)
        except _died():
            self._lost(worker, dead=True)
            raise WorkerGone from None
        except RayActorError:  # unavailable for now (restarting, or unreachable): the pings decide whether it died
            raise HTTPProblem(503, UNREACHABLE, 5) from None
        if worker.info is not None and reply.get("incarnation") != worker.info["incarnation"]:
            self._lost(worker, dead=False)  # Ray restarted it before a ping noticed: its sessions are gone
            raise WorkerGone
        if "problem" in reply:
            status, message, retry_after = reply["problem"]
            raise HTTPProblem(status, message, retry_after)
        worker.last_ok = time.monotonic()
        return reply["ok"]

    # -- admission ---------------------------------------------------------------------------
    def _ready(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.info is not None]

    async def admit(self, client: str):
        """Take a place for ``client``'s offer before its body is read, or refuse: 429 busy or too fast,
        503 while the workers load or when none serves. Call :meth:`release` when done."""
        self._start()
        now = time.monotonic()
        last = self._last_offer.get(client)
        self._last_offer[client] = now
        if last is not None and now - last < self.offer_interval_s:
            raise HTTPProblem(429, "Too many attempts; wait a second and start again.", self.offer_interval_s)
        ready = self._ready()
        if not ready:
            if self.workers:
                raise HTTPProblem(503, LOADING, 10)
            if self.broken:
                raise HTTPProblem(503, f"The model could not be loaded on the cluster's machines. "
                                       f"{next(iter(self.broken.values()))}")
            raise HTTPProblem(503, NONE_SERVING, 30)
        if sum(self.pending.values()) >= self.max_pending:
            raise busy(10)
        if sum(w.info["capacity"] - len(w.peers) for w in ready) - sum(self.pending.values()) <= 0:
            raise busy(30)
        take_place(self.pending, client, sum(1 for c, _ in self.owners.values() if c == client), self.per_client)
        return self

    def release(self, client: str) -> None:
        release_place(self.pending, client)

    # -- signalling --------------------------------------------------------------------------
    async def offer(self, body, client: str, engine=None) -> dict:
        """Check an admitted offer here (consent first), then open it on the worker with the most free places;
        a worker that is full after all, or dies meanwhile, passes it to the next."""
        check_offer(body)
        tried: set[str] = set()
        refused: HTTPProblem | None = None
        while True:
            candidates = [w for w in self._ready() if w.place.key not in tried and w.free > 0]
            if not candidates:
                raise refused or busy(30)
            worker = max(candidates, key=lambda w: (w.free, -len(w.peers)))
            tried.add(worker.place.key)
            worker.opening += 1
            try:
                answer = await self._call(worker, "offer", body, client)
            except WorkerGone:
                continue
            except HTTPProblem as e:
                if e.status in (429, 503):  # full after all, not answering, or no model there: the next one
                    refused = e
                    continue
                raise
            finally:
                worker.opening -= 1
            if self.workers.get(worker.place.key) is not worker:  # it died as it answered
                continue
            worker.peers[answer["id"]] = time.monotonic()
            self.owners[answer["id"]] = (client, worker.place.key)
            return answer

    def peer(self, peer_id: str, client: str | None = None) -> Worker:
        """The worker holding session ``peer_id``, when it is ``client``'s: 404 for none (or another visitor's),
        410 for one that ended with its worker."""
        ended = self.ended.get(peer_id)
        if ended is not None and (client is None or ended[0] == client):
            raise HTTPProblem(410, ended[1])
        owner = self.owners.get(peer_id)
        worker = self.workers.get(owner[1]) if owner is not None else None
        if worker is None or (client is not None and owner[0] != client):
            raise HTTPProblem(404, GONE)
        return worker

    async def _forward(self, peer_id: str, client: str | None, method: str, *args):
        worker = self.peer(peer_id, client)
        try:
            return await self._call(worker, method, peer_id, *args)
        except WorkerGone:
            raise HTTPProblem(410, STOPPED) from None
        except HTTPProblem as e:
            if e.status == 404:  # it ended there meanwhile
                worker.peers.pop(peer_id, None)
                self.owners.pop(peer_id, None)
            raise

    async def say(self, peer_id: str, body, client: str | None = None) -> dict:
        return await self._forward(peer_id, client, "say", body, client)

    async def interrupt(self, peer_id: str, client: str | None = None) -> dict:
        return await self._forward(peer_id, client, "interrupt", client)

    async def status(self, peer_id: str, client: str | None = None) -> dict:
        return await self._forward(peer_id, client, "status", client)

    async def close(self, peer_id: str, notice: str = "") -> bool:
        """End session ``peer_id`` (its page is told ``notice``); False if there is no such session."""
        if self.ended.pop(peer_id, None) is not None:
            return True
        try:
            worker = self.peer(peer_id)
        except HTTPProblem:
            return False
        worker.peers.pop(peer_id, None)
        self.owners.pop(peer_id, None)
        try:
            return await self._call(worker, "close", peer_id, notice)
        except WorkerGone:
            self.ended.pop(peer_id, None)
            return True

    # -- for the operator (and the tests) ------------------------------------------------------
    def where(self, peer_id: str) -> dict | None:
        """What ``ready()`` said of the worker holding ``peer_id`` (node id, address, pid...), else None."""
        owner = self.owners.get(peer_id)
        worker = self.workers.get(owner[1]) if owner is not None else None
        return dict(worker.info) if worker is not None and worker.info is not None else None

    def describe(self) -> list[dict]:
        """Each worker: where it runs, whether it is ready, its capacity and sessions."""
        return [{"key": w.place.key, "node_id": w.place.node_id, "address": w.place.address, "ready": w.info is not None,
                 "capacity": w.info["capacity"] if w.info else 0, "how": w.info.get("how", "") if w.info else "",
                 "sessions": sorted(w.peers),
                 "pid": w.info["pid"] if w.info else None, "gpus": w.info.get("gpus", []) if w.info else [],
                 "gpu_share": w.place.num_gpus} for w in list(self.workers.values())]

    async def report(self) -> dict:
        """``GET /live/capacity`` on a cluster: sessions running and the limit, summed over the ready
        workers (each measures its own capacity at load and again as it serves), and each worker's."""
        workers = self.describe()
        ready = [w for w in workers if w["ready"]]
        return {"running": sum(len(w["sessions"]) for w in workers), "limit": sum(w["capacity"] for w in ready),
                "how": f"the sum over {len(ready)} ready worker{'s' if len(ready) != 1 else ''} of the cluster",
                "workers": [{"address": w["address"], "capacity": w["capacity"], "running": len(w["sessions"]),
                             "how": w["how"]} for w in ready]}

    # -- the end -----------------------------------------------------------------------------
    async def close_all(self) -> None:
        """End every session (the app is shutting down: each page is told on its channel)."""
        from ray.exceptions import RayError

        async def end(worker: Worker):
            try:
                await asyncio.wait_for(asyncio.wrap_future(worker.handle.shutdown.remote().future()), 15)
            except (RayError, asyncio.TimeoutError):
                pass

        await asyncio.gather(*(end(w) for w in self.workers.values()))
        for worker in self.workers.values():
            worker.peers.clear()
        self.owners.clear()

    async def aclose(self) -> None:
        """At the app's shutdown: end every session, stop the workers, leave the cluster (if this joined it)."""
        self._closed = True
        if self._monitor is not None:
            self._monitor.cancel()
        for worker in self.workers.values():
            if worker.loading is not None:
                worker.loading.cancel()
        await self.close_all()
        self._leave()

    def _leave(self) -> None:
        for worker in self.workers.values():
            try:
                self.ray.kill(worker.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers.clear()
        if self._joined:
            self.ray.shutdown()
            self._joined = False
