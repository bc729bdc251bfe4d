"""One visitor's connection: the tracks that carry the session's frames, the thread that feeds them,
the microphone's gate, and what the server keeps about the peer.

**Sound in 40 ms frames, each with its own timestamp.** The session's frames carry one
video frame's sound each (40 ms at 25 fps). aiortc's sender gives every packet made from
one encoder call the same RTP timestamp: its own Opus encoder turned a 40 ms frame into
two 20 ms packets with **one** timestamp, a browser dropped the second as a duplicate and
concealed the gap, and half of every stream went unheard. :class:`AudioPackets` cuts the
sound into 40 ms frames, each with its own timestamp, whatever the session's frame rate,
and :class:`~lipsync.live.web.opus.SpeechOpus` makes one packet of each (20 ms frames
cost twice the trips through the event loop's thread pool, for no sooner sound: a
picture's 40 ms are ready at once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from fractions import Fraction

import numpy as np

from .sending import LIVE_TRACK, SENDING

log = logging.getLogger("lipsync")

__all__ = ["AUDIO_FRAME_S", "AudioPackets", "Gate", "Peer", "frame_track_class", "mono_pcm", "picture", "start_driver"]

AUDIO_FRAME_S = 0.04  #: the sound goes to the encoder in frames of this length (one Opus packet each)
GATE_DBFS = -42.0  #: the microphone is pushed while louder than this...
GATE_HOLD_S = 0.4  #: ...and for this long after
VIDEO_QUEUE = 6  #: pictures waiting for the encoder (the newest are kept: a picture late is a picture lost)
AUDIO_QUEUE = 25  #: 40 ms sound frames waiting (1 s; sound is never dropped while connected)


def frame_track_class():
    """The aiortc track class that hands the encoder what the driver thread offers (imported on use)."""
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    class FrameTrack(MediaStreamTrack):
        """Frames handed over by the session's driver thread; None ends the track."""

        def __init__(self, kind: str, size: int):
            super().__init__()
            self.kind = kind
            self.queue: asyncio.Queue = asyncio.Queue(maxsize=size)
            self.dropped = 0  #: frames dropped unsent: the encoder fell behind (the visitor saw fewer)

        def offer(self, item) -> None:
            if self.queue.full():  # the encoder is behind (or nobody reads yet): keep the newest
                self.queue.get_nowait()
                self.dropped += 1
            self.queue.put_nowait(item)

        def drain(self) -> None:
            """Drop the frames still queued (their pictures are large, and nobody will send them)."""
            while not self.queue.empty():
                self.queue.get_nowait()

        async def recv(self):
            LIVE_TRACK.set(True)  # the sender's task reads a live session: its encoder is made for one
            item = await self.queue.get()
            if item is None:
                self.stop()
                raise MediaStreamError
            return item

    return FrameTrack


class AudioPackets:
    """int16 mono sound of any length in, 40 ms ``av.AudioFrame`` s out, each with its own timestamp.

    A remainder shorter than 40 ms waits for the next call, so the frames tile the
    timeline exactly: frame ``k`` starts at sample ``k * size``.
    """

    def __init__(self, sample_rate: int):
        self.rate = int(sample_rate)
        self.size = max(1, round(self.rate * AUDIO_FRAME_S))
        self.pts = 0
        self._rest = np.zeros(0, np.int16)

    def __call__(self, samples: np.ndarray) -> list:
        import av

        x = np.concatenate([self._rest, samples]) if self._rest.size else samples
        n = len(x) // self.size
        out = []
        for k in range(n):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x[k * self.size : (k + 1) * self.size])[None, :], format="s16", layout="mono"
            )
            frame.sample_rate = self.rate
            frame.pts, frame.time_base = self.pts, Fraction(1, self.rate)
            self.pts += self.size
            out.append(frame)
        self._rest = x[n * self.size :].copy()
        return out


class Gate:
    """An energy gate with pre-roll: pushes the microphone while someone speaks."""

    def __init__(self) -> None:
        self.open_until = 0.0
        self.preroll: list[tuple[np.ndarray, int]] = []

    def feed(self, session, samples: np.ndarray, rate: int) -> None:
        x = samples.astype(np.float32)
        level = 10 * np.log10(float(np.dot(x, x)) / (max(1, x.size) * 32768.0**2) + 1e-12)
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


