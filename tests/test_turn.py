"""ICE settings (lipsync.live.turn): TURN REST credentials, static ones, bad values; then Chromium through a real coturn.

Everything stays on 127.0.0.1: coturn listens and relays there only (and may relay to no other
address), both peers use the relay policy, and the browser may resolve and load nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from pathlib import Path

import pytest

from lipsync.errors import InputError
from lipsync.live import turn

from conftest import LOOPBACK_ONLY, keep_local

VARS = ("LIPSYNC_STUN_URLS", "LIPSYNC_TURN_URLS", "LIPSYNC_TURN_SECRET", "LIPSYNC_TURN_TTL",
        "LIPSYNC_TURN_USERNAME", "LIPSYNC_TURN_CREDENTIAL", "LIPSYNC_ICE_POLICY")


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


# ----------------------------------------------------------------------------- a real coturn and Chromium

CHROMIUM = Path("/usr/bin/chromium")


#: the page's own peer connection: the selected pair's candidates and what arrived
STATS_JS = """
async () => {
  const pc = window.lipsyncLive && window.lipsyncLive.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  const all = [...report.values()];
  const transport = all.find((s) => s.type === "transport" && s.selectedCandidatePairId);
  const pair = transport ? report.get(transport.selectedCandidatePairId) : null;
  const cand = (id) => { const c = id && report.get(id); return c ? {type: c.candidateType, address: c.address} : null; };
  const inbound = (kind) => all.find((s) => s.type === "inbound-rtp" && s.kind === kind) || {};
  return {
    local: cand(pair && pair.localCandidateId), remote: cand(pair && pair.remoteCandidateId),
    candidates: all.filter((s) => s.type === "local-candidate").map((c) => `${c.candidateType} ${c.address}`),
    audio: inbound("audio").bytesReceived || 0, video: inbound("video").bytesReceived || 0,
    frames: inbound("video").framesDecoded || 0,
  };
}
"""


@pytest.mark.browser
@pytest.mark.slow
def test_chromium_gets_the_avatar_through_coturn_with_rest_credentials(coturn, fp32_engine, env):
    from conftest import REALM

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")
    import gradio as gr
    from fastapi import FastAPI
    from playwright.sync_api import sync_playwright

    from lipsync.live.web import build_tab, install
    from test_live_browser import serve

    env(LIPSYNC_TURN_URLS=coturn.url, LIPSYNC_TURN_SECRET=coturn.secret, LIPSYNC_ICE_POLICY="relay")
    app = FastAPI()
    server = install(app, lambda: fp32_engine)
    server.max_side = 160
    with gr.Blocks() as demo, gr.Tab("Live"):
        build_tab(lambda: fp32_engine)
    app = gr.mount_gradio_app(app, demo, path="/")
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
            LOOPBACK_ONLY]
    started = int(time.time())
    stats = None
    with serve(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        try:
            page = browser.new_page()
            keep_local(page)
            page.goto(url)
            page.wait_for_selector(".lipsync-live-text", timeout=60_000)
            page.click(".lipsync-live-text")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                stats = page.evaluate(STATS_JS)
                if stats and stats["local"] and stats["audio"] > 0 and stats["video"] > 0 and stats["frames"] > 0:
                    break
                time.sleep(0.25)
            status = page.inner_text(".lipsync-live-status")
            if page.is_enabled(".lipsync-live-stop"):
                page.click(".lipsync-live-stop")
            deadline = time.monotonic() + 10
            while server.peers and time.monotonic() < deadline:  # the server's peer (and its allocation) ends
                time.sleep(0.1)
        finally:
            browser.close()
    assert stats and stats["local"], f"no connection; page says {status!r}; stats {stats}"
    assert stats["local"]["type"] == "relay", stats
    assert stats["remote"]["type"] == "relay", stats  # the server relays too: both ends on coturn's 127.0.0.1
    assert stats["audio"] > 0 and stats["video"] > 0 and stats["frames"] > 0, stats
    assert {c.split()[0] for c in stats["candidates"]} == {"relay"}, stats["candidates"]
    # coturn allocated for REST usernames (the browser's and the server's), relayed the media between the two
    # allocations (its "peer usage" line comes when an allocation is deleted, after Stop), saw only loopback clients
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not relayed_bytes(coturn.text()):
        time.sleep(0.2)
    log = coturn.text()
    users = set(re.findall(rf"realm <{re.escape(REALM)}> user <(\d+):lipsync>: incoming packet ALLOCATE processed, "
                           r"success", log))
    assert users, f"coturn made no allocation:\n{log[-3000:]}"
    assert all(started + turn.DEFAULT_TTL_S <= int(u) <= int(time.time()) + turn.DEFAULT_TTL_S for u in users), users
    # (it counts whole packets, the page counts payloads: at least as many bytes as the page had when asked)
    assert relayed_bytes(log) >= stats["audio"] + stats["video"], f"coturn relayed no media:\n{log[-3000:]}"
    assert set(re.findall(r"remote (\d+\.\d+\.\d+\.\d+):\d+", log)) == {"127.0.0.1"}


def relayed_bytes(log: str) -> int:
    """The most bytes one of coturn's allocations received from its peer (logged when the allocation is deleted)."""
    return max((int(rb) for rb in re.findall(r"peer usage: realm=<[^>]*>, username=<\d+:lipsync>, rp=\d+, rb=(\d+)",
                                            log)), default=0)
