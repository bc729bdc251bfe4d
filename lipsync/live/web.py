"""The live avatar over WebRTC (aiortc): signalling routes on the app's own server and the page's "Live" tab.

Routes (``prefix`` defaults to ``/live``), all JSON:

* ``GET  /live/config``: ICE servers for the browser and the session limit;
* ``POST /live/offer`` ``{"sdp", "type": "offer", "mode": "mic"|"text", "image"?: data URL,
  "video"?: data URL}`` -> ``{"id", "sdp", "type": "answer", "mode": {...what runs...}}``;
  the face is the visitor's photo (``image``), a short video of them (``video``: up to
  :data:`MAX_VIDEO_BYTES` and :data:`MAX_VIDEO_S`, played back and forth), or the app's
  default portrait; 400 for a malformed offer, photo or video, 413 for a body over
  :data:`MAX_BODY_BYTES`, 429 "busy" when the live sessions are all taken;
* ``POST /live/{id}/say`` ``{"text", "voice"?}``: typed text, spoken sentence by sentence;
* ``GET /live/{id}``: what runs now (frame step, size, why) and counters;
* ``POST /live/{id}/interrupt``; ``DELETE /live/{id}``; unknown ids get 404.

Media: the server sends the avatar as one video and one audio track (the frames
of a :class:`~lipsync.live.LiveSession`, paced by it) and, in ``mic`` mode,
receives the visitor's microphone and pushes what it hears (an energy gate keeps
room noise out). The page keeps a data channel open and sends ``ping`` every
second; a visitor that vanishes (no ping and no microphone packet for
:data:`KEEPALIVE_S`) is freed by a reaper that looks twice a second, so within 5 s.

**TURN.** Signalling rides on the app's own HTTP(S), so it passes any proxy (a
Hugging Face Space's included); the media does not: it flows over UDP between
the browser and this server. On one machine or a LAN that works as is. Behind
NAT or a proxy that only forwards HTTP (a Space), set a TURN server:
``LIPSYNC_TURN_URLS`` (comma-separated ``turn:``/``turns:`` URLs),
``LIPSYNC_TURN_USERNAME`` and ``LIPSYNC_TURN_CREDENTIAL``; ``LIPSYNC_STUN_URLS`` adds
STUN servers. Both sides use them. ``LIPSYNC_LIVE_SESSIONS`` sets the limit
(default: 1 on a CPU, 4 on a GPU).

aiortc and av are imported only when a route is used (``pip install '.[live]'``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import secrets
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from starlette.requests import (
    Request,  # FastAPI reads the routes' annotations from this module
)

from .turn import ice_servers, ice_transport_policy
from .turn import rtc_configuration as _rtc_configuration

log = logging.getLogger("lipsync")

__all__ = ["KEEPALIVE_S", "LiveServer", "build_tab", "ice_servers", "install"]

KEEPALIVE_S = 3.5  #: a peer with no ping and no microphone packet for this long is closed
CONNECT_S = 20.0  #: an answered offer must connect within this
MAX_SDP = 64_000
MAX_IMAGE_BYTES = 8 * 2**20
MAX_VIDEO_BYTES = 20 * 2**20  #: a visitor's driving video (sent as a data URL)
MAX_VIDEO_S = 30.0  #: ...and its longest duration: it loops, so a few seconds are enough
MAX_BODY_BYTES = MAX_VIDEO_BYTES * 4 // 3 + MAX_SDP + 4096  #: the largest JSON body a route reads
BUSY = "The live avatar is busy with another visitor right now; try again in a minute."
GATE_DBFS = -42.0  #: the microphone is pushed while louder than this...
GATE_HOLD_S = 0.4  #: ...and for this long after
EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "astronaut.jpg"


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _track_classes():
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    class FrameTrack(MediaStreamTrack):
        """Frames handed over by the session's driver thread; None ends the track."""

        def __init__(self, kind: str):
            super().__init__()
            self.kind = kind
            self.queue: asyncio.Queue = asyncio.Queue(maxsize=6)

        def offer(self, item) -> None:
            if self.queue.full():  # nobody reads yet (not connected): keep the newest
                self.queue.get_nowait()
            self.queue.put_nowait(item)

        def drain(self) -> None:
            """Drop the frames still queued (their pictures are large, and nobody will send them)."""
            while not self.queue.empty():
                self.queue.get_nowait()

        async def recv(self):
            item = await self.queue.get()
            if item is None:
                self.stop()
                raise MediaStreamError
            return item

    return FrameTrack


