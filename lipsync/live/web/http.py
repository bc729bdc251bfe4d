"""The live routes' request checks: who asks, from which page, in what format, how much.

Each check raises :class:`HTTPProblem` (a status and a plain message for the
visitor). They run before anything is decoded, in the order that costs least:
headers first (:func:`check_origin`, :func:`require_json`), the body last
(:func:`read_json`, bounded in size and depth).
"""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import urlsplit

__all__ = [
    "HTTPProblem",
    "MAX_DEPTH",
    "allowed_origins",
    "check_origin",
    "client_address",
    "read_json",
    "require_json",
]

MAX_DEPTH = 4  #: the deepest JSON a route takes (its bodies are flat objects)
READ_S = 30.0  #: a body must arrive within this (a 27 MB video on a slow line takes about 20 s at 10 Mbit/s)


class HTTPProblem(Exception):
    """A refusal: ``status`` and a message written for the visitor (no paths, no Python names)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def allowed_origins() -> set[str]:
    """``$LIPSYNC_LIVE_ORIGINS``: other pages (``https://host[:port]``, comma-separated, or ``*``) that may start sessions."""
    return {o.strip().rstrip("/").lower() for o in os.environ.get("LIPSYNC_LIVE_ORIGINS", "").split(",") if o.strip()}


def check_origin(headers) -> None:
    """Refuse (403) a browser request sent by another site's page.

    A browser names the page that sends a request in ``Origin``. The page that
    may use the routes is the one this server (or the proxy in front of it:
    ``X-Forwarded-Host``) serves; others only when ``$LIPSYNC_LIVE_ORIGINS`` lists
    them. Requests without ``Origin`` (scripts, curl, aiortc clients) pass.
    """
    origin = headers.get("origin")
    if origin is None:
        return
    origin = origin.strip().rstrip("/").lower()
    allowed = allowed_origins()
    if "*" in allowed or origin in allowed:
        return
    hosts = f'{headers.get("host", "")},{headers.get("x-forwarded-host", "")}'  # a proxy may list several
    own = {h.strip().lower() for h in hosts.split(",") if h.strip()}
    netloc = urlsplit(origin).netloc if "://" in origin else ""
    if netloc and netloc in own:
        return
    raise HTTPProblem(403, "Live sessions can only be started from this app's own page.")


def require_json(headers) -> None:
    """Refuse (415) a body that is not declared as JSON: a plain form or ``text/plain`` POST, which any
    site's page can make a visitor's browser send without asking."""
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise HTTPProblem(415, "Send the request as JSON (Content-Type: application/json).")


def client_address(request) -> str:
    """The visitor's address: the connection's, or behind a proxy that says so (a Space, or
    ``$LIPSYNC_TRUST_PROXY=1``) the first address of ``X-Forwarded-For``."""
    trust = os.environ.get("LIPSYNC_TRUST_PROXY", "").strip().lower() in ("1", "true", "yes") or bool(
        os.environ.get("SPACE_ID")
    )
    forwarded = request.headers.get("x-forwarded-for", "")
    if trust and forwarded.strip():
        return forwarded.split(",", 1)[0].strip()
    return request.client.host if request.client else "unknown"


def _depth(value, limit: int) -> int:
    """The nesting depth of a decoded JSON value, counting no further than ``limit + 1``."""
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return 0
    if limit <= 0:
        return 1
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


async def read_json(request, limit: int):
    """The request's JSON body: 413 past ``limit`` bytes (declared or read), 400 for anything but
    JSON nested at most :data:`MAX_DEPTH` deep."""
    too_large = HTTPProblem(413, f"The request is larger than {limit // 2**20} MB; send a smaller photo or video.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0  # joined once at the end: a growing buffer would leave the heap littered with its old copies
    try:
        async with asyncio.timeout(READ_S):  # a body dribbled in slowly would hold an offer's place
            async for chunk in request.stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    chunks.clear()
                    raise too_large
    except TimeoutError:
        raise HTTPProblem(408, "The request took too long to arrive; try again on a faster connection.") from None
    raw = b"".join(chunks)
    chunks.clear()
    try:
        body = json.loads(raw)
    except RecursionError:  # the C decoder recurses once per nesting level
        raise HTTPProblem(400, "The request's JSON is nested too deeply.") from None
    except ValueError:
        raise HTTPProblem(400, "The request body must be JSON.") from None
    finally:
        del raw
    if _depth(body, MAX_DEPTH) > MAX_DEPTH:
        raise HTTPProblem(400, "The request's JSON is nested too deeply.")
    return body
