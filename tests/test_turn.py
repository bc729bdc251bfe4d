"""ICE settings (lipsync.live.turn): TURN REST credentials, static ones, bad values.

Chromium through a real coturn with these credentials is in tests/test_live_browser.py (its sessions all
go through the relay), so one Chromium serves both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from pathlib import Path

import pytest

from lipsync.errors import InputError
from lipsync.live import turn


VARS = ("LIPSYNC_STUN_URLS", "LIPSYNC_TURN_URLS", "LIPSYNC_TURN_SECRET", "LIPSYNC_TURN_TTL",
        "LIPSYNC_TURN_USERNAME", "LIPSYNC_TURN_CREDENTIAL", "LIPSYNC_ICE_POLICY", "LIPSYNC_ICE_ADDRESSES")


@pytest.fixture
def env(monkeypatch):
    """The ICE variables, all unset; ``env(NAME=value, ...)`` sets some."""
    for var in VARS:
        monkeypatch.delenv(var, raising=False)

    def set_(**values):
        for k, v in values.items():
            monkeypatch.setenv(k, v)

    return set_


def unique_turn_url() -> str:
    """A TURN URL no other test uses: each distinct problem is logged once per process."""
    return f"turn:t{uuid.uuid4().hex[:12]}.example.org:3478"


def hmac_sha1_b64(secret: str, message: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha1).digest()).decode()


def config_route():
    """A client of the live routes (the config route needs no engine)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lipsync.live.web import install

    app = FastAPI()
    install(app, lambda: None)
    return TestClient(app)


# ----------------------------------------------------------------------------- settings


def test_rest_credentials_match_an_independent_hmac_and_expire_after_the_ttl():
    # openssl: printf %s 1700003600:lipsync | openssl dgst -sha1 -hmac 'correct horse battery staple' -binary | base64
    assert turn.rest_credentials("correct horse battery staple", 3600, now=1_700_000_000.7) == (
        "1700003600:lipsync", "HQ0xiAuIMBQuAwJCH0Opq02tTFA=")
    user, credential = turn.rest_credentials("s3cret", 600, now=1_800_000_000)
    assert (user, credential) == ("1800000600:lipsync", hmac_sha1_b64("s3cret", "1800000600:lipsync"))
    for bad in (0, -5, 1.5, "60", True):
        with pytest.raises(ValueError, match="ttl_s"):
            turn.rest_credentials("s3cret", bad)