_trim: list = []


def release_memory() -> None:
    """Collect the closed session's cycles, then give freed heap back to the system (glibc's ``malloc_trim``).

    A session frees its pictures, codec contexts and buffers on close, but glibc keeps
    the freed pages in its arenas, so the resident size creeps from one visitor to the
    next. Elsewhere than glibc only the collection runs.
    """
    import ctypes
    import gc

    gc.collect()
    if not _trim:
        try:
            _trim.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _trim.append(None)
    if _trim[0] is not None:
        _trim[0](0)


class _Gate:
    """An energy gate with pre-roll: pushes the microphone while someone speaks."""

    def __init__(self) -> None:
        self.open_until = 0.0
        self.preroll: list[tuple[np.ndarray, int]] = []

    def feed(self, session, samples: np.ndarray, rate: int) -> None:
        x = samples.astype(np.float32) / 32768.0
        level = 10 * np.log10(float(np.mean(x * x)) + 1e-12)
        now = time.monotonic()
        if level > GATE_DBFS:
            if now >= self.open_until:
                for pre, r in self.preroll:
                    session.push(pre, r)
            self.open_until = now + GATE_HOLD_S
            self.preroll.clear()
        if now < self.open_until:
            session.push(samples, rate)
        else:
            self.preroll = (self.preroll + [(samples, rate)])[-5:]


class _Peer:
    def __init__(self, pc, session, mode: str):
        self.id = secrets.token_urlsafe(12)
        self.pc = pc
        self.session = session
        self.mode = mode
        self.created = time.monotonic()
        self.last_seen = time.monotonic()
        self.connected = False
        self.video = self.audio = None
        self.driver: threading.Thread | None = None
        self.tasks: list[asyncio.Task] = []
        self.say_cancel = threading.Event()
        self.closing = False


def _mode(session) -> dict:
    m = session.mode
    return {"device": m.device, "step": m.step, "width": m.width, "height": m.height, "note": m.reason,
            "enhance": m.enhance, "blink": m.blink, "source": m.source}


def _from_data_url(data, kind: str, what: str, limit: int, example: str, advice: str = "") -> bytes:
    """The bytes of a ``data:{kind}/...;base64,...`` URL a visitor sent; HTTPProblem 400 saying what is wrong."""
    if not isinstance(data, str) or "," not in data or not data.startswith(f"data:{kind}/"):
        raise HTTPProblem(400, f"{what} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind} data URL "
                               f"(data:{kind}/{example};base64,...).")
    b64 = data.split(",", 1)[1]
    if len(b64) > limit * 4 // 3 + 4:
        raise HTTPProblem(400, f"{what} is larger than {limit // 2**20} MB{advice}.")
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPProblem(400, f"{what}'s data URL is not valid base64.") from None


