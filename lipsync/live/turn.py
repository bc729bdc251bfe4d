"""ICE for the live avatar: the STUN and TURN servers, and their credentials, for the page and for the server.

Signalling rides on the app's own HTTP(S); the media flows over UDP between the
visitor's browser and the server. On one machine or a LAN that works as is. Behind
NAT, or a proxy that forwards only HTTP (a Hugging Face Space), both sides need a
TURN relay. Everything comes from the environment, read on every call, so each
visitor gets fresh credentials:

* ``LIPSYNC_TURN_URLS``: comma-separated ``turn:``/``turns:`` URLs, e.g.
  ``turn:turn.example.org:3478?transport=udp,turns:turn.example.org:5349?transport=tcp``.
* ``LIPSYNC_TURN_SECRET`` (preferred): the shared secret of a TURN server that checks the
  TURN REST convention (coturn's ``use-auth-secret`` with ``static-auth-secret=<the same
  secret>``). Each call makes a username ``<unix expiry>:lipsync`` and a credential
  ``base64(HMAC-SHA1(secret, username))`` valid for ``LIPSYNC_TURN_TTL`` seconds (default
  3600). The secret stays on the server: a visitor sees only credentials that expire.
* ``LIPSYNC_TURN_USERNAME`` and ``LIPSYNC_TURN_CREDENTIAL``: static credentials (a hosted
  TURN service's). They are **public**: anyone who loads the page can read them and relay
  through that account. Ignored when ``LIPSYNC_TURN_SECRET`` is set.
* ``LIPSYNC_STUN_URLS``: comma-separated ``stun:``/``stuns:`` URLs.
* ``LIPSYNC_ICE_POLICY``: ``all`` (default) or ``relay``, which sends every path through
  TURN on both sides (the page's ``iceTransportPolicy`` and the server's).
* ``LIPSYNC_ICE_ADDRESSES``: comma-separated IP addresses of this machine's own interfaces that
  the server's peers offer as host candidates, e.g. the address of the network the visitors
  reach on a machine with several (aioice offers every interface's address but loopback
  otherwise). ``127.0.0.1`` keeps a test's media on this machine. An address behind NAT is
  not one of them: there STUN (a reflexive candidate) or TURN (a relayed one) is needed.

Bad settings never break the page: a malformed URL is left out; TURN URLs with no
credential are left out (Chromium refuses to build an RTCPeerConnection around a TURN
server with an empty username or password, so the Live tab could not start at all);
a TTL that is not a positive whole number leaves the TURN servers out; an unknown
policy falls back to ``all``. Each such problem is logged once per process, as a
warning that names the variable to set. :func:`check` raises
:class:`~lipsync.errors.InputError` for the same problems, for a launch that should
fail fast.

The server's peer connections (aiortc) use the same servers, with credentials made
when each one is built; aioice takes only the first STUN URL and the first TURN URL
it can use (``turn:`` over udp or tcp, ``turns:`` over tcp).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Mapping

from ..errors import InputError

log = logging.getLogger("lipsync")

__all__ = [
    "DEFAULT_TTL_S",
    "REST_USER",
    "check",
    "host_addresses",
    "ice_servers",
    "ice_transport_policy",
    "rest_credentials",
    "rtc_configuration",
    "use_host_addresses",
]

DEFAULT_TTL_S = 3600  #: the lifetime of a visitor's TURN credentials, unless ``LIPSYNC_TURN_TTL`` says otherwise
REST_USER = "lipsync"  #: the name after the expiry in a TURN REST username
POLICIES = ("all", "relay")

_URL = re.compile(
    r"(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)
_EXAMPLES = {"stun": "stun:stun.example.org:3478", "turn": "turn:turn.example.org:3478?transport=udp"}
_told: set[str] = set()
_told_lock = threading.Lock()


def rest_credentials(secret: str, ttl_s: int = DEFAULT_TTL_S, *, now: float | None = None,
                     user: str = REST_USER) -> tuple[str, str]:
    """Short-lived TURN credentials by the TURN REST convention (what coturn's ``use-auth-secret`` checks).

    Args:
        secret: the TURN server's ``static-auth-secret``.
        ttl_s: how long the credentials are valid, in seconds (> 0).
        now: the current Unix time (default: the clock).
        user: the name after the expiry.

    Returns:
        ``(username, credential)``: ``"<now + ttl_s>:<user>"`` and base64(HMAC-SHA1(secret, username)).

    Raises:
        ValueError: ``ttl_s`` is not a positive integer, or ``secret`` is empty.
    """
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive whole number of seconds, not {ttl_s!r}.")
    if not secret:
        raise ValueError("The TURN secret is empty.")
    username = f"{int(time.time() if now is None else now) + ttl_s}:{user}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode("ascii")


def _urls(env: Mapping[str, str], var: str, kind: str, problems: list[str]) -> list[str]:
    """The well-formed ``kind:``/``kinds:`` URLs of ``var``; each other one is a problem and left out."""
    good = []
    for url in (u.strip() for u in env.get(var, "").split(",")):
        if not url:
            continue
        m = _URL.fullmatch(url)
        if (m is None or m["scheme"].rstrip("s") != kind or (m["port"] and not 0 < int(m["port"]) < 65536)
                or (kind == "stun" and m["transport"])):
            problems.append(f"{var} has {url!r}, which is not a {kind}: or {kind}s: URL (write e.g. "
                            f"{_EXAMPLES[kind]}); it is left out.")
        else:
            good.append(url)
    return good


def _ttl(env: Mapping[str, str], problems: list[str]) -> int | None:
    raw = env.get("LIPSYNC_TURN_TTL", "").strip()
    if not raw:
        return DEFAULT_TTL_S
    if re.fullmatch(r"[0-9]+", raw) and int(raw) > 0:
        return int(raw)
    problems.append(f"LIPSYNC_TURN_TTL={raw!r} is not a positive whole number of seconds: set it to e.g. 3600 "
                    "(an hour), or unset it for that default. The TURN servers are left out until then.")
    return None


def _turn(env: Mapping[str, str], now: float | None, problems: list[str]) -> dict | None:
    urls = _urls(env, "LIPSYNC_TURN_URLS", "turn", problems)
    if not urls:
        return None
    secret = env.get("LIPSYNC_TURN_SECRET", "")
    username, credential = env.get("LIPSYNC_TURN_USERNAME", ""), env.get("LIPSYNC_TURN_CREDENTIAL", "")
    if secret:
        if username or credential:
            problems.append("LIPSYNC_TURN_USERNAME and LIPSYNC_TURN_CREDENTIAL are ignored while LIPSYNC_TURN_SECRET "
                            "is set (its short-lived credentials are used); unset one or the other.")
        ttl = _ttl(env, problems)
        if ttl is None:
            return None
        username, credential = rest_credentials(secret, ttl, now=now)
    elif not (username and credential):
        problems.append("LIPSYNC_TURN_URLS is set without a credential, and browsers refuse a TURN server without "
                        "one: set LIPSYNC_TURN_SECRET (the static-auth-secret of a coturn run with use-auth-secret), "
                        "or both LIPSYNC_TURN_USERNAME and LIPSYNC_TURN_CREDENTIAL. The TURN servers are left out "
                        "until then.")
        return None
    return {"urls": urls, "username": username, "credential": credential}


def _read(env: Mapping[str, str] | None, now: float | None = None) -> tuple[list[dict], str, list[str]]:
    """``(servers, policy, problems)`` from the environment; every problem's piece is already left out."""
    env = os.environ if env is None else env
    problems: list[str] = []
    servers = []
    stun = _urls(env, "LIPSYNC_STUN_URLS", "stun", problems)
    if stun:
        servers.append({"urls": stun})
    turn = _turn(env, now, problems)
    if turn is not None:
        servers.append(turn)
    raw = env.get("LIPSYNC_ICE_POLICY", "").strip()
    policy = raw.lower() or "all"
    if policy not in POLICIES:
        problems.append(f"LIPSYNC_ICE_POLICY={raw!r} is neither 'all' nor 'relay': set one of them (relay sends "
                        "every path through TURN). 'all' is used until then.")
        policy = "all"
    _addresses(env, problems)
    if policy == "relay" and turn is None:
        problems.append("LIPSYNC_ICE_POLICY is 'relay' but there is no usable TURN server, so no visitor can "
                        "connect: set LIPSYNC_TURN_URLS and LIPSYNC_TURN_SECRET, or unset LIPSYNC_ICE_POLICY.")
    return servers, policy, problems


def _addresses(env: Mapping[str, str], problems: list[str]) -> list[str] | None:
    """The addresses of ``LIPSYNC_ICE_ADDRESSES`` (None: unset, aioice's own choice); each malformed one is left out."""
    import ipaddress

    raw = env.get("LIPSYNC_ICE_ADDRESSES", "")
    if not raw.strip():
        return None
    good = []
    for text in (a.strip() for a in raw.split(",")):
        if not text:
            continue
        try:
            good.append(str(ipaddress.ip_address(text)))
        except ValueError:
            problems.append(f"LIPSYNC_ICE_ADDRESSES has {text!r}, which is not an IP address (write e.g. "
                            "192.168.1.20, or 127.0.0.1 for this machine only); it is left out.")
    if not good:
        problems.append("LIPSYNC_ICE_ADDRESSES names no usable address; the server offers every interface's "
                        "address until it does.")
        return None
    return good


def _tell(problems: list[str]) -> None:
    """Log each problem once per process (the config route runs once a visit)."""
    for problem in problems:
        with _told_lock:
            if problem in _told:
                continue
            _told.add(problem)
        log.warning("live: %s", problem)


def ice_servers(environ: Mapping[str, str] | None = None, *, now: float | None = None) -> list[dict]:
    """The ICE servers, as the browser's RTCPeerConnection takes them; fresh TURN credentials on every call.

    Args:
        environ: the settings (default ``os.environ``).
        now: the Unix time the credentials' lifetime starts at (default: the clock).

    Returns:
        ``[{"urls": [stun...]}, {"urls": [turn...], "username", "credential"}]``, either left out when not set
        or unusable (logged once).
    """
    servers, _, problems = _read(environ, now)
    _tell(problems)
    return servers


def ice_transport_policy(environ: Mapping[str, str] | None = None) -> str:
    """``"all"`` or ``"relay"`` (``LIPSYNC_ICE_POLICY``), for the page's and the server's peer connections."""
    _, policy, problems = _read(environ)
    _tell(problems)
    return policy


def host_addresses(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The host addresses the server's peers offer (``LIPSYNC_ICE_ADDRESSES``), or None for aioice's own choice."""
    problems: list[str] = []
    found = _addresses(os.environ if environ is None else environ, problems)
    _tell(problems)
    return found


_chosen_lock = threading.Lock()


def use_host_addresses() -> None:
    """Make aioice offer :func:`host_addresses` (read from the environment at each gathering) where it is set.

    aioice takes no list of addresses, so its one lookup (``aioice.ice.get_host_addresses``) is
    wrapped, once per process; with the variable unset the wrapper hands over to the original.
    """
    from aioice import ice

    with _chosen_lock:
        if getattr(ice.get_host_addresses, "lipsync_original", None) is not None:
            return
        original = ice.get_host_addresses

        def chosen(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            addresses = host_addresses()
            if addresses is None:
                return original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
            return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

        chosen.lipsync_original = original
        ice.get_host_addresses = chosen


def rtc_configuration(environ: Mapping[str, str] | None = None):
    """The server's ``aiortc.RTCConfiguration``: the same servers and policy, with credentials made now
    (and its peers offer the host addresses of ``LIPSYNC_ICE_ADDRESSES``, where that is set)."""
    from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

    use_host_addresses()
    servers, policy, problems = _read(environ)
    _tell(problems)
    return RTCConfiguration(iceServers=[RTCIceServer(**s) for s in servers],
                            iceTransportPolicy=RTCIceTransportPolicy(policy))


def check(environ: Mapping[str, str] | None = None) -> None:
    """Raise if the ICE settings have a problem, for a launch that should fail fast (the routes only log it).

    Raises:
        InputError: naming each variable to set, and how.
    """
    _, _, problems = _read(environ)
    if problems:
        raise InputError(" ".join(problems))
