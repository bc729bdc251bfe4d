"""The live routes on the app's own FastAPI server (see :mod:`lipsync.live.web` for the list).

Each route checks what costs least first: the page that sends it (origin), the
format (JSON only), admission (before an offer's body is read), then the body
(bounded in size and depth). Every refusal is JSON ``{"error": plain message}``
with its status; 429 carries ``Retry-After``. Anything unexpected is logged with
its traceback and answered with a plain 500 line.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from starlette.requests import Request  # FastAPI reads the routes' annotations from this module

from ..turn import ice_servers, ice_transport_policy
from .http import HTTPProblem, check_origin, client_address, read_json, require_json
from .server import KEEPALIVE_S, MAX_BODY_BYTES, MAX_SAY_BYTES, LiveServer, public

log = logging.getLogger("lipsync")

__all__ = ["STATIC", "install"]

STATIC = Path(__file__).resolve().parent / "static"  #: the page's HTML and script
INTERNAL = "Something went wrong on our side with the live session, and it has been logged. Please start again."


def install(app, get_engine, *, image=None, prefix: str = "/live", max_sessions: int | None = None,
            ray: str | None = None, **options) -> LiveServer:
    """Add the live routes to a FastAPI app (before it starts serving). Returns the :class:`LiveServer`.

    ``options`` go to :class:`LiveServer` (``max_s``, ``per_client``, ``offer_interval_s``, ``max_pending``).
    With ``ray`` (a Ray cluster's head, ``HOST:PORT``) the sessions run on the cluster's workers instead
    (:class:`~lipsync.live.web.remote.RemoteLive`, which also takes ``settings``, ``cpus_per_worker``,
    ``workers_per_gpu`` and ``dead_after_s``; ``max_sessions`` is then each worker's); the routes and their
    checks stay here.
    """
    from fastapi.responses import FileResponse, JSONResponse

    if ray:
        from .remote import RemoteLive

        server = RemoteLive(ray, image=image, max_sessions=max_sessions, **options)
    else:
        server = LiveServer(get_engine, image=image, max_sessions=max_sessions, **options)

    async def guarded(call):
        try:
            return JSONResponse(await call())
        except HTTPProblem as e:
            headers = None
            if e.status == 429 or (e.status == 503 and e.retry_after):
                headers = {"Retry-After": str(max(1, math.ceil(e.retry_after or 30)))}
            return JSONResponse({"error": public(e.message)}, status_code=e.status, headers=headers)
        except Exception:  # noqa: BLE001 - the visitor gets a plain line; the log gets the traceback
            log.exception("live: a request failed")
            return JSONResponse({"error": INTERNAL}, status_code=500)

    async def config() -> JSONResponse:
        return JSONResponse({"iceServers": ice_servers(), "iceTransportPolicy": ice_transport_policy(),
                             "keepalive_s": KEEPALIVE_S})

    async def capacity() -> JSONResponse:
        return await guarded(server.report)

    async def script():
        return FileResponse(STATIC / "live.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    async def offer(request: Request) -> JSONResponse:
        async def run():
            check_origin(request.headers)
            require_json(request.headers)
            client = client_address(request)
            engine = await server.admit(client)  # before the body: a busy server reads nothing
            try:
                return await server.offer(await read_json(request, MAX_BODY_BYTES), client, engine)
            finally:
                server.release(client)

        return await guarded(run)

    async def say(peer_id: str, request: Request) -> JSONResponse:
        async def run():
            check_origin(request.headers)
            require_json(request.headers)
            client = client_address(request)
            server.peer(peer_id, client)  # before the body is read
            return await server.say(peer_id, await read_json(request, MAX_SAY_BYTES), client)

        return await guarded(run)

    async def interrupt(peer_id: str, request: Request) -> JSONResponse:
        async def run():
            check_origin(request.headers)
            return await server.interrupt(peer_id, client_address(request))

        return await guarded(run)

    async def status(peer_id: str, request: Request) -> JSONResponse:
        return await guarded(lambda: server.status(peer_id, client_address(request)))

    async def delete(peer_id: str, request: Request) -> JSONResponse:
        async def run():
            check_origin(request.headers)
            server.peer(peer_id, client_address(request))  # only the visitor who opened it may end it
            if not await server.close(peer_id):
                raise HTTPProblem(404, "No such live session (it ended or never existed).")
            return {"closed": peer_id}

        return await guarded(run)

    app.add_api_route(f"{prefix}/config", config, methods=["GET"])
    app.add_api_route(f"{prefix}/static/live.js", script, methods=["GET"])
    app.add_api_route(f"{prefix}/capacity", capacity, methods=["GET"])
    app.add_api_route(f"{prefix}/offer", offer, methods=["POST"])
    app.add_api_route(f"{prefix}/{{peer_id}}/say", say, methods=["POST"])
    app.add_api_route(f"{prefix}/{{peer_id}}/interrupt", interrupt, methods=["POST"])
    app.add_api_route(f"{prefix}/{{peer_id}}", status, methods=["GET"])
    app.add_api_route(f"{prefix}/{{peer_id}}", delete, methods=["DELETE"])
    app.state.lipsync_live = server
    return server
