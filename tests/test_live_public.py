"""The live routes on a public link: consent, admission before the body, limits per visitor, hostile
requests, the server's own threads, plain messages, shutdown and a session's time limit.

In-process (httpx's ASGI transport, aiortc clients over loopback), no browser.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")

from test_live_web import _data_url, connect, make_app, wait_for  # noqa: E402


def http(app, address="127.0.0.1", **headers):
    import httpx

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 50000)),
                             base_url="http://live.test", headers=headers)


async def offer_sdp(audio_sections=1, video_sections=1) -> str:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    for _ in range(audio_sections):
        pc.addTransceiver("audio", direction="recvonly")
    for _ in range(video_sections):
        pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def lipsync_temp_files() -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob("lipsync-*"))


def test_a_face_of_ones_own_needs_consent_and_the_example_does_not(fp32_engine, example_image, own_tempdir):
    async def main():
        app, server = make_app(fp32_engine, per_client=4, max_sessions=4)
        sdp = await offer_sdp()
        async with http(app) as client:
            photo = _data_url(example_image, "image/jpeg")
            for body in ({"image": photo}, {"image": photo, "consent": False}, {"video": photo, "consent": "yes"}):
                r = await client.post("/live/offer", json={"sdp": sdp, "type": "offer", **body})
                assert r.status_code == 400 and "consent box" in r.json()["error"], r.text
                assert not lipsync_temp_files(), "nothing is written before consent"
            assert not server.peers
            r = await client.post("/live/offer", json={"sdp": sdp, "type": "offer"})  # the app's own portrait
            assert r.status_code == 200, r.text
            r = await client.post("/live/offer", json={"sdp": sdp, "type": "offer", "image": photo, "consent": True})
            assert r.status_code == 200, r.text
            await server.close_all()

    asyncio.run(main())


def test_a_busy_server_refuses_eight_big_offers_without_reading_them(fp32_engine):
    """One session runs (the CPU's limit): eight parallel 27 MB offers get 429 with Retry-After, and the
    server's memory grows by less than 60 MB (the old routes read and decoded every one)."""
    chunk = b"x" * 2**20

    async def big_body():
        yield b'{"type": "offer", "consent": true, "video": "data:video/mp4;base64,'
        for _ in range(26):
            yield chunk
        yield b'"}'

    async def main():
        app, server = make_app(fp32_engine, max_sessions=1)
        sdp = await offer_sdp()
        async with http(app, "10.0.0.1") as first:
            r = await first.post("/live/offer", json={"sdp": sdp, "type": "offer"})
            assert r.status_code == 200, r.text
        gc.collect()
        rss = psutil.Process().memory_info().rss
        peak = [rss]
        stop = threading.Event()

        def watch():
            while not stop.wait(0.005):
                peak[0] = max(peak[0], psutil.Process().memory_info().rss)

        watcher = threading.Thread(target=watch)
        watcher.start()

        async def visitor(k):
            async with http(app, f"10.0.1.{k}") as c:
                return await c.post("/live/offer", content=big_body(), headers={"content-type": "application/json"})

        try:
            answers = await asyncio.gather(*(visitor(k) for k in range(8)))
        finally:
            stop.set()
            watcher.join()
        assert [r.status_code for r in answers] == [429] * 8
        assert all("busy" in r.json()["error"] and int(r.headers["retry-after"]) >= 1 for r in answers)
        grown = (peak[0] - rss) / 2**20
        print(f"busy server: 8 x 27 MB offers refused; RSS grew {grown:.1f} MB")
        assert grown < 60
        await server.close_all()

    asyncio.run(main())


def test_one_session_per_visitor_and_one_offer_a_second(fp32_engine, monkeypatch):
    async def main():
        app, server = make_app(fp32_engine, max_sessions=4, offer_interval_s=1.0)
        sdp = await offer_sdp()
        body = {"sdp": sdp, "type": "offer"}
        async with http(app, "10.0.0.2") as client:
            assert (await client.post("/live/offer", json=body)).status_code == 200
            await asyncio.sleep(1.05)
            r = await client.post("/live/offer", json=body)
            assert r.status_code == 429 and "one per visitor" in r.json()["error"]
            r = await client.post("/live/offer", json=body)  # at once again: too fast
            assert r.status_code == 429 and "Too many attempts" in r.json()["error"] and r.headers["retry-after"]
        first = next(iter(server.peers))
        async with http(app, "10.0.0.3") as other:  # another visitor is welcome, but cannot touch the first's session
            assert (await other.post("/live/offer", json=body)).status_code == 200
            for call in (other.get(f"/live/{first}"), other.delete(f"/live/{first}"),
                         other.post(f"/live/{first}/interrupt"), other.post(f"/live/{first}/say", json={"text": "Hi."})):
                r = await call
                assert r.status_code == 404 and "No such live session" in r.json()["error"]
            assert first in server.peers
        # behind a proxy that says who asks (a Space), the visitor is X-Forwarded-For's first address
        monkeypatch.setenv("LIPSYNC_TRUST_PROXY", "1")
        async with http(app, "10.0.0.9", **{"x-forwarded-for": "203.0.113.7, 10.0.0.9"}) as proxied:
            assert (await proxied.post("/live/offer", json=body)).status_code == 200
            await asyncio.sleep(1.05)
            r = await proxied.post("/live/offer", json=body)
            assert r.status_code == 429 and "one per visitor" in r.json()["error"]
        assert {p.client for p in server.peers.values()} == {"10.0.0.2", "10.0.0.3", "203.0.113.7"}
        await server.close_all()

    asyncio.run(main())


def test_hostile_requests_get_plain_4xx_and_leave_nothing(fp32_engine, own_tempdir, monkeypatch):
    async def main():
        app, server = make_app(fp32_engine, max_sessions=4, per_client=4)
        sdp = await offer_sdp()
        async with http(app) as client:
            # another site's page
            r = await client.post("/live/offer", json={"sdp": sdp, "type": "offer"},
                                  headers={"origin": "https://evil.example"})
            assert r.status_code == 403
            # a form or text/plain POST (no preflight in a browser)
            r = await client.post("/live/offer", content=b'{"sdp": "v=0", "type": "offer"}',
                                  headers={"content-type": "text/plain"})
            assert r.status_code == 415
            # many audio sections (each would have started its own microphone reader)
            r = await client.post("/live/offer", json={"sdp": await offer_sdp(audio_sections=40), "type": "offer"})
            assert r.status_code == 400 and "one audio section" in r.json()["error"]
            # deeply nested JSON: the decoder's recursion, and just past the depth the routes take
            for raw in (b"[" * 200_000 + b"]" * 200_000, b'{"sdp": {"a": {"b": {"c": {"d": 1}}}}}'):
                r = await client.post("/live/offer", content=raw, headers={"content-type": "application/json"})
                assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
            # a body that dribbles in (it would hold an offer's place)
            monkeypatch.setattr("lipsync.live.web.http.READ_S", 0.5)

            async def slow():
                for part in (b'{"type": "offer", ', b'"sdp": "v=0"', b"}"):
                    yield part
                    await asyncio.sleep(0.4)

            r = await client.post("/live/offer", content=slow(), headers={"content-type": "application/json"})
            assert r.status_code == 408 and "too long to arrive" in r.json()["error"]
            assert not server.peers and not server.pending
            # the app's own page (same host), and a site the operator allows
            r = await client.post("/live/offer", json={"sdp": sdp, "type": "offer"}, headers={"origin": "http://live.test"})
            assert r.status_code == 200, r.text
            monkeypatch.setenv("LIPSYNC_LIVE_ORIGINS", "https://friend.example")
            r = await client.post("/live/offer", json={"sdp": sdp, "type": "offer"},
                                  headers={"origin": "https://friend.example"})
            assert r.status_code == 200, r.text
            await server.close_all()
        assert not lipsync_temp_files()

    asyncio.run(main())


def test_say_checks_length_first_and_a_long_text_waits_for_room(fp32_engine, example_image, monkeypatch):
    from lipsync.live import text as live_text
    from lipsync.speech import Speech

    def no_split(text):
        raise AssertionError("the text was split before its length was checked")

    async def main():
        app, server = make_app(fp32_engine)
        async with http(app) as client:
            pc, answer, got, _, pinger = await connect(client, mode="text")
            monkeypatch.setattr(live_text, "sentences", no_split)
            r = await client.post(f"/live/{answer['id']}/say", json={"text": "a" * 2001})
            assert r.status_code == 400 and "2,000" in r.json()["error"] and "()" not in r.json()["error"]
            await server.close_all()
            pinger.cancel()
            await pc.close()

    asyncio.run(main())
    monkeypatch.undo()

    # a legal text longer than the session's queue: each sentence waits for room instead of overflowing it
    def thirty_seconds(sentence, voice=None):
        return Speech(np.zeros(30 * 16000, np.float32), 16000), None

    monkeypatch.setattr("lipsync.speech.narrate", thirty_seconds)
    session = fp32_engine.live(image=example_image, max_side=160, blink=False, enhance="off")
    cancel = threading.Event()
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("n", live_text.speak(session, "One. Two. Three. Four. Five. Six.",
                                                                                    cancel=cancel)))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), "the fifth sentence should wait for room"
    assert session.queued_s == pytest.approx(120, abs=1)
    cancel.set()
    worker.join(5)
    session.close()
    assert out == {"n": 4}


