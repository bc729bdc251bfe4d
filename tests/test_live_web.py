"""The WebRTC routes: an in-process aiortc client against the server (real RTP over loopback, no browser)."""

from __future__ import annotations

import asyncio
import fractions
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")


@pytest.fixture(scope="module")
def fp32_engine(checkpoint):
    from lipsync import LipSync
    from lipsync.face import HaarDetector

    return LipSync(checkpoint, device="cpu", precision="fp32", detector=HaarDetector()).load()


def make_app(engine, **kw):
    from fastapi import FastAPI

    from lipsync.live.web import install

    app = FastAPI()
    kw.setdefault("offer_interval_s", 0.0)  # one test client opens offers back to back
    server = install(app, lambda: engine, **kw)
    server.max_side = 160
    return app, server


def http(app):
    import httpx

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://live.test")


def tone_track(seconds_silent=0.3):
    """A microphone: silence, then a 220 Hz voice-level tone, 20 ms frames at 48 kHz."""
    import av
    from aiortc import MediaStreamTrack

    class Mic(MediaStreamTrack):
        kind = "audio"

        def __init__(self):
            super().__init__()
            self.n = 0
            self.t0 = None

        async def recv(self):
            if self.t0 is None:
                self.t0 = time.monotonic()
            due = self.t0 + self.n * 960 / 48000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            t = (self.n * 960 + np.arange(960)) / 48000
            level = 0.0 if t[0] < seconds_silent else 0.3
            pcm = (level * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts, frame.time_base = self.n * 960, fractions.Fraction(1, 48000)
            self.n += 1
            return frame

    return Mic()


def receive(pc) -> dict:
    """{"video": [...], "audio": [...]}: every frame the peer's incoming tracks deliver, as they come."""
    got = {"video": [], "audio": []}

    @pc.on("track")
    def on_track(track):
        async def pull():
            from aiortc.mediastreams import MediaStreamError

            try:
                while True:
                    got[track.kind].append(await track.recv())
            except MediaStreamError:
                pass

        asyncio.ensure_future(pull())

    return got


async def connect(client, mode="text", keepalive=True, mic=None, video_first=None, **face):
    """``video_first``: the video codec the offer lists first (Safari lists "video/H264" first)."""
    from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

    pc = RTCPeerConnection()
    got = receive(pc)
    channel = pc.createDataChannel("keepalive")
    got["notices"] = []  # what the server says on the channel (why it ended the session)
    channel.on("message", got["notices"].append)
    pinging = {"on": keepalive}

    async def ping():
        while True:
            await asyncio.sleep(0.5)
            if pinging["on"] and channel.readyState == "open":
                channel.send("ping")

    pinger = asyncio.ensure_future(ping())
    if mic is not None:
        pc.addTransceiver(mic, direction="sendrecv")
    else:
        pc.addTransceiver("audio", direction="recvonly")
    video = pc.addTransceiver("video", direction="recvonly")
    if video_first:
        codecs = RTCRtpSender.getCapabilities("video").codecs
        video.setCodecPreferences(sorted(codecs, key=lambda c: c.mimeType != video_first))
    await pc.setLocalDescription(await pc.createOffer())
    r = await client.post("/live/offer", json={"sdp": pc.localDescription.sdp, "type": "offer", "mode": mode, **face})
    assert r.status_code == 200, r.text
    answer = r.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    return pc, answer, got, pinging, pinger


async def wait_for(cond, timeout):
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            return False
        await asyncio.sleep(0.05)
    return True


def test_mic_client_gets_the_avatar_and_is_answered(fp32_engine):
    from lipsync.live.web.sending import SENDING

    async def main():
        app, server = make_app(fp32_engine)
        frames, coded = SENDING.frames_total, SENDING.coded_total_s
        async with http(app) as client:
            # an offer that lists H.264 first, as Safari's does: the server still sends VP8 (2.6x cheaper to encode)
            pc, answer, got, _, pinger = await connect(client, mode="mic", mic=tone_track(), video_first="video/H264")
            video = answer["sdp"].split("m=video")[1]
            first = video.split("\r\n")[0].split()[2]  # " PORT UDP/TLS/RTP/SAVPF PT ..."
            assert f"a=rtpmap:{first} VP8/90000" in video and "H264" in video, video
            assert answer["mode"]["device"].startswith("cpu")
            assert answer["mode"]["enhance"].startswith("fast") and answer["mode"]["blink"]  # what runs, or why not
            assert await wait_for(lambda: len(got["video"]) >= 5 and len(got["audio"]) >= 5, 40), "no media arrived"
            frame = got["video"][-1].to_ndarray(format="rgb24")
            assert max(frame.shape[:2]) == 160
            peer = server.peers[answer["id"]]
            # the tone reached the session through the microphone track and made it speak
            assert await wait_for(lambda: peer.session.stats.utterances >= 1, 30), "the microphone was not heard"
            # what sending costs is measured for admission: aiortc's encoders and the microphone's decoder are timed
            assert SENDING.frames_total - frames >= 5 and SENDING.coded_total_s > coded
            # the session's tracks get the live encoders; the visitor's microphone, another aiortc sender in this
            # process, keeps aiortc's own
            made = {s.track.kind: type(s._RTCRtpSender__encoder._inner).__name__ for s in peer.pc.getSenders()}
            assert made == {"video": "TalkingHeadVp8", "audio": "SpeechOpus"}, made
            (mic,) = [s for s in pc.getSenders() if s.track is not None and s.track.kind == "audio"]
            assert type(mic._RTCRtpSender__encoder._inner).__name__ == "OpusEncoder"
            r = await client.post(f"/live/{answer['id']}/interrupt")
            assert r.status_code == 200
            r = await client.get(f"/live/{answer['id']}")
            assert r.status_code == 200 and r.json()["frames"] > 0 and r.json()["mode"]["width"] == 160
            assert 0 <= r.json()["unsent_frames"] < r.json()["frames"]  # a picture its encoder could not keep up with
            # one visitor at a time on a CPU: a second one is told it is busy
            pc2 = __import__("aiortc").RTCPeerConnection()
            pc2.addTransceiver("video", direction="recvonly")
            await pc2.setLocalDescription(await pc2.createOffer())
            r = await client.post("/live/offer", json={"sdp": pc2.localDescription.sdp, "type": "offer"})
            assert r.status_code == 429 and "busy" in r.json()["error"]
            await pc2.close()
            tracks = (peer.video, peer.audio)
            r = await client.delete(f"/live/{answer['id']}")
            assert r.status_code == 200 and not server.peers
            assert not peer.driver.is_alive() and peer.session.closed
            # the server's tracks are stopped and hold no frames (their pictures are freed now)
            assert all(t.readyState == "ended" and t.queue.empty() for t in tracks)
            r = await client.delete(f"/live/{answer['id']}")
            assert r.status_code == 404
            pinger.cancel()
            await pc.close()

    asyncio.run(main())


def test_a_track_whose_encoder_falls_behind_keeps_the_newest_pictures_and_counts_the_rest():
    from lipsync.live.web.peer import frame_track_class

    async def main():
        track = frame_track_class()("video", 2)
        for k in range(5):  # the driver offers five while the encoder takes none
            track.offer(k)
        assert track.dropped == 3 and [await track.recv(), await track.recv()] == [3, 4]

    asyncio.run(main())


def test_pictures_go_to_the_encoder_as_yuv_with_the_colours_of_the_encoders_own_conversion(example_image):
    import cv2

    from lipsync.live.web.peer import picture

    rgb = cv2.cvtColor(cv2.imread(str(example_image)), cv2.COLOR_BGR2RGB)[:336, :336].copy()
    frame = picture(rgb)
    assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (336, 336)
    theirs = __import__("av").VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    __import__("gc").collect()
    junk = [np.full((504, 336), 7, np.uint8) for _ in range(50)]  # the frame wraps its pixels: they must live on
    assert all(j[0, 0] == 7 for j in junk)
    diff = np.abs(frame.to_ndarray().astype(int) - theirs.astype(int))
    assert diff[:336].max() <= 1 and diff[336:].mean() < 1.0  # luma within 1, chroma within a mean of 1
    assert picture(rgb[:335]).format.name == "rgb24"  # an odd side: the encoder converts it


def test_a_vanished_client_is_freed_within_5_s(fp32_engine):
    async def main():
        app, server = make_app(fp32_engine)
        async with http(app) as client:
            pc, answer, got, pinging, pinger = await connect(client, mode="text")
            peer = server.peers[answer["id"]]
            assert await wait_for(lambda: peer.connected and len(got["video"]) >= 2, 40)
            # typed text: spoken sentence by sentence with the chosen voice, pushed as each is ready
            r = await client.post(f"/live/{answer['id']}/say", json={"text": "Hello there. How are you?",
                                                                     "voice": "espeak:en-us"})
            assert r.status_code == 200 and r.json()["sentences"] == 2, r.text
            assert peer.session.queued_s > 0.5 or peer.session.stats.utterances >= 1
            r = await client.post(f"/live/{answer['id']}/say", json={"text": "   ", "voice": "espeak:en-us"})
            assert r.status_code == 400 and "no words" in r.json()["error"]
            pinging["on"] = False  # the tab is gone: no more pings, nothing closed politely
            t = time.monotonic()
            # freed: out of the server's sessions, and its session closed (that runs off the event loop, just after)
            assert await wait_for(lambda: not server.peers and peer.session.closed, 10)
            assert time.monotonic() - t <= 5.0
            await wait_for(lambda: not peer.driver.is_alive(), 5)
            assert not peer.driver.is_alive()
            pinger.cancel()
            await pc.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "body",
    [
        {"type": "offer", "sdp": "hello"},
        {"type": "answer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"},
        {"type": "offer", "sdp": "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\nm=video 0 nonsense\r\n"},
        {"type": "offer"},
        "not an object",
    ],
)
def test_bad_offers_get_4xx_and_leave_nothing(fp32_engine, body):
    async def main():
        app, server = make_app(fp32_engine)
        async with http(app) as client:
            r = await client.post("/live/offer", json=body)
            assert 400 <= r.status_code < 500 and r.json()["error"]
            assert not server.peers and not server.pending
            r = await client.post("/live/offer", content=b"{not json", headers={"content-type": "application/json"})
            assert r.status_code == 400
            for call in (client.delete("/live/nope"), client.post("/live/nope/say", json={"text": "hi"}),
                         client.get("/live/nope"), client.post("/live/nope/interrupt")):
                r = await call
                assert r.status_code == 404 and "No such live session" in r.json()["error"]

    asyncio.run(main())