class Peer:
    """What the server keeps about one visitor's connection."""

    def __init__(self, pc, session, mode: str, client: str):
        self.id = secrets.token_urlsafe(12)
        self.pc = pc
        self.session = session
        self.mode = mode
        self.client = client
        self.created = time.monotonic()
        self.ends_at: float | None = None  #: when the session's time limit ends it (monotonic), None: never
        self.last_seen = time.monotonic()
        self.connected = False
        self.video = self.audio = None
        self.channel = None  #: the page's data channel (keepalive pings in, notices out)
        self.listening = False  #: a microphone track is being read (one per peer)
        self.driver: threading.Thread | None = None
        self.tasks: list[asyncio.Task] = []
        self.say_cancel = threading.Event()
        self.seen = (0, 0)  #: pictures made and dropped unsent at the server's last look (its admission watches)

    def notify(self, kind: str, message: str) -> None:
        """Tell the page something (``{"type": kind, "message": ...}`` on the data channel), if it is open."""
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            try:
                channel.send(json.dumps({"type": kind, "message": message}))
            except Exception:  # noqa: BLE001 - the channel closed under us: nothing to tell
                pass


def mono_pcm(frame) -> np.ndarray:
    """An s16 or s16p ``av.AudioFrame``'s samples as int16 mono (its channels averaged)."""
    pcm = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if channels == 1:
        return pcm.reshape(-1)
    if frame.format.is_planar:  # (channels, samples)
        total = pcm.sum(axis=0, dtype=np.int32)
    else:  # (1, samples * channels), interleaved
        total = pcm.reshape(-1, channels).sum(axis=1, dtype=np.int32)
    return (total // channels).astype(np.int16)


def picture(rgb: np.ndarray):
    """An ``av.VideoFrame`` of an RGB picture, as yuv420p where its sides are even: what the encoders take.

    OpenCV converts in a third of the time the encoder's own conversion takes (0.3 against
    0.9 ms a 336 px picture, 2 cores), the same BT.601 studio-range values (luma within 1 of
    it, chroma within a mean 0.5); an odd side is left to the encoder. The frame wraps
    OpenCV's fresh array without copying it (the frame keeps it alive): the copy took
    0.17 ms of a 512 px picture, under the interpreter lock, against 0.008.
    """
    import av
    import cv2

    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        return av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return av.VideoFrame.from_numpy_buffer(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")


def start_driver(peer: Peer) -> None:
    """Iterate the peer's session on a thread of its own and hand each frame to the tracks."""

    loop = asyncio.get_running_loop()
    video, audio, session = peer.video, peer.audio, peer.session

    def hand(track, item) -> None:
        try:
            loop.call_soon_threadsafe(track.offer, item)
        except RuntimeError:  # the loop is closed
            pass

    def drive() -> None:
        packets = AudioPackets(session.sample_rate)
        try:
            for f in session:
                t = time.thread_time()
                vf = picture(f.image)
                vf.pts, vf.time_base = round(f.pts * 90_000), Fraction(1, 90_000)
                for af in packets(f.audio):
                    hand(audio, af)
                hand(video, vf)
                SENDING.handed(time.thread_time() - t)
        except Exception:
            log.exception("live: the session stopped")
        finally:
            hand(audio, None)
            hand(video, None)

    peer.driver = threading.Thread(target=drive, name=f"lipsync-live-{peer.id[:6]}", daemon=True)
    peer.driver.start()


async def listen(peer: Peer, track) -> None:
    """Push what the visitor's microphone says (gated) into the session until either ends."""
    from aiortc.mediastreams import MediaStreamError

    gate = Gate()
    try:
        while not peer.session.closed:
            frame = await track.recv()
            peer.last_seen = time.monotonic()
            if frame.format.name not in ("s16", "s16p"):
                continue
            gate.feed(peer.session, mono_pcm(frame), frame.sample_rate)
    except (MediaStreamError, asyncio.CancelledError):
        pass
    except Exception:
        log.exception("live: microphone input stopped")