def test_slow_speech_synthesis_never_takes_the_encoders_threads(fp32_engine, monkeypatch):
    """Ten 'Say it' clicks whose synthesis hangs: the loop's default executor (where aiortc encodes
    every frame) still runs a job at once."""
    from lipsync.live import text as live_text

    release = threading.Event()
    monkeypatch.setattr(live_text, "speak", lambda *a, **k: release.wait(30) and 0)

    async def main():
        app, server = make_app(fp32_engine)
        async with http(app) as client:
            pc, answer, got, _, pinger = await connect(client, mode="text")
            says = [asyncio.ensure_future(client.post(f"/live/{answer['id']}/say", json={"text": "Hi."}))
                    for _ in range(10)]
            await asyncio.sleep(0.5)
            t = time.monotonic()
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, lambda: 1), 5)
            waited = time.monotonic() - t
            release.set()
            await asyncio.gather(*says)
            await server.close_all()
            pinger.cancel()
            await pc.close()
        return waited

    assert asyncio.run(main()) < 0.5


def test_errors_reach_the_visitor_in_plain_words(fp32_engine, monkeypatch):
    from lipsync.errors import LipSyncError, VoiceError
    from lipsync.live import text as live_text

    class Loading:
        loaded, loading = False, True

    class Broken:
        loaded, loading = False, False

        def load(self):
            raise LipSyncError("The checkpoint /srv/models/secret/wav2lip_gan.pth is not a Wav2Lip checkpoint.")

    async def main():
        sdp = await offer_sdp()
        for engine, words in ((Loading(), "still loading"), (Broken(), "could not be loaded")):
            app, server = make_app(engine)
            async with http(app) as client:
                r = await client.post("/live/offer", json={"sdp": sdp, "type": "offer"})
                assert r.status_code == 503 and words in r.json()["error"], r.text
                assert "/srv/" not in r.text
        def no_weights():
            raise LipSyncError("No weights at /root/.cache/x/w.pth; run lipsync download.")

        app, server = make_app(None)
        server.get_engine = no_weights
        async with http(app) as client:
            r = await client.post("/live/offer", json={"sdp": sdp, "type": "offer"})
            assert r.status_code == 503 and "w.pth" in r.text and "/root/" not in r.text
        monkeypatch.setattr(live_text, "speak", lambda *a, **k: (_ for _ in ()).throw(
            VoiceError("The voice model at /root/.local/share/tts/model.pth could not be read.")))
        app, server = make_app(fp32_engine)
        async with http(app) as client:
            pc, answer, got, _, pinger = await connect(client, mode="text")
            r = await client.post(f"/live/{answer['id']}/say", json={"text": "Hello."})
            assert r.status_code == 400 and "model.pth" in r.text and "/root/" not in r.text
            assert "/" not in answer["mode"]["blink"] or "://" in answer["mode"]["blink"]
            await server.close_all()
            pinger.cancel()
            await pc.close()

    asyncio.run(main())