def _data_url(path, kind="video/mp4"):
    import base64

    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def test_a_visitors_video_drives_the_face(fp32_engine, tmp_path, own_tempdir):
    """A short video sent with the offer is the face (played back and forth); the upload is
    removed once the session has read it, and the session's frames when it ends."""
    import tempfile

    from videos import pan_frames, write_video

    clip = write_video(tmp_path / "me.mp4", pan_frames(6))

    async def main():
        app, server = make_app(fp32_engine)
        async with http(app) as client:
            pc, answer, got, _, pinger = await connect(client, mode="text", video=_data_url(clip), consent=True)
            assert answer["mode"]["source"] == "video: 6 frames, back and forth"
            assert answer["mode"]["blink"].startswith("off") and "video" in answer["mode"]["blink"]
            assert not list(Path(tempfile.gettempdir()).glob("lipsync-live-*")), "the upload is removed"
            spool = server.peers[answer["id"]].session._face.source.workdir
            assert spool.exists()
            assert await wait_for(lambda: len(got["video"]) >= 5, 40), "no picture arrived"
            assert max(got["video"][-1].to_ndarray(format="rgb24").shape[:2]) == 160
            r = await client.post(f"/live/{answer['id']}/say", json={"text": "Hello.", "voice": "espeak:en-us"})
            assert r.status_code == 200
            assert (await client.delete(f"/live/{answer['id']}")).status_code == 200
            assert not spool.exists()
            pinger.cancel()
            await pc.close()

    asyncio.run(main())