def test_the_config_route_gives_fresh_expiring_credentials_and_never_the_secret(env, caplog):
    secret = "never-" + secrets.token_hex(16)
    env(LIPSYNC_TURN_URLS=f"{unique_turn_url()}?transport=udp, turns:turn.example.org:5349?transport=tcp",
        LIPSYNC_TURN_SECRET=secret, LIPSYNC_TURN_TTL="900", LIPSYNC_STUN_URLS="stun:stun.example.org:3478",
        LIPSYNC_TURN_USERNAME="ignored")  # a conflict, so that a warning is logged too
    caplog.set_level(logging.DEBUG, logger="lipsync")
    with config_route() as c:
        before = int(time.time())
        r = c.get("/live/config")
        after = int(time.time())
        env(LIPSYNC_TURN_TTL="60")  # read on every call: the next visitor's credentials are new ones
        second = c.get("/live/config").json()
    assert r.status_code == 200 and secret not in r.text and secret not in caplog.text
    cfg = r.json()
    assert cfg["iceTransportPolicy"] == "all"
    stun, relay = cfg["iceServers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    expiry, name = relay["username"].split(":")
    assert name == "lipsync" and before + 900 <= int(expiry) <= after + 900
    assert relay["credential"] == hmac_sha1_b64(secret, relay["username"])
    assert second["iceServers"][1]["username"] != relay["username"]
    assert "LIPSYNC_TURN_USERNAME and LIPSYNC_TURN_CREDENTIAL are ignored" in caplog.text


def test_static_credentials_are_passed_on_as_they_are(env):
    url = unique_turn_url()
    env(LIPSYNC_TURN_URLS=url, LIPSYNC_TURN_USERNAME="user", LIPSYNC_TURN_CREDENTIAL="pass")
    assert turn.ice_servers() == [{"urls": [url], "username": "user", "credential": "pass"}]
    turn.check()


def test_turn_urls_without_a_credential_are_left_out_with_one_warning(env, caplog):
    caplog.set_level(logging.WARNING, logger="lipsync")
    env(LIPSYNC_TURN_URLS=unique_turn_url(), LIPSYNC_STUN_URLS="stun:stun.example.org:3478")
    with config_route() as c:
        for _ in range(3):  # three visitors
            r = c.get("/live/config")
            assert r.status_code == 200
            assert r.json()["iceServers"] == [{"urls": ["stun:stun.example.org:3478"]}]  # STUN stays
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "LIPSYNC_TURN_SECRET" in warning.getMessage() and "LIPSYNC_TURN_CREDENTIAL" in warning.getMessage()
    env(LIPSYNC_TURN_URLS=unique_turn_url(), LIPSYNC_TURN_USERNAME="only-a-name")  # half a pair is none
    assert turn.ice_servers() == [{"urls": ["stun:stun.example.org:3478"]}]
    with pytest.raises(InputError, match="LIPSYNC_TURN_SECRET"):
        turn.check()


@pytest.mark.parametrize("ttl", ["soon", "0", "-5", "1.5", "²"])
def test_a_bad_ttl_is_refused_by_check_and_leaves_turn_out_of_the_route(env, caplog, ttl):
    caplog.set_level(logging.WARNING, logger="lipsync")
    secret = secrets.token_hex(8)
    env(LIPSYNC_TURN_URLS=unique_turn_url(), LIPSYNC_TURN_SECRET=secret, LIPSYNC_TURN_TTL=ttl)
    with pytest.raises(InputError, match=r"LIPSYNC_TURN_TTL=.* is not a positive whole number of seconds: set it"):
        turn.check()
    with config_route() as c:
        r = c.get("/live/config")
    assert r.status_code == 200 and r.json()["iceServers"] == []
    assert "LIPSYNC_TURN_TTL" in caplog.text and secret not in caplog.text


def test_a_malformed_url_is_left_out_and_the_good_ones_kept(env, caplog):
    caplog.set_level(logging.WARNING, logger="lipsync")
    good = unique_turn_url()
    bad = [f"{good[5:]}", "http://turn.example.org", "turn:", "turn:h.example.org:99999", "stun:s.example.org"]
    env(LIPSYNC_TURN_URLS=",".join([*bad, good]), LIPSYNC_TURN_USERNAME="u", LIPSYNC_TURN_CREDENTIAL="p",
        LIPSYNC_STUN_URLS="stun:ok.example.org, turn:wrong-list.example.org, stun:s.example.org?transport=udp")
    assert turn.ice_servers() == [{"urls": ["stun:ok.example.org"]},
                                  {"urls": [good], "username": "u", "credential": "p"}]
    for url in bad:
        assert f"LIPSYNC_TURN_URLS has {url!r}, which is not a turn: or turns: URL" in caplog.text
    with pytest.raises(InputError, match="LIPSYNC_STUN_URLS has 'turn:wrong-list.example.org'"):
        turn.check()


def test_the_policy_reaches_the_page_and_the_server(env, caplog):
    pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")
    from aiortc import RTCIceTransportPolicy

    caplog.set_level(logging.WARNING, logger="lipsync")
    url = unique_turn_url()
    env(LIPSYNC_TURN_URLS=url, LIPSYNC_TURN_SECRET="s", LIPSYNC_ICE_POLICY="relay")
    assert turn.ice_transport_policy() == "relay"
    first, second = turn.rtc_configuration(), turn.rtc_configuration()
    assert first.iceTransportPolicy == RTCIceTransportPolicy.RELAY
    (server,) = first.iceServers
    assert server.urls == [url] and server.username.endswith(":lipsync")
    assert server.credential == hmac_sha1_b64("s", server.username)
    assert second.iceServers[0].urls == [url]
    env(LIPSYNC_ICE_POLICY="relay-" + uuid.uuid4().hex[:6])
    assert turn.ice_transport_policy() == "all" and "neither 'all' nor 'relay'" in caplog.text
    env(LIPSYNC_ICE_POLICY="relay", LIPSYNC_TURN_URLS="")
    with pytest.raises(InputError, match="no usable TURN server"):
        turn.check()


def test_the_server_offers_only_the_host_addresses_it_is_told(env, caplog):
    """LIPSYNC_ICE_ADDRESSES (a Ray worker's own address, or loopback in tests): the answer's host candidates are
    those addresses and no other; a malformed one is left out with a warning and refused by check()."""
    pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")
    import asyncio
    import re

    from aiortc import RTCPeerConnection

    caplog.set_level(logging.WARNING, logger="lipsync")

    async def hosts() -> set[str]:
        pc = RTCPeerConnection(turn.rtc_configuration())
        try:
            pc.addTransceiver("video", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            return set(re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", pc.localDescription.sdp))
        finally:
            await pc.close()

    assert turn.host_addresses() is None  # unset: aioice's own choice (here the conftest's loopback)
    env(LIPSYNC_ICE_ADDRESSES="127.0.0.2")  # a loopback address the conftest's patch never offers
    assert turn.host_addresses() == ["127.0.0.2"]
    assert asyncio.run(hosts()) == {"127.0.0.2"}
    env(LIPSYNC_ICE_ADDRESSES=" 127.0.0.3 , not-an-ip")
    assert turn.host_addresses() == ["127.0.0.3"] and "'not-an-ip', which is not an IP address" in caplog.text
    assert asyncio.run(hosts()) == {"127.0.0.3"}
    with pytest.raises(InputError, match="LIPSYNC_ICE_ADDRESSES has 'not-an-ip'"):
        turn.check()
    env(LIPSYNC_ICE_ADDRESSES="")
    assert asyncio.run(hosts()) == {"127.0.0.1"}


# ----------------------------------------------------------------------------- a real coturn and Chromium

CHROMIUM = Path("/usr/bin/chromium")