def test_a_session_ends_at_its_time_limit_and_the_page_is_told(fp32_engine):
    async def main():
        app, server = make_app(fp32_engine, max_s=2.0)
        async with http(app) as client:
            pc, answer, got, _, pinger = await connect(client, mode="text")
            assert answer["max_s"] == 2
            notices = got["notices"]
            assert await wait_for(lambda: not server.peers, 8), "the session outlived its limit"
            assert await wait_for(lambda: notices, 2), "the page was not told"
            assert "time limit" in notices[0] and '"ended"' in notices[0]
            pinger.cancel()
            await pc.close()

    asyncio.run(main())


def test_the_apps_shutdown_closes_live_sessions_and_removes_their_spools(fp32_engine, tmp_path, own_tempdir):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lipsync.live.web import install
    from lipsync.webapp import server as app_server
    from videos import pan_frames, write_video

    clip = write_video(tmp_path / "me.mp4", pan_frames(6))
    live = {}

    def routes(app, get_engine):
        live["server"] = install(app, lambda: fp32_engine, offer_interval_s=0)
        live["server"].max_side = 160
        return live["server"]

    app = FastAPI(lifespan=app_server.lifespan_with([routes]))
    sdp = asyncio.run(offer_sdp(audio_sections=1))
    with TestClient(app) as client:
        r = client.post("/live/offer", json={"sdp": sdp, "type": "offer", "video": _data_url(clip), "consent": True})
        assert r.status_code == 200, r.text
        (peer,) = live["server"].peers.values()
        spool = peer.session._face.source.workdir
        assert spool.exists()
    assert not live["server"].peers and peer.session.closed
    assert not spool.exists() and not lipsync_temp_files()


