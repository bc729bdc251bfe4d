"""A worker on a Ray cluster: one loaded engine, the live sessions placed on its machine, and clips.

The app (:class:`~lipsync.live.web.remote.RemoteLive`) keeps the routes and their checks; it
hands each admitted offer to a worker, which opens the session and answers the SDP itself,
with its own machine's ICE candidates: the visitor's media goes straight to this machine.
The worker is a :class:`~lipsync.live.web.server.LiveServer` inside an async Ray actor, so
its sessions end as they do on one machine (time limit, a quiet page, the visitor's stop),
with the page told why on the data channel.

Each session call answers ``{"ok": value}`` or ``{"problem": [status, message, retry_after]}`` (the
refusal the route passes on), so a plain refusal never travels as a Ray error.

The app's Generate tab (``app.py --ray``) makes its clips here too, on the same engine
(:mod:`lipsync.cluster.clips`): the engine's scheduler serves the live sessions' frames first.

Settings read on the worker's machine: the engine's (``LIPSYNC_CHECKPOINT``, ``LIPSYNC_DEVICE``...,
unless the app sends its own), ``LIPSYNC_LIVE_SESSIONS`` (its capacity, unless the app gives one)
and ``LIPSYNC_ICE_ADDRESSES`` (the host addresses its peers offer). The app sends the ICE
servers' settings (STUN, TURN, policy), so the page and every worker use the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket

from ...batch.execute import EngineSettings, make_engine, set_threads
from ...cluster.clips import ClipJobs
from .http import HTTPProblem
from .server import LiveServer

log = logging.getLogger("lipsync")

__all__ = ["ICE_VARS", "LiveWorker"]

#: the ICE servers' settings the app hands its workers (the page's and the workers' must agree)
ICE_VARS = ("LIPSYNC_STUN_URLS", "LIPSYNC_TURN_URLS", "LIPSYNC_TURN_SECRET", "LIPSYNC_TURN_TTL",
            "LIPSYNC_TURN_USERNAME", "LIPSYNC_TURN_CREDENTIAL", "LIPSYNC_ICE_POLICY")


async def _answer(call, incarnation: str) -> dict:
    """A call's reply, with the worker's incarnation (a restarted worker's "no such session" is a lost one)."""
    try:
        return {"ok": await call, "incarnation": incarnation}
    except HTTPProblem as e:
        return {"problem": [e.status, e.message, e.retry_after], "incarnation": incarnation}


class LiveWorker:
    """The Ray actor (async: aiortc's peers live on its event loop).

    Args:
        settings: how to build the engine (None: the worker machine's environment, then ``auto``).
        capacity: sessions at once here (default: ``LIPSYNC_LIVE_SESSIONS`` on this machine, else what
            its network holds, measured at load as on one machine).
        max_side, max_s: a session's picture size and longest life (see :class:`LiveServer`).
        image: the default portrait's bytes (None: the package's example).
        env: environment to set first (the app's ICE server settings, :data:`ICE_VARS`).
        threads: compute threads for the network (the CPUs the worker reserved).
        cores, gpu_share: this worker's share of its machine's CPU cores and of its GPU, for its capacity
            on a GPU (see :class:`~lipsync.live.web.server.LiveServer`).
    """

    def __init__(self, settings: EngineSettings | None = None, *, capacity: int | None = None, max_side: int = 512,
                 max_s: float | None = None, image: bytes | None = None, env: dict | None = None, threads: int = 1,
                 cores: float | None = None, gpu_share: float = 1.0):
        for key in ICE_VARS:  # the app's ICE settings replace this machine's, set or not
            os.environ.pop(key, None)
        os.environ.update(env or {})
        set_threads(threads)
        self.engine = make_engine(settings or EngineSettings(
            device=os.environ.get("LIPSYNC_DEVICE") or "auto", precision=os.environ.get("LIPSYNC_PRECISION") or "auto"))
        # admission, rates and visitors are the app's to count; this server only holds the sessions
        self.server = LiveServer(lambda: self.engine, image=image, max_sessions=capacity, max_side=max_side,
                                 max_s=max_s, per_client=2**31, offer_interval_s=0.0, max_pending=2**31,
                                 cores=cores, gpu_share=gpu_share)
        self.clips = ClipJobs(self.engine)  #: the Generate tab's clips, on the same engine (live frames first)
        self.incarnation = secrets.token_hex(8)  #: a new one after each restart: its sessions are gone
        self._ready = False  # ready() has loaded the model and measured: the capacity may be read

    async def ready(self) -> dict:
        """Load the model (a LipSyncError here, such as missing weights, is raised to the app); then what
        the app needs to place sessions here."""
        import ray

        await asyncio.to_thread(self.engine.load)
        await self.server.measured(self.engine)  # ``auto``: what this machine's network holds
        context = ray.get_runtime_context()
        self._ready = True
        return {
            "incarnation": self.incarnation,
            **self._capacity(),
            "node_id": context.get_node_id(),
            "address": ray.util.get_node_ip_address(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "gpus": [str(g) for g in ray.get_gpu_ids()],  # the GPU(s) Ray gave it (shared where several per GPU)
            "resources": context.get_assigned_resources(),  # what it holds of its node: CPU, GPU (a share)...
            "engine": self.engine.generator.description,
        }

    async def ping(self) -> dict:
        """Alive: this incarnation, the sessions it holds (the ones it ended itself are gone from it) and, once
        :meth:`ready` has loaded the model, its capacity now (measured again as its sessions run: their own
        work counts once they have). Never loads anything: a restarted worker answers at once."""
        reply = {"incarnation": self.incarnation, "sessions": list(self.server.peers)}
        if self._ready:
            reply.update(self._capacity())
        return reply

    def _capacity(self) -> dict:
        """Its limit now, and what bound it (the network, its process, its cores; or a fixed number)."""
        cap = self.server.capacity(self.engine)
        return {"capacity": cap["limit"], "how": cap["how"]}

    async def offer(self, body: dict, client: str) -> dict:
        async def run():
            engine = await self.server.admit(client)  # the capacity, counted here too
            try:
                return await self.server.offer(body, client, engine)
            finally:
                self.server.release(client)

        return await _answer(run(), self.incarnation)

    async def say(self, peer_id: str, body, client: str) -> dict:
        return await _answer(self.server.say(peer_id, body, client), self.incarnation)

    async def interrupt(self, peer_id: str, client: str) -> dict:
        return await _answer(self.server.interrupt(peer_id, client), self.incarnation)

    async def status(self, peer_id: str, client: str) -> dict:
        return await _answer(self.server.status(peer_id, client), self.incarnation)

    async def close(self, peer_id: str, notice: str = "") -> dict:
        return await _answer(self.server.close(peer_id, notice), self.incarnation)

    # -- clips (the app's Generate tab: :class:`~lipsync.cluster.clips.ClusterClips`) ------------------
    async def clip(self, job_id: str, request, files: dict):
        """Make a clip here, streaming its progress, preview segments and result (see :meth:`ClipJobs.make`)."""
        async for item in self.clips.make(job_id, request, files):
            yield item

    async def cancel_clip(self, job_id: str) -> bool:
        return self.clips.cancel(job_id)

    async def package_clip(self, job_id: str) -> dict:
        return await self.clips.package(job_id)

    async def discard_clip(self, job_id: str) -> None:
        self.clips.discard(job_id)

    async def shutdown(self) -> dict:
        """End every session (the app is shutting down: the pages are told), stop every clip, and stop the
        server's threads."""
        await asyncio.to_thread(self.clips.close)
        return await _answer(self.server.aclose(), self.incarnation)
