"""The live sessions of one app: admission, signalling, typed text, and the end of every session.

**Admission** comes before an offer's body is read, so a busy server answers at once
(429 with ``Retry-After``) without decoding tens of megabytes: the session limit
(``$LIPSYNC_LIVE_SESSIONS``; by default ``auto``: what the network holds, measured at
load and again while sessions run; see :meth:`LiveServer.capacity`), at most
:data:`MAX_PENDING` offers being handled at once, one session per visitor's address,
and at most one offer a second from one address.

**A session's life** ends when the visitor stops, when the page goes quiet (no
ping or microphone packet for :data:`KEEPALIVE_S`), when an answered offer never
connects (:data:`CONNECT_S`), or at ``$LIPSYNC_LIVE_MAX_S`` (default 600 s on a CPU,
none on a GPU; 0 = none), so one visitor cannot hold a public link's only slot.
The page is told why in plain words on its data channel.

**Threads.** aiortc encodes every frame on the event loop's default executor. The
slow calls here (speech synthesis, opening a session, joins, giving memory back)
run on executors of their own, so a few "Say it" clicks never stall the streams.

Every message a visitor sees goes through the web app's message policy
(:mod:`lipsync.webapp.messages`): no server paths, no Python names.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...webapp.messages import hide_paths, plain_message
from ..turn import rtc_configuration
from .http import HTTPProblem
from .peer import AUDIO_QUEUE, VIDEO_QUEUE, Peer, frame_track_class, listen, start_driver
from .sending import SENDING, prefer_vp8, watch_codecs

log = logging.getLogger("lipsync")

__all__ = ["BUSY", "KEEPALIVE_S", "LOADING", "LiveServer", "busy", "check_offer", "public", "release_place",
           "take_place", "wait_words"]

KEEPALIVE_S = 3.5  #: a peer with no ping and no microphone packet for this long is closed
CONNECT_S = 20.0  #: an answered offer must connect within this
MAX_SDP = 64_000
MAX_IMAGE_BYTES = 8 * 2**20
MAX_VIDEO_BYTES = 20 * 2**20  #: a visitor's driving video (sent as a data URL)
MAX_VIDEO_S = 30.0  #: ...and its longest duration: it loops, so a few seconds are enough
MAX_BODY_BYTES = MAX_VIDEO_BYTES * 4 // 3 + MAX_SDP + 4096  #: the largest JSON body a route reads
MAX_SAY_BYTES = 64 * 1024  #: the largest body /say reads (2,000 characters of text and a voice id)
MAX_PENDING = 2  #: offers being read and opened at once; more are refused as busy
OFFER_INTERVAL_S = 1.0  #: one address may open an offer this often
DEFAULT_MAX_S = 600.0  #: a session's longest life on a CPU (``$LIPSYNC_LIVE_MAX_S``)
LIVE_FPS = 25.0  #: the page's sessions' frame rate
#: on a GPU the CPU does every session's picture work and encodes it: at most this many per core until both are
#: measured (then: CAPACITY_MARGIN x cores / (fps x (own work + sending)))
GPU_SESSIONS_PER_CORE = 4
UNSENT_SHARE = 0.01  #: more than this share of the pictures dropped unsent (encoders behind): admit no more...
UNSENT_HOLD_S = 10.0  #: ...for this long after
UNSENT_WINDOW = 125  #: pictures made that one judgement covers (5 s of one session)...
UNSENT_WINDOW_S = 2.0  #: ...over at least this long
EXAMPLE = Path(__file__).resolve().parents[3] / "assets" / "astronaut.jpg"
CONSENT = ("Tick the consent box first: a face of your own choosing may only be used with the right to "
           "use that person's likeness.")
BUSY = "The live avatar is busy with other visitors right now; try again in about {wait}."
LOADING = "The model is still loading; try again in a moment."
#: the sections one offer may carry: the avatar's sound (and the visitor's microphone), its picture, the data channel
SECTIONS = {"audio": 1, "video": 1, "application": 1}


def public(message: str) -> str:
    """A message as a visitor may see it (the web app's one policy)."""
    return hide_paths(message)


def wait_words(seconds: float) -> str:
    """How long to wait, in words (``"15 seconds"``, ``"3 minutes"``), as :data:`BUSY` says it."""
    if seconds < 90:
        return f"{max(5, int(math.ceil(seconds / 5.0)) * 5)} seconds"
    return f"{int(math.ceil(seconds / 60.0))} minutes"


def busy(wait: float) -> HTTPProblem:
    """429: every place is taken; try again in about ``wait`` seconds."""
    return HTTPProblem(429, BUSY.format(wait=wait_words(wait)), wait)


def take_place(pending: dict[str, int], client: str, held: int, per_client: int) -> None:
    """Count ``client``'s offer as being handled, or refuse (429) one beyond its share (``held`` sessions
    open or opening). Local and cluster admission alike; :func:`release_place` undoes it."""
    if held + pending.get(client, 0) >= per_client:
        raise HTTPProblem(429, "You already have a live session open (one per visitor); stop it first.", 5)
    pending[client] = pending.get(client, 0) + 1


def release_place(pending: dict[str, int], client: str) -> None:
    n = pending.get(client, 0) - 1
    if n > 0:
        pending[client] = n
    else:
        pending.pop(client, None)


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


def _check_sdp(sdp) -> str:
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or "\nm=" not in sdp:
        raise HTTPProblem(400, "The SDP offer is malformed: send {'type': 'offer', 'sdp': 'v=0...'}.")
    if len(sdp) > MAX_SDP:
        raise HTTPProblem(400, "The SDP offer is too long.")
    counts: dict[str, int] = {}
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
    for kind, n in counts.items():
        if n > SECTIONS.get(kind, 0):
            raise HTTPProblem(400, "The offer may carry one audio section, one video section and one data channel.")
    return sdp


def check_offer(body) -> tuple[str, str, str, object, object]:
    """An offer's fields, checked before anything is decoded: ``(sdp, mode, framing, image, video)``.

    Raises:
        HTTPProblem: 400 saying what is wrong (a malformed SDP, an unknown mode or framing, a photo and
            a video both, or a face of the visitor's own without ``"consent": true``).
    """
    if not isinstance(body, dict):
        raise HTTPProblem(400, "Send a JSON object with the SDP offer.")
    if body.get("type") != "offer":
        raise HTTPProblem(400, "The SDP offer is malformed: send {'type': 'offer', 'sdp': 'v=0...'}.")
    sdp = _check_sdp(body.get("sdp"))
    mode = body.get("mode", "text")
    if mode not in ("mic", "text"):
        raise HTTPProblem(400, "mode must be 'mic' or 'text'.")
    framing = body.get("framing", "call")
    if framing not in ("call", "full"):
        raise HTTPProblem(400, "framing must be 'call' (head and shoulders) or 'full' (the whole picture).")
    image, video = body.get("image"), body.get("video")
    if image is not None and video is not None:
        raise HTTPProblem(400, "Send a photo or a video for the face, not both.")
    if (image is not None or video is not None) and body.get("consent") is not True:
        raise HTTPProblem(400, CONSENT)
    return sdp, mode, framing, image, video


class LiveServer:
    """The live sessions of one app, each a :class:`~lipsync.live.LiveSession` behind a WebRTC peer.

    Args:
        get_engine: returns the app's :class:`~lipsync.LipSync` (called off the event loop).
        image: the default portrait (needs no consent: it is the app's own).
        max_sessions: the limit (default ``$LIPSYNC_LIVE_SESSIONS``, else ``auto``: measured, see :meth:`capacity`).
        max_side: the live picture's long side.
        max_s: a session's longest life in seconds, 0 for none (default ``$LIPSYNC_LIVE_MAX_S``,
            else 600 on a CPU and none on a GPU).
        per_client: sessions one visitor's address may hold at once.
        offer_interval_s: one address may send an offer this often.
        max_pending: offers handled at once.
        cores: the CPU cores its sessions' pictures are encoded on, for the limit on a GPU (default: the
            machine's; a worker that shares its machine with others has its share).
        gpu_share: the share of its GPU its engine has (1/N where N workers share one), for the limit on a GPU.
    """

    def __init__(self, get_engine, *, image=None, max_sessions: int | None = None, max_side: int = 512,
                 max_s: float | None = None, per_client: int = 1, offer_interval_s: float = OFFER_INTERVAL_S,
                 max_pending: int = MAX_PENDING, cores: float | None = None, gpu_share: float = 1.0):
        self.get_engine = get_engine
        self.image = image if image is not None else EXAMPLE
        self.max_sessions = max_sessions
        self.max_side = max_side
        self.max_s = max_s
        self.per_client = per_client
        self.offer_interval_s = offer_interval_s
        self.max_pending = max_pending
        self.cores = cores
        self.gpu_share = gpu_share
        self.peers: dict[str, Peer] = {}
        self.pending: dict[str, int] = {}  #: offers being handled, by visitor's address
        self._last_offer: dict[str, float] = {}
        self._reaper: asyncio.Task | None = None
        # the slow calls run here, never on the loop's default executor, which aiortc encodes on
        self._work = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lipsync-live-work")
        self._voice = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lipsync-live-voice")
        self._measuring = asyncio.Lock()
        self._hinted = False  # the log said once that more processes per GPU would serve more
        self._short_until = 0.0  # pictures went unsent (the CPU is short): admit no more before this (monotonic)
        self._unsent = [0, 0, time.monotonic()]  # this window's pictures made, pictures dropped unsent, its start

    async def _run(self, fn, *args, pool=None, **kw):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool or self._work, lambda: fn(*args, **kw))

    # -- limits -------------------------------------------------------------------------
    def limit(self, engine) -> int:
        """How many sessions run at once: ``max_sessions``, else ``$LIPSYNC_LIVE_SESSIONS`` (a number),
        else (``auto``, the default) what the engine's network holds, measured (:meth:`capacity`)."""
        return self.capacity(engine)["limit"]

    def capacity(self, engine) -> dict:
        """The limit and where it comes from: fixed, or measured (the batched rate at load, then the
        rate the running sessions get; see :meth:`lipsync.runtime.scheduler.Scheduler.capacity`)."""
        from ...runtime.scheduler import CAPACITY_MARGIN, env_sessions

        fixed = self.max_sessions if self.max_sessions is not None else env_sessions()
        if fixed is not None:
            return {"limit": fixed, "how": "fixed by the server's settings"}
        generator = engine.generator
        sending = SENDING.cost  # what carrying a frame over WebRTC costs this process, once measured
        cap = generator.scheduler.capacity(LIVE_FPS, sending_s=sending.cpu_s if sending else 0.0,
                                           sending_locked_s=sending.locked_s if sending else 0.0)
        if cap is None:  # not measured yet (the route measures first; this is the fallback)
            return {"limit": 1, "how": "not measured yet"}
        limit = cap.sessions
        how = cap.source
        if generator.device.type == "cuda":
            cores = self.cores or os.cpu_count() or 1
            if sending and cap.work_s:  # each session's own work and its sending, spread over the cores
                by_cores = int(CAPACITY_MARGIN * cores / (LIVE_FPS * (cap.work_s + sending.cpu_s)))
                how += f"; {by_cores} on {cores:g} CPU cores"
            else:  # not measured yet: a rule of thumb
                by_cores = int(GPU_SESSIONS_PER_CORE * cores)
            share = int(cap.network * self.gpu_share)
            if cap.work_s and cap.process < share // 2 and not self._hinted:
                self._hinted = True  # once: a process holds a fraction of what its share of the GPU would
                log.info("live: this process holds %d sessions (%s); its share of the GPU would hold %d: more worker "
                         "processes per GPU (app.py --ray --workers-per-gpu N) would serve more", cap.process,
                         cap.source, share)
            limit = max(1, min(share,  # its share (measured, the others may have been idle)
                               cap.process,  # what this process's interpreter holds (its own, whatever the share)
                               by_cores))  # what its CPU cores hold
        if self.holding_for_unsent and len(self.peers) < limit:
            limit = max(1, len(self.peers))  # what is measured said more; what the visitors get says no
            how += "; pictures are going unsent (the CPU is short): no more sessions until they go out whole"
        return {"limit": limit, "frames_per_s": cap.frames_per_s, "fps": cap.fps, "how": how}

    @property
    def holding_for_unsent(self) -> bool:
        """Pictures went unsent lately (the CPU is short): no one is admitted beyond the sessions running."""
        return time.monotonic() < self._short_until

    def _watch_unsent(self, now: float) -> None:
        """On each reaper tick: once a window holds enough pictures, if more than :data:`UNSENT_SHARE` of them
        were dropped unsent (the encoders fell behind), admit no more sessions for :data:`UNSENT_HOLD_S`."""
        window = self._unsent
        for peer in self.peers.values():
            if peer.video is None or not peer.connected:
                continue
            made, dropped = peer.session.stats.frames, peer.video.dropped
            window[0] += made - peer.seen[0]
            window[1] += dropped - peer.seen[1]
            peer.seen = (made, dropped)
        if window[0] >= UNSENT_WINDOW and now - window[2] >= UNSENT_WINDOW_S:
            if window[1] > UNSENT_SHARE * window[0]:
                if now >= self._short_until:
                    log.warning("live: %d of %d pictures went unsent (their encoders fell behind): no more sessions "
                                "until they go out whole", window[1], window[0])
                self._short_until = now + UNSENT_HOLD_S
            self._unsent = [0, 0, now]

    async def measured(self, engine) -> None:
        """Measure the network's batched rate once, off the event loop, where the limit is ``auto``."""
        from ...runtime.scheduler import env_sessions

        fixed = self.max_sessions if self.max_sessions is not None else env_sessions()
        if fixed is None and engine.generator.scheduler.capacity(LIVE_FPS) is None:
            async with self._measuring:
                if engine.generator.scheduler.capacity(LIVE_FPS) is None:
                    cap = await self._run(engine.generator.measure_capacity, LIVE_FPS)
                    log.info("live: %d sessions at once (%.0f frames/s batched, %s)", cap.sessions,
                             cap.frames_per_s, cap.source)

    async def report(self) -> dict:
        """``GET /live/capacity``: sessions running, the limit, and the network's measured rate."""
        engine = await self._engine()
        await self.measured(engine)
        return {"running": len(self.peers), **self.capacity(engine)}

    def max_life(self, engine) -> float:
        """A session's longest life in seconds (0: none)."""
        if self.max_s is not None:
            return max(0.0, float(self.max_s))
        env = os.environ.get("LIPSYNC_LIVE_MAX_S", "").strip()
        if env:
            try:
                value = float(env)
                if value >= 0 and math.isfinite(value):
                    return value
            except ValueError:
                pass
            log.warning("live: LIPSYNC_LIVE_MAX_S=%r is not a number of seconds (0 = no limit); using the default", env)
        return DEFAULT_MAX_S if engine.generator.device.type == "cpu" else 0.0

    def _free_in(self) -> float:
        """Seconds until a slot may free up (the earliest session's time limit, else a guess)."""
        ends = [p.ends_at - time.monotonic() for p in self.peers.values() if p.ends_at is not None]
        return max(5.0, min(ends)) if ends else 30.0

    async def admit(self, client: str):
        """Take a place for ``client``'s offer, before its body is read, or refuse: 429 busy or too
        fast, 503 while the model loads. Returns the engine; call :meth:`release` when done."""
        now = time.monotonic()
        last = self._last_offer.get(client)
        self._last_offer[client] = now
        if len(self._last_offer) > 4096:  # forget addresses that have not asked for a minute
            self._last_offer = {c: t for c, t in self._last_offer.items() if now - t < 60}
        if last is not None and now - last < self.offer_interval_s:
            raise HTTPProblem(429, "Too many attempts; wait a second and start again.", self.offer_interval_s)
        engine = await self._engine()
        await self.measured(engine)  # once: the limit the network holds (``auto``)
        # from here to the count below nothing awaits: offers arriving together are counted one by one
        if sum(self.pending.values()) >= self.max_pending:
            raise busy(10)
        limit = self.limit(engine)
        running = len(self.peers) + sum(self.pending.values())
        if running >= limit:
            raise busy(self._free_in())
        take_place(self.pending, client, sum(1 for p in self.peers.values() if p.client == client), self.per_client)
        return engine

    def release(self, client: str) -> None:
        release_place(self.pending, client)

    async def _engine(self):
        """The loaded engine; 503 while it loads or when it cannot be loaded (the details go to the log)."""
        from ...errors import LipSyncError

        try:
            engine = await self._run(self.get_engine)
        except LipSyncError as e:
            log.warning("live: no engine: %s", e)
            raise HTTPProblem(503, plain_message(e)) from None
        if engine is None or getattr(engine, "loading", False):
            raise HTTPProblem(503, LOADING, 10)
        if not getattr(engine, "loaded", True):
            try:
                await self._run(engine.load)
            except LipSyncError as e:
                log.warning("live: the model could not be loaded: %s", e)
                raise HTTPProblem(503, f"The model could not be loaded. {plain_message(e)}") from None
            except Exception:  # noqa: BLE001 - the visitor gets a plain line, the operator the traceback
                log.exception("live: the model could not be loaded")
                raise HTTPProblem(503, "The model could not be loaded; the details are in the server's log.") from None
        return engine

    # -- signalling -----------------------------------------------------------------------
    async def offer(self, body, client: str, engine) -> dict:
        """Answer an admitted offer: check it, take the face (consent first), open the session, wire the peer."""
        sdp, mode, framing, image, video = check_offer(body)
        path = self._video(video) if video is not None else None
        try:
            face = ({"video": path, "max_video_s": MAX_VIDEO_S} if path is not None
                    else {"image": self._image(image)})
            face["framing"] = framing
            return await self._open(engine, sdp, mode, face, client, path)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)  # the session keeps its own decoded frames

    async def _open(self, engine, sdp: str, mode: str, face: dict, client: str, upload: Path | None) -> dict:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from ...errors import LipSyncError

        watch_codecs()  # what its encoders and decoders cost counts in admission
        pc = session = None
        try:
            try:
                session = await self._run(engine.live, **face, max_side=self.max_side)
            except LipSyncError as e:  # the upload's temporary name means nothing to the visitor
                message = str(e).replace(upload.name, "The uploaded file") if upload is not None else str(e)
                raise HTTPProblem(400, message) from None
            pc = RTCPeerConnection(rtc_configuration())
            peer = Peer(pc, session, mode, client)
            life = self.max_life(engine)
            peer.ends_at = peer.created + life if life > 0 else None
            try:
                self._wire(peer)  # before the offer is applied: it announces the visitor's tracks
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                prefer_vp8(pc)  # the cheapest picture to encode, where the visitor can take it
                pc.addTrack(peer.audio)  # after: they answer the offer's own audio and video sections
                pc.addTrack(peer.video)
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as e:  # noqa: BLE001 - aiortc raises many kinds on a bad offer
                log.info("live: unusable SDP offer: %s: %s", type(e).__name__, e)
                raise HTTPProblem(400, "The SDP offer could not be used (it offers no audio or video we can send).") from None
            self.peers[peer.id] = peer
            pc, session = None, None  # owned by the peer now
        finally:
            if pc is not None:
                await pc.close()
            if session is not None:
                await self._run(session.close)
        self._start_reaper()
        return {
            "id": peer.id,
            "sdp": peer.pc.localDescription.sdp,
            "type": peer.pc.localDescription.type,
            "mode": self.mode(peer.session),
            "max_s": round(peer.ends_at - peer.created) if peer.ends_at else 0,
        }

    def mode(self, session) -> dict:
        """What runs, for the page: one plain line (``summary``) and the details (for a hover, and the API)."""
        m = session.mode
        return {"summary": public(m.summary()), "device": m.device, "step": m.step, "width": m.width,
                "height": m.height, "framing": m.framing, "note": public(m.reason), "enhance": public(m.enhance),
                "blink": public(m.blink), "source": public(m.source)}

    async def status(self, peer_id: str, client: str | None = None) -> dict:
        """What runs now (the speed policy may change it after the first second) and the session's counters."""
        peer = self.peer(peer_id, client)
        s = peer.session
        st = s.stats
        return {
            "mode": self.mode(s),
            "frames": st.frames,
            "late_frames": st.late_frames,
            "repeated_frames": st.repeated_frames,
            "held_frames": st.held_frames,
            # pictures made but never sent: their encoder fell behind (the machine is short of CPU)
            "unsent_frames": peer.video.dropped if peer.video is not None else 0,
            "utterances": st.utterances,
            "frame_ms": round(st.frame_ms, 1),
            "left_s": round(max(0.0, peer.ends_at - time.monotonic())) if peer.ends_at else None,
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

    def _wire(self, peer: Peer) -> None:
        pc = peer.pc
        FrameTrack = frame_track_class()
        peer.video, peer.audio = FrameTrack("video", VIDEO_QUEUE), FrameTrack("audio", AUDIO_QUEUE)

        @pc.on("datachannel")
        def _channel(channel) -> None:
            if peer.channel is None:
                peer.channel = channel

            @channel.on("message")
            def _message(message) -> None:
                peer.last_seen = time.monotonic()

        @pc.on("track")
        def _track(track) -> None:
            if track.kind == "audio" and peer.mode == "mic" and not peer.listening:
                peer.listening = True  # one microphone per session, however many the offer names
                peer.tasks.append(asyncio.ensure_future(listen(peer, track)))

        @pc.on("connectionstatechange")
        async def _state() -> None:
            state = pc.connectionState
            if state == "connected" and not peer.connected:
                peer.connected = True
                peer.last_seen = time.monotonic()
                start_driver(peer)
            elif state in ("failed", "closed"):
                await self.close(peer.id)

    def peer(self, peer_id: str, client: str | None = None) -> Peer:
        """The session ``peer_id``, when it is ``client``'s (another visitor's id is as good as none: 404)."""
        peer = self.peers.get(peer_id)
        if peer is None or (client is not None and peer.client != client):
            raise HTTPProblem(404, "No such live session (it ended or never existed); start a new one.")
        return peer

    async def say(self, peer_id: str, body, client: str | None = None) -> dict:
        """Speak typed text (sentence by sentence, as each is synthesised) in the peer's session."""
        from ...errors import LipSyncError
        from ..text import MAX_TEXT_CHARS, speak

        peer = self.peer(peer_id, client)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise HTTPProblem(400, "Send {'text': '...', 'voice': optional voice id}.")
        text, voice = body["text"], body.get("voice") or None
        if len(text) > MAX_TEXT_CHARS:  # before anything else reads it
            raise HTTPProblem(400, f"The text has {len(text):,} characters; the live avatar takes up to "
                                   f"{MAX_TEXT_CHARS:,} at a time. Send it in parts.")
        if voice is not None and not isinstance(voice, str):
            raise HTTPProblem(400, "voice must be a voice id such as 'espeak:en-us'.")
        peer.say_cancel.set()
        peer.say_cancel = cancel = threading.Event()
        peer.session.interrupt()
        try:
            n = await self._run(speak, peer.session, text, voice, cancel, pool=self._voice)
        except LipSyncError as e:
            log.info("live: say refused: %s", e)
            raise HTTPProblem(400, plain_message(e)) from None
        return {"sentences": n}

    async def interrupt(self, peer_id: str, client: str | None = None) -> dict:
        peer = self.peer(peer_id, client)
        peer.say_cancel.set()
        peer.session.interrupt()
        return {"ok": True}

    # -- the end of sessions ----------------------------------------------------------------
    async def close(self, peer_id: str, notice: str = "") -> bool:
        """End a session: tell the page why (``notice``), stop its tracks and thread, give its memory back."""
        from ...memory import release_memory

        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        if notice:
            peer.notify("ended", notice)
            await asyncio.sleep(0.05)  # let the notice leave before the connection goes
        peer.say_cancel.set()
        await self._run(peer.session.close)
        for task in peer.tasks:
            task.cancel()
        await peer.pc.close()  # stops its transceivers: the senders' encoders, the receivers' decoders
        if peer.driver is not None:
            await self._run(peer.driver.join, 5.0)
        for track in (peer.video, peer.audio):
            if track is not None:
                track.stop()
                track.drain()
        peer.tasks.clear()
        peer.video = peer.audio = peer.channel = None
        await self._run(release_memory)
        log.info("live: session %s closed%s", peer_id[:6], f" ({notice})" if notice else "")
        return True

    async def close_all(self) -> None:
        """End every session (the app is shutting down): their tracks, threads and video spools go."""
        for peer_id in list(self.peers):
            await self.close(peer_id, "The app is shutting down.")
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    async def aclose(self) -> None:
        """At the app's shutdown: end every session, remove every spool, stop the server's own threads."""
        await self.close_all()
        self._work.shutdown(wait=False, cancel_futures=True)
        self._voice.shutdown(wait=False, cancel_futures=True)

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        SENDING.start()  # sessions run from now: what the event loop does counts as carrying them
        while self.peers:
            await asyncio.sleep(0.5)
            SENDING.tick()
            now = time.monotonic()
            self._watch_unsent(now)
            for peer in list(self.peers.values()):
                if peer.ends_at is not None and now >= peer.ends_at:
                    minutes = (peer.ends_at - peer.created) / 60
                    span = f"{minutes:.0f} minutes" if minutes >= 1 else f"{peer.ends_at - peer.created:.0f} seconds"
                    await self.close(peer.id, f"This live session reached its time limit ({span}). "
                                              "Start again to go on.")
                elif peer.connected and now - peer.last_seen > KEEPALIVE_S:
                    log.info("live: session %s went quiet; freeing it", peer.id[:6])
                    await self.close(peer.id)
                elif not peer.connected and now - peer.created > CONNECT_S:
                    await self.close(peer.id)