def test_a_bad_video_or_an_oversized_body_gets_4xx_and_leaves_nothing(fp32_engine, tmp_path, own_tempdir, example_image):
    import tempfile

    from aiortc import RTCPeerConnection

    from lipsync.live import web

    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video at all")

    async def main():
        app, server = make_app(fp32_engine)
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer", "consent": True}
        async with http(app) as client:
            r = await client.post("/live/offer", json={**offer, "video": _data_url(notes)})
            assert r.status_code == 400 and r.json()["error"].startswith("The uploaded file is not a video"), r.text
            r = await client.post("/live/offer", json={**offer, "video": "data:video/mp4;base64,@@@"})
            assert r.status_code == 400 and "base64" in r.json()["error"]
            r = await client.post("/live/offer", json={**offer, "video": _data_url(notes),
                                                      "image": _data_url(example_image, "image/jpeg")})
            assert r.status_code == 400 and "not both" in r.json()["error"]
            r = await client.post("/live/offer", content=b"{" + b" " * (web.MAX_BODY_BYTES + 1) + b"}",
                                  headers={"content-type": "application/json"})
            assert r.status_code == 413 and "larger" in r.json()["error"]
            assert not server.peers and not server.pending
        await pc.close()

    asyncio.run(main())
    assert not list(Path(tempfile.gettempdir()).glob("lipsync-*")), "an upload or a spool was left behind"