def test_sound_goes_out_in_40_ms_frames_with_their_own_timestamps():
    from lipsync.live.web.peer import AUDIO_FRAME_S, AudioPackets

    assert AUDIO_FRAME_S == 0.04  # one Opus packet a picture at 25 frames a second

    for rate, slot in ((16000, 640), (48000, 1920), (48000, 1600), (44100, 1470)):
        packets = AudioPackets(rate)
        frames = []
        for _ in range(30):
            frames += packets(np.zeros(slot, np.int16))
        size = round(rate * 0.04)
        assert all(f.samples == size for f in frames)
        assert [f.pts for f in frames] == [k * size for k in range(len(frames))]
        assert len(frames) == 30 * slot // size


def test_the_microphone_is_heard_as_mono_whether_its_channels_are_packed_or_planar_and_the_gate_opens_on_speech():
    import av

    from lipsync.live.web.peer import Gate, mono_pcm

    t = np.arange(960) / 48_000
    left = (6000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    right = (left // 2).astype(np.int16)
    want = ((left.astype(np.int32) + right) // 2).astype(np.int16)
    packed = av.AudioFrame.from_ndarray(np.stack([left, right]).T.reshape(1, -1).copy(), format="s16", layout="stereo")
    planar = av.AudioFrame.from_ndarray(np.stack([left, right]), format="s16p", layout="stereo")
    mono = av.AudioFrame.from_ndarray(left[None, :], format="s16", layout="mono")
    for frame, expected in ((packed, want), (planar, want), (mono, left)):
        assert np.array_equal(mono_pcm(frame), expected), frame

    class Heard:
        def __init__(self):
            self.chunks = []

        def push(self, samples, rate):
            self.chunks.append(len(samples))

    heard, gate = Heard(), Gate()
    gate.feed(heard, np.zeros(960, np.int16), 48_000)  # room silence: kept as pre-roll, not pushed
    gate.feed(heard, (left // 300).astype(np.int16), 48_000)  # about -50 dBFS: below the gate
    assert heard.chunks == []
    gate.feed(heard, mono_pcm(packed), 48_000)  # a voice: the pre-roll goes first, then the voice
    assert heard.chunks == [960, 960, 960]


def test_a_short_live_soak_with_hostile_visitors_leaves_the_server_as_it_found_it(fp32_engine, own_tempdir):
    """scripts/live_soak.py, 9 cycles (the full run is 100): a visitor served each cycle, every hostile
    request refused plainly; after the warm-up RSS grows <= 5 %, fds, threads and children flat, nothing left."""
    import os
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    import live_soak

    t = time.perf_counter()
    # one place (the busy checks need the visitor to fill the server); the visitor's pace: quicker here
    with live_soak.serve_live(fp32_engine, offer_interval_s=0.3, max_sessions=1) as (url, _):
        report = live_soak.run_soak(url, os.getpid(), None, cycles=9, warmup=5, offer_interval_s=0.3)
    print(f"\nlive soak: {time.perf_counter() - t:.0f} s, RSS {report['after_warmup']['rss_mb']:.0f} -> "
          f"{report['end']['rss_mb']:.0f} MB ({report['rss_growth']:+.1%}), fds {report['after_warmup']['fds']} -> "
          f"{report['end']['fds']}, threads {report['after_warmup']['threads']} -> {report['end']['threads']}")
    assert not report["failed"], report["failed"]
    assert report["passed"], report["checks"]