class LiveServer:
    """The live sessions of one app: at most ``max_sessions`` peers, each with its own :class:`LiveSession`.

    Args:
        get_engine: returns the app's loaded :class:`~lipsync.LipSync` (called off the event loop).
        image: the default portrait.
        max_sessions: the limit (default ``$LIPSYNC_LIVE_SESSIONS``, else 1 on a CPU and 4 on a GPU).
        max_side: the live picture's long side.
    """

    def __init__(self, get_engine, *, image=None, max_sessions: int | None = None, max_side: int = 512):
        self.get_engine = get_engine
        self.image = image if image is not None else EXAMPLE
        self.max_sessions = max_sessions
        self.max_side = max_side
        self.peers: dict[str, _Peer] = {}
        self._reserved = 0
        self._reaper: asyncio.Task | None = None

    # -- limits -------------------------------------------------------------------------
    def limit(self, engine) -> int:
        if self.max_sessions is not None:
            return self.max_sessions
        env = os.environ.get("LIPSYNC_LIVE_SESSIONS", "").strip()
        if env.isdigit() and int(env) > 0:
            return int(env)
        return 1 if engine.generator.device.type == "cpu" else 4

    # -- signalling -----------------------------------------------------------------------
    async def offer(self, body) -> dict:
        if not isinstance(body, dict):
            raise HTTPProblem(400, "Send a JSON object with the SDP offer.")
        sdp, kind, mode = body.get("sdp"), body.get("type"), body.get("mode", "text")
        if kind != "offer" or not isinstance(sdp, str) or not sdp.startswith("v=0") or "\nm=" not in sdp:
            raise HTTPProblem(400, "The SDP offer is malformed: send {'type': 'offer', 'sdp': 'v=0...'}.")
        if len(sdp) > MAX_SDP:
            raise HTTPProblem(400, "The SDP offer is too long.")
        if mode not in ("mic", "text"):
            raise HTTPProblem(400, "mode must be 'mic' or 'text'.")
        if body.get("image") is not None and body.get("video") is not None:
            raise HTTPProblem(400, "Send a photo or a video for the face, not both.")
        video = self._video(body["video"]) if body.get("video") is not None else None
        try:
            return await self._offer(sdp, mode, None if video else self._image(body.get("image")), video)
        finally:
            if video is not None:
                video.unlink(missing_ok=True)  # the session keeps its own decoded frames

    async def _offer(self, sdp: str, mode: str, image, video: Path | None) -> dict:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from ..errors import LipSyncError

        engine = await asyncio.to_thread(self.get_engine)
        if engine is None:
            raise HTTPProblem(503, "The model is still loading; try again in a moment.")
        limit = await asyncio.to_thread(self.limit, engine)
        if len(self.peers) + self._reserved >= limit:
            raise HTTPProblem(429, BUSY)
        self._reserved += 1
        pc = session = None
        try:
            try:
                face = {"video": video, "max_video_s": MAX_VIDEO_S} if video is not None else {"image": image}
                session = await asyncio.to_thread(engine.live, **face, max_side=self.max_side)
            except LipSyncError as e:  # the upload's temporary name means nothing to the visitor
                message = str(e).replace(video.name, "The uploaded file") if video is not None else str(e)
                raise HTTPProblem(400, message) from None
            pc = RTCPeerConnection(_rtc_configuration())
            peer = _Peer(pc, session, mode)
            try:
                self._wire(peer)  # before the offer is applied: it announces the visitor's tracks
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                pc.addTrack(peer.audio)  # after: they answer the offer's own audio and video sections
                pc.addTrack(peer.video)
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as e:  # noqa: BLE001 - aiortc raises many kinds on a bad offer
                log.info("live: unusable SDP offer: %s: %s", type(e).__name__, e)
                raise HTTPProblem(400, "The SDP offer could not be used (it offers no audio or video we can send).") from None
            self.peers[peer.id] = peer
            pc, session = None, None  # owned by the peer now
        finally:
            self._reserved -= 1
            if pc is not None:
                await pc.close()
            if session is not None:
                session.close()
        self._start_reaper()
        return {
            "id": peer.id,
            "sdp": peer.pc.localDescription.sdp,
            "type": peer.pc.localDescription.type,
            "mode": _mode(peer.session),
        }

    async def status(self, peer_id: str) -> dict:
        """What runs now (the speed policy may change it after the first second) and the session's counters."""
        s = self.peer(peer_id).session
        st = s.stats
        return {
            "mode": _mode(s),
            "frames": st.frames,
            "late_frames": st.late_frames,
            "repeated_frames": st.repeated_frames,
            "utterances": st.utterances,
            "frame_ms": round(st.frame_ms, 1),
        }

    def _image(self, data):
        if data is None:
            return self.image
        return _from_data_url(data, "image", "The portrait", MAX_IMAGE_BYTES, "jpeg")

    def _video(self, data) -> Path:
        """A visitor's video data URL, checked for size, written to a private temporary file."""
        import tempfile

        raw = _from_data_url(data, "video", "The video", MAX_VIDEO_BYTES, "mp4", "; send a few seconds of it")
        fd, name = tempfile.mkstemp(prefix="lipsync-live-", suffix=".video")  # the format is sniffed, not named
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        return Path(name)

    def _wire(self, peer: _Peer) -> None:
        pc = peer.pc
        FrameTrack = _track_classes()
        peer.video, peer.audio = FrameTrack("video"), FrameTrack("audio")

        @pc.on("datachannel")
        def _channel(channel) -> None:
            @channel.on("message")
            def _message(message) -> None:
                peer.last_seen = time.monotonic()

        @pc.on("track")
        def _track(track) -> None:
            if track.kind == "audio" and peer.mode == "mic":
                peer.tasks.append(asyncio.ensure_future(self._listen(peer, track)))

        @pc.on("connectionstatechange")
        async def _state() -> None:
            state = pc.connectionState
            if state == "connected" and not peer.connected:
                peer.connected = True
                peer.last_seen = time.monotonic()
                self._start_driver(peer)
            elif state in ("failed", "closed"):
                await self.close(peer.id)

    def _start_driver(self, peer: _Peer) -> None:
        import av

        loop = asyncio.get_running_loop()
        video, audio, session = peer.video, peer.audio, peer.session

        def hand(track, item) -> None:
            try:
                loop.call_soon_threadsafe(track.offer, item)
            except RuntimeError:  # the loop is closed
                pass

        def drive() -> None:
            sent = 0
            try:
                for f in session:
                    vf = av.VideoFrame.from_ndarray(f.image, format="rgb24")
                    vf.pts, vf.time_base = round(f.pts * 90_000), Fraction(1, 90_000)
                    af = av.AudioFrame.from_ndarray(f.audio[None, :], format="s16", layout="mono")
                    af.sample_rate = f.sample_rate
                    af.pts, af.time_base = sent, Fraction(1, f.sample_rate)
                    sent += len(f.audio)
                    hand(audio, af)
                    hand(video, vf)
            except Exception:
                log.exception("live: the session stopped")
            finally:
                hand(audio, None)
                hand(video, None)

        peer.driver = threading.Thread(target=drive, name=f"lipsync-live-{peer.id[:6]}", daemon=True)
        peer.driver.start()

    async def _listen(self, peer: _Peer, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        gate = _Gate()
        try:
            while not peer.session.closed:
                frame = await track.recv()
                peer.last_seen = time.monotonic()
                pcm = frame.to_ndarray()
                channels = len(frame.layout.channels)
                mono = pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm.reshape(-1)
                if frame.format.name not in ("s16", "s16p"):
                    continue
                gate.feed(peer.session, mono.astype(np.int16), frame.sample_rate)
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("live: microphone input stopped")

    def peer(self, peer_id: str) -> _Peer:
        peer = self.peers.get(peer_id)
        if peer is None:
            raise HTTPProblem(404, "No such live session (it ended or never existed); start a new one.")
        return peer

    async def say(self, peer_id: str, body) -> dict:
        from ..errors import LipSyncError
        from .text import speak

        peer = self.peer(peer_id)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise HTTPProblem(400, "Send {'text': '...', 'voice': optional voice id}.")
        voice = body.get("voice") or None
        peer.say_cancel.set()
        peer.say_cancel = cancel = threading.Event()
        peer.session.interrupt()
        try:
            n = await asyncio.to_thread(speak, peer.session, body["text"], voice, cancel)
        except LipSyncError as e:
            raise HTTPProblem(400, str(e)) from None
        return {"sentences": n}

    async def interrupt(self, peer_id: str) -> dict:
        peer = self.peer(peer_id)
        peer.say_cancel.set()
        peer.session.interrupt()
        return {"ok": True}

    async def close(self, peer_id: str) -> bool:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        peer.say_cancel.set()
        peer.session.close()
        for task in peer.tasks:
            task.cancel()
        await peer.pc.close()  # stops its transceivers: the senders' encoders, the receivers' decoders
        if peer.driver is not None:
            await asyncio.to_thread(peer.driver.join, 5.0)
        for track in (peer.video, peer.audio):
            if track is not None:
                track.stop()
                track.drain()
        peer.tasks.clear()
        peer.video = peer.audio = None
        await asyncio.to_thread(release_memory)
        log.info("live: session %s closed", peer_id[:6])
        return True

    async def close_all(self) -> None:
        for peer_id in list(self.peers):
            await self.close(peer_id)
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        while self.peers:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for peer in list(self.peers.values()):
                if peer.connected and now - peer.last_seen > KEEPALIVE_S:
                    log.info("live: session %s went quiet; freeing it", peer.id[:6])
                    await self.close(peer.id)
                elif not peer.connected and now - peer.created > CONNECT_S:
                    await self.close(peer.id)


def install(app, get_engine, *, image=None, prefix: str = "/live", max_sessions: int | None = None) -> LiveServer:
    """Add the live routes to a FastAPI app (before it starts serving). Returns the :class:`LiveServer`."""
    from fastapi.responses import JSONResponse

    server = LiveServer(get_engine, image=image, max_sessions=max_sessions)

    async def guarded(call):
        try:
            return JSONResponse(await call())
        except HTTPProblem as e:
            headers = {"Retry-After": "30"} if e.status == 429 else None
            return JSONResponse({"error": e.message}, status_code=e.status, headers=headers)

    async def body_of(request: Request):
        import json

        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise HTTPProblem(413, f"The request is larger than {MAX_BODY_BYTES // 2**20} MB.")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise HTTPProblem(413, f"The request is larger than {MAX_BODY_BYTES // 2**20} MB.")
        try:
            return json.loads(raw)
        except ValueError:
            raise HTTPProblem(400, "The request body must be JSON.") from None

    async def config() -> JSONResponse:
        return JSONResponse({"iceServers": ice_servers(), "iceTransportPolicy": ice_transport_policy(),
                             "keepalive_s": KEEPALIVE_S})

    async def offer(request: Request) -> JSONResponse:
        async def run():
            return await server.offer(await body_of(request))

        return await guarded(run)

    async def say(peer_id: str, request: Request) -> JSONResponse:
        async def run():
            return await server.say(peer_id, await body_of(request))

        return await guarded(run)

    async def interrupt(peer_id: str) -> JSONResponse:
        return await guarded(lambda: server.interrupt(peer_id))

    async def status(peer_id: str) -> JSONResponse:
        return await guarded(lambda: server.status(peer_id))

    async def delete(peer_id: str) -> JSONResponse:
        async def run():
            if not await server.close(peer_id):
                raise HTTPProblem(404, "No such live session (it ended or never existed).")
            return {"closed": peer_id}

        return await guarded(run)

    app.add_api_route(f"{prefix}/config", config, methods=["GET"])
    app.add_api_route(f"{prefix}/offer", offer, methods=["POST"])
    app.add_api_route(f"{prefix}/{{peer_id}}/say", say, methods=["POST"])
    app.add_api_route(f"{prefix}/{{peer_id}}/interrupt", interrupt, methods=["POST"])
    app.add_api_route(f"{prefix}/{{peer_id}}", status, methods=["GET"])
    app.add_api_route(f"{prefix}/{{peer_id}}", delete, methods=["DELETE"])
    app.state.lipsync_live = server
    return server


_PAGE = """
<div class="lipsync-live">
  <video class="lipsync-live-video" autoplay playsinline style="width:100%;max-width:512px;background:#111;border-radius:8px"></video>
  <label style="display:block;margin:6px 0">Face (optional; the example portrait otherwise): a photo, or a few
    seconds of video of the person, which plays back and forth while they talk
    <input type="file" class="lipsync-live-face" accept="image/*,video/*"></label>
  <div style="margin:8px 0;display:flex;gap:8px;flex-wrap:wrap">
    <button class="lipsync-live-mic lg secondary">Start with my microphone</button>
    <button class="lipsync-live-text lg secondary">Start for typed text</button>
    <button class="lipsync-live-stop lg stop" disabled>Stop</button>
  </div>
  <div style="display:flex;gap:8px;flex-wrap:wrap">
    <textarea class="lipsync-live-words" rows="2" style="flex:1;min-width:240px" placeholder="Type what the avatar should say"></textarea>
    <select class="lipsync-live-voice">__VOICES__</select>
    <button class="lipsync-live-say lg primary" disabled>Say it</button>
  </div>
  <p class="lipsync-live-status" role="status">Not connected.</p>
</div>
"""

_JS = """
const root = element;
const prefix = "__PREFIX__";
const $ = (c) => root.querySelector(c);
const video = $(".lipsync-live-video"), status = $(".lipsync-live-status");
let pc = null, id = null, ping = null, mic = null, poll = null, intro = "";
const say = (t) => { status.textContent = t; };
async function stop() {
  if (ping) clearInterval(ping);
  if (poll) clearInterval(poll);
  ping = poll = null;
  if (id) { fetch(`${prefix}/${id}`, {method: "DELETE"}).catch(() => {}); }
  if (pc) pc.close();
  if (mic) mic.getTracks().forEach((t) => t.stop());
  pc = id = mic = null;
  $(".lipsync-live-stop").disabled = true; $(".lipsync-live-say").disabled = true;
  $(".lipsync-live-mic").disabled = false; $(".lipsync-live-text").disabled = false;
}
async function start(mode) {
  await stop();
  $(".lipsync-live-mic").disabled = true; $(".lipsync-live-text").disabled = true;
  say("Connecting...");
  try {
    const cfg = await (await fetch(`${prefix}/config`)).json();
    pc = new RTCPeerConnection({iceServers: cfg.iceServers, iceTransportPolicy: cfg.iceTransportPolicy || "all"});
    const stream = new MediaStream();
    pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
    const dc = pc.createDataChannel("keepalive");
    dc.onopen = () => { ping = setInterval(() => { if (dc.readyState === "open") dc.send("ping"); }, 1000); };
    if (mode === "mic") {
      mic = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: true, noiseSuppression: true}});
      pc.addTransceiver(mic.getAudioTracks()[0], {direction: "sendrecv"});
    } else {
      pc.addTransceiver("audio", {direction: "recvonly"});
    }
    pc.addTransceiver("video", {direction: "recvonly"});
    await pc.setLocalDescription(await pc.createOffer());
    const file = $(".lipsync-live-face").files[0];
    let face = {};
    if (file) {  // sent as a data URL; the server sniffs the format itself
      const isImage = file.type.startsWith("image/");
      if (!isImage) say("Reading the video (a long one takes a few seconds)...");
      const url = await new Promise((ok, bad) => {
        const r = new FileReader(); r.onload = () => ok(r.result); r.onerror = () => bad(r.error); r.readAsDataURL(file);
      });
      const data = url.replace(/^data:[^;,]*/, isImage ? "data:image/any" : "data:video/any");
      face = isImage ? {image: data} : {video: data};
    }
    await new Promise((ok) => {
      if (pc.iceGatheringState === "complete") return ok();
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") ok(); });
      setTimeout(ok, 3000);
    });
    const r = await fetch(`${prefix}/offer`, {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer", mode, ...face})});
    const answer = await r.json();
    if (!r.ok) { say(answer.error || `Could not start (${r.status}).`); await stop(); return; }
    id = answer.id;
    window.lipsyncLive = {pc, mic, id};  // for the page's own checks (the browser test measures the delay from here)
    await pc.setRemoteDescription({sdp: answer.sdp, type: answer.type});
    $(".lipsync-live-stop").disabled = false; $(".lipsync-live-say").disabled = mode !== "text";
    const m = answer.mode;
    intro = mode === "mic" ? "Speak: the avatar repeats what you say." : "Type a sentence and press Say it.";
    const show = (m) => say(`Live on ${m.device}, ${m.width}x${m.height}` +
      (m.source && m.source !== "photo" ? `; face from a ${m.source}` : "") +
      (m.enhance ? `; mouth: ${m.enhance.split(":")[0]}` : "") + (m.blink ? `; blinks: ${m.blink.split(":")[0]}` : "") +
      (m.note ? `. This machine is slow for live video: ${m.note}` : "") + `. ${intro}`);
    show(m);
    poll = setInterval(async () => {  // the speed policy may change what runs after the first second
      if (!id) return;
      const r = await fetch(`${prefix}/${id}`).catch(() => null);
      if (r && r.ok) show((await r.json()).mode);
    }, 2000);
    pc.onconnectionstatechange = () => { if (["failed", "closed"].includes(pc && pc.connectionState)) { say("Disconnected."); stop(); } };
  } catch (err) { say(`Could not start: ${err.message || err}`); await stop(); }
}
$(".lipsync-live-mic").addEventListener("click", () => start("mic"));
$(".lipsync-live-text").addEventListener("click", () => start("text"));
$(".lipsync-live-stop").addEventListener("click", () => { stop(); say("Stopped."); });
$(".lipsync-live-say").addEventListener("click", async () => {
  if (!id) return;
  const r = await fetch(`${prefix}/${id}/say`, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({text: $(".lipsync-live-words").value, voice: $(".lipsync-live-voice").value})});
  if (!r.ok) say((await r.json()).error || `Could not say it (${r.status}).`);
});
window.addEventListener("beforeunload", stop);
"""


def build_tab(get_engine=None, *, prefix: str = "/live"):
    """The "Live" tab's components (call inside ``with gr.Tab("Live"):``); the routes come from :func:`install`.

    Returns the ``gr.HTML`` block (video, start/stop, text box, voice picker) whose script
    does getUserMedia and the RTCPeerConnection against ``prefix``.
    """
    import html

    import gradio as gr

    from ..speech import list_voices

    voices = [v for v in list_voices() if v.available]
    options = "".join(f'<option value="{html.escape(v.id)}">{html.escape(v.id)}</option>' for v in voices)
    gr.Markdown(
        "Talk live: the avatar speaks as the sound arrives. Use your microphone (it says what you say) "
        "or type sentences (the chosen voice speaks them one by one). The face is the example portrait, "
        "or a photo or short video you choose. One visitor at a time on a CPU."
    )
    return gr.HTML(_PAGE.replace("__VOICES__", options), js_on_load=_JS.replace("__PREFIX__", prefix))