def test_turn_settings_come_from_the_environment(monkeypatch):
    """The config route hands the page lipsync.live.turn's servers and policy (tests/test_turn.py covers the rest)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lipsync.live.web import KEEPALIVE_S, install

    for var in ("LIPSYNC_STUN_URLS", "LIPSYNC_TURN_URLS", "LIPSYNC_TURN_SECRET", "LIPSYNC_TURN_TTL",
                "LIPSYNC_TURN_USERNAME", "LIPSYNC_TURN_CREDENTIAL", "LIPSYNC_ICE_POLICY"):
        monkeypatch.delenv(var, raising=False)
    app = FastAPI()
    install(app, lambda: None)
    with TestClient(app) as c:
        assert c.get("/live/config").json() == {"iceServers": [], "iceTransportPolicy": "all",
                                                   "keepalive_s": KEEPALIVE_S}
        monkeypatch.setenv("LIPSYNC_TURN_URLS", "turn:turn.example.org:3478, turns:turn.example.org:5349")
        monkeypatch.setenv("LIPSYNC_TURN_USERNAME", "u")
        monkeypatch.setenv("LIPSYNC_TURN_CREDENTIAL", "p")
        monkeypatch.setenv("LIPSYNC_ICE_POLICY", "relay")
        cfg = c.get("/live/config").json()
    assert cfg["iceServers"] == [
        {"urls": ["turn:turn.example.org:3478", "turns:turn.example.org:5349"], "username": "u", "credential": "p"}
    ]
    assert cfg["iceTransportPolicy"] == "relay"


def test_the_tab_mounts_in_a_gradio_app(fp32_engine):
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lipsync.live.web import build_tab, install

    app = FastAPI()
    install(app, lambda: fp32_engine)
    with gr.Blocks() as demo, gr.Tabs(), gr.Tab("Live"):
        html = build_tab(lambda: fp32_engine)
    assert '"/live/static/live.js"' in html.js_on_load and 'mount(element, "/live")' in html.js_on_load
    assert "espeak:" in html.value  # the voice picker lists the installed voices
    assert 'class="lipsync-live-consent"' in html.value and "right to use this person" in html.value
    app = gr.mount_gradio_app(app, demo, path="/")
    with TestClient(app) as c:
        assert c.get("/live/config").json()["keepalive_s"] > 0
        assert c.get("/").status_code == 200
        script = c.get("/live/static/live.js")  # the page's script is a file of its own, served as is
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert "export function mount" in script.text and "getUserMedia" in script.text


def test_the_web_app_carries_the_live_tab_and_its_routes():
    """The real page (lipsync.webapp) gets the Live tab and installs its signalling routes."""
    pytest.importorskip("gradio")
    from lipsync.live import web
    from lipsync.webapp import server

    assert [name for name, _ in server.default_tabs()] == ["Live"]
    assert server.default_routes() == [web.install]


def test_on_a_gpu_a_server_admits_its_share_of_the_gpu_and_of_the_cores(monkeypatch, caplog):
    """Each worker's limit on a GPU: the network's measured rate (0.75 x rate / 25) times its share of the GPU
    (several processes share one with ``--workers-per-gpu``), what its own process holds (its sessions' own work,
    one interpreter), and at most 4 sessions per CPU core that is its to encode pictures on (its share of the
    machine, not the whole machine that every worker on it would count)."""
    import os
    from types import SimpleNamespace

    import torch

    from lipsync.live.web.sending import SENDING, SendCost
    from lipsync.live.web.server import GPU_SESSIONS_PER_CORE, LiveServer
    from lipsync.runtime.scheduler import Scheduler

    monkeypatch.delenv("LIPSYNC_LIVE_SESSIONS", raising=False)
    monkeypatch.setattr(SENDING, "cost", None)  # what earlier tests' sessions measured is not this server's
    sched = Scheduler(lambda *a, **k: None)
    engine = SimpleNamespace(generator=SimpleNamespace(device=torch.device("cuda"), scheduler=sched))
    sched._measured = (10_000.0, "measured at load")  # 300 sessions by the network
    # no session has run yet: one process is assumed to hold 10 (ASSUMED_WORK_S a frame)
    assert LiveServer(lambda: engine).capacity(engine)["limit"] == min(10, GPU_SESSIONS_PER_CORE * os.cpu_count())
    assert LiveServer(lambda: engine, cores=2.0, gpu_share=0.25).capacity(engine)["limit"] == 8  # 4 per core
    ticket = sched.join(25.0)
    for _ in range(3):  # (a session's first frame is not counted)
        sched.note_picture(ticket, 0.004, 0.001)  # measured: 1 ms of CPU a frame, 30 in one process
    server = LiveServer(lambda: engine, cores=16.0)
    with caplog.at_level("INFO", logger="lipsync"):
        assert server.capacity(engine)["limit"] == 30  # not the GPU's 300
        server.capacity(engine)
    hints = [r.getMessage() for r in caplog.records if "--workers-per-gpu" in r.getMessage()]
    assert len(hints) == 1 and "holds 30 sessions" in hints[0] and "would hold 300" in hints[0], hints  # once
    assert LiveServer(lambda: engine, cores=16.0, gpu_share=0.5).capacity(engine)["limit"] == 30  # each process its own
    sched._measured = (1_000.0, "measured while serving")  # 30 by the whole GPU
    assert LiveServer(lambda: engine, cores=16.0, gpu_share=0.25).capacity(engine)["limit"] == 7  # a quarter of it
    assert LiveServer(lambda: engine, cores=16.0, gpu_share=0.01).capacity(engine)["limit"] == 1  # never none
    engine.generator.device = torch.device("cpu")  # on a CPU the network's own measure decides, shares aside
    assert LiveServer(lambda: engine, cores=1.0, gpu_share=0.25).capacity(engine)["limit"] == 30
    # once sending over WebRTC is measured (4 ms of CPU a frame, 1 ms of it on the event loop) it counts: the
    # process holds 0.75 / (25 x (1 + 1) ms) = 15, and the cores what both take, in place of 4 a core
    engine.generator.device = torch.device("cuda")
    sched._measured = (10_000.0, "measured at load")
    monkeypatch.setattr(SENDING, "cost", SendCost(cpu_s=0.004, locked_s=0.001, frames=500))
    assert LiveServer(lambda: engine, cores=16.0).capacity(engine)["limit"] == 15
    cap = LiveServer(lambda: engine, cores=2.0).capacity(engine)
    assert cap["limit"] == int(0.75 * 2 / (25 * (0.001 + 0.004))) == 12 and "12 on 2 CPU cores" in cap["how"]


def test_while_pictures_go_unsent_no_further_session_is_admitted(monkeypatch, caplog):
    """Measured on 2 cores: 8 sessions made every picture on time, but their encoders fell behind and a quarter of the
    pictures never left. Admission's estimate can be wrong on an unknown machine; what the visitors get cannot."""
    from types import SimpleNamespace

    import torch

    from lipsync.live.web.sending import SENDING
    from lipsync.live.web.server import UNSENT_HOLD_S, LiveServer
    from lipsync.runtime.scheduler import Scheduler

    monkeypatch.delenv("LIPSYNC_LIVE_SESSIONS", raising=False)
    monkeypatch.setattr(SENDING, "cost", None)
    sched = Scheduler(lambda *a, **k: None, cores=2)
    sched._measured = (1_000.0, "measured at load")
    engine = SimpleNamespace(generator=SimpleNamespace(device=torch.device("cpu"), scheduler=sched))
    server = LiveServer(lambda: engine)
    assert server.capacity(engine)["limit"] == 10
    peers = [SimpleNamespace(connected=True, seen=(0, 0), video=SimpleNamespace(dropped=0),
                             session=SimpleNamespace(stats=SimpleNamespace(frames=0))) for _ in range(3)]
    server.peers = {str(k): p for k, p in enumerate(peers)}
    clock = [time.monotonic()]

    def run(seconds, dropped_per_tick):
        for _ in range(int(seconds * 2)):  # the reaper looks every half second
            clock[0] += 0.5
            for p in peers:
                p.session.stats.frames += 12
                p.video.dropped += dropped_per_tick
            server._watch_unsent(clock[0])

    run(3.0, 0)  # every picture sent
    assert server.capacity(engine)["limit"] == 10
    with caplog.at_level("WARNING", logger="lipsync"):
        run(3.0, 1)  # one in twelve never left
    cap = server.capacity(engine)
    assert cap["limit"] == 3 and "going unsent" in cap["how"]  # the ones running stay; no one more
    assert any("went unsent" in r.getMessage() for r in caplog.records)
    server._short_until = time.monotonic() - 1  # UNSENT_HOLD_S later (the test's clock ran ahead of the real one)
    assert UNSENT_HOLD_S >= 5 and server.capacity(engine)["limit"] == 10


def test_workers_per_gpu_is_asked_for_with_a_cluster_and_a_whole_number(capsys):
    pytest.importorskip("gradio")
    from lipsync.webapp import server

    for argv, said in ((["--workers-per-gpu", "2"], "add --ray (a Ray instance on this machine)"),
                       (["--ray", "127.0.0.1:1", "--workers-per-gpu", "0"], "at least 1, not '0'")):
        with pytest.raises(SystemExit) as e:
            server.main(argv)
        assert e.value.code == 2 and said in capsys.readouterr().err
    # --ray alone: a Ray instance on this machine (lipsync.cluster.connect("local")), so one GPU machine needs no
    # cluster for several workers per GPU
    assert server.parser().parse_args(["--ray", "--workers-per-gpu", "3"]).ray == "local"
