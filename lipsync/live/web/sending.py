"""What carrying the sessions over WebRTC costs this process's CPU, measured while it serves, for admission.

A session's own work (its mel windows, paste, head motion) is measured on its thread
(:meth:`lipsync.runtime.scheduler.Scheduler.note_picture`). Sending it costs more than that,
on other threads: aiortc's encoders (VP8 for the picture, Opus for the sound) and the
microphone's decoder run on the event loop's executor and the receivers' threads, and the
event loop itself packetises, encrypts and sends every packet in Python. Measured on
2 cores (``python benchmarks/live_web.py``, docs/live.md): a frame's own work 2-2.4 ms of
CPU, its sending about 3.8 ms more (5.3-5.9 before the pictures went to the encoder as
yuv420p, VP8 ran at speed 8, the sound's level was summed in numpy and the voice went out
in one packet a picture), of which the event loop's share about 1.25 ms.

:data:`SENDING` adds up, per picture encoded (a frame a track drops unsent when the encoder
falls behind costs nothing to send, so the unit is the one encoded):

* the encoders' and decoders' CPU time, on the thread each runs on (aiortc's
  ``get_encoder`` and ``get_decoder`` are wrapped once per process: :func:`watch_codecs`);
* the driver thread's work between the session and the tracks (the picture and sound
  wrapped as frames);
* the event loop thread's CPU time between two :meth:`SendMeter.tick` s (the server's
  reaper ticks it every half second while sessions run): everything the loop does,
  HTTP included, which errs on the safe side.

:attr:`SendMeter.cost` is the figure admission reads: CPU seconds a video frame, and of
them the share that runs Python under the interpreter lock (the loop and the driver's
part), which one process does one thread at a time.
"""

from __future__ import annotations

import math
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

__all__ = ["LIVE_TRACK", "SENDING", "SendCost", "SendMeter", "audio_level_dbov", "prefer_vp8", "watch_codecs"]

#: True in an aiortc sender's task once it has read a frame from a live session's track
#: (:func:`~lipsync.live.web.peer.frame_track_class`): its encoder is made right after that
#: read, in the same task, and only such senders get this package's encoders.
LIVE_TRACK: ContextVar[bool] = ContextVar("lipsync_live_track", default=False)

WINDOW_FRAMES = 250  #: a measurement covers at least this many video frames...
WINDOW_S = 5.0  #: ...and at least this long
EMA = 0.3  #: each new window's weight in :attr:`SendMeter.cost`


@dataclass(frozen=True)
class SendCost:
    """CPU time this process spends carrying one video frame (and its sound) to and from a visitor."""

    cpu_s: float  #: all of it: encoders, decoders, the driver's wrapping, the event loop
    locked_s: float  #: the part that is Python run under the interpreter lock (the event loop, the driver's part)
    frames: int  #: video frames the figure was measured on (all windows together)


class SendMeter:
    """Adds up the CPU that sending costs, per video frame (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cost: SendCost | None = None  #: the measured cost, None before a window has closed
        self.frames_total = 0  #: pictures encoded, ever
        self.coded_total_s = 0.0  #: the encoders' and decoders' CPU time, ever
        self._loop: int | None = None  # the thread whose CPU time counts as the event loop's
        self._restart()

    def _restart(self) -> None:
        self._codecs_s = 0.0
        self._driver_s = 0.0
        self._frames = 0
        self._t0: float | None = None
        self._loop_cpu0 = 0.0

    def coded(self, cpu_s: float, picture: bool = False) -> None:
        """An encoder or decoder took ``cpu_s`` of its thread's CPU for one frame (``picture``: a video frame
        encoded, the unit the cost is counted in)."""
        with self._lock:
            self._codecs_s += cpu_s
            self.coded_total_s += cpu_s
            if picture:
                self._frames += 1
                self.frames_total += 1

    def handed(self, cpu_s: float) -> None:
        """A driver thread handed one video frame (and its sound) to the tracks, which took it ``cpu_s``."""
        with self._lock:
            self._driver_s += cpu_s

    def start(self) -> None:
        """Begin a window now, on the event loop's thread (sessions start: what the loop did before is not
        theirs). The loop that starts last is the one measured (an app launched again runs a new loop)."""
        with self._lock:
            self._loop = threading.get_ident()
            self._restart()
            self._t0, self._loop_cpu0 = time.monotonic(), time.thread_time()

    def tick(self) -> SendCost | None:
        """On the event loop's thread, while sessions run: close the window once it is long enough."""
        now, loop_cpu = time.monotonic(), time.thread_time()
        with self._lock:
            if self._loop != threading.get_ident() or self._t0 is None:
                return self.cost  # another loop's ticks would mix two threads' clocks
            if self._frames < WINDOW_FRAMES or now - self._t0 < WINDOW_S:
                return self.cost
            loop_s = max(0.0, loop_cpu - self._loop_cpu0)
            n = self._frames
            cpu = (self._codecs_s + self._driver_s + loop_s) / n
            locked = (self._driver_s + loop_s) / n
            old = self.cost
            if old is not None:
                cpu, locked = old.cpu_s + EMA * (cpu - old.cpu_s), old.locked_s + EMA * (locked - old.locked_s)
            self.cost = SendCost(cpu, locked, n + (old.frames if old else 0))
            self._restart()
            self._t0, self._loop_cpu0 = now, loop_cpu
            return self.cost


SENDING = SendMeter()  #: this process's meter (the CPU is the process's, whichever server sends)


class _Timed:
    """An aiortc encoder or decoder whose ``encode``/``decode`` calls are timed on their thread."""

    def __init__(self, inner, meter: SendMeter, picture: bool):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_meter", meter)
        object.__setattr__(self, "_picture", picture)

    def encode(self, *args, **kw):
        return self._timed(self._inner.encode, self._picture, *args, **kw)

    def decode(self, *args, **kw):
        return self._timed(self._inner.decode, False, *args, **kw)

    def _timed(self, call, picture: bool, *args, **kw):
        t = time.thread_time()
        try:
            return call(*args, **kw)
        finally:
            self._meter.coded(time.thread_time() - t, picture)

    def __getattr__(self, name):  # pack(), target_bitrate and the rest: the inner one's
        return getattr(self._inner, name)

    def __setattr__(self, name, value):  # the sender sets target_bitrate from the visitor's reports
        setattr(self._inner, name, value)


def watch_codecs() -> None:
    """Time every encoder and decoder aiortc makes from now on in this process, for :data:`SENDING`, and
    compute each sound packet's level with :func:`audio_level_dbov` (idempotent).

    A live session's tracks (:data:`LIVE_TRACK`) are encoded with
    :class:`~lipsync.live.web.vp8.TalkingHeadVp8` and :class:`~lipsync.live.web.opus.SpeechOpus`;
    any other aiortc sender in the process (an app's own stream, a Pipecat transport) keeps
    aiortc's encoders: settings made for an avatar's clean renders have no business with
    someone's camera, nor a mono voice encoder with someone's stereo music.
    """
    from aiortc import rtcrtpreceiver, rtcrtpsender

    for module, name in ((rtcrtpsender, "get_encoder"), (rtcrtpreceiver, "get_decoder")):
        make = getattr(module, name)
        if getattr(make, "_lipsync_timed", False):
            continue

        def timed(codec, _make=make, _encodes=name == "get_encoder"):
            mime = codec.mimeType.lower()
            ours = _encodes and LIVE_TRACK.get()
            if ours and mime == "video/vp8":
                from .vp8 import TalkingHeadVp8

                coder = TalkingHeadVp8()  # libvpx set for an avatar's pictures: less CPU, no denoiser
            elif ours and mime == "audio/opus":
                from .opus import SpeechOpus

                coder = SpeechOpus()  # a voice: mono, one 40 ms packet a picture
            else:
                coder = _make(codec)
            # the unit: a picture encoded (a frame that the track dropped unsent costs nothing to send)
            return _Timed(coder, SENDING, _encodes and mime.startswith("video/"))

        timed._lipsync_timed = True
        setattr(module, name, timed)

    from aiortc import rtp

    rtp.compute_audio_level_dbov = audio_level_dbov  # the same level, without a Python loop on the event loop


def audio_level_dbov(frame) -> int:
    """A sound packet's level for its RTP header (RFC 6465 appendix A), as aiortc computes it, in numpy.

    aiortc's own sums the squares of every sample in a Python loop on the event loop's
    thread: 0.14 ms for each 20 ms of sound.
    """
    x = np.frombuffer(frame.planes[0], dtype=np.int16).astype(np.float64)
    rms = math.sqrt(float(np.dot(x, x)) / (frame.samples * 32767 * 32767))
    if rms <= 0:
        return -127
    return round(min(0.0, max(-127.0, 20 * math.log10(rms))))


def prefer_vp8(pc) -> None:
    """Send the picture as VP8 wherever the visitor's offer allows it, whatever the offer's order.

    aiortc answers with the offer's first codec it knows; Safari lists H.264 first, and
    aiortc's H.264 encoder took 2.6 times the CPU of its VP8 encoder for the same 512 px
    pictures (11.9 against 4.6 ms a picture, on 2 cores), on threads of its own the meter
    does not see. Call between ``setRemoteDescription`` and ``createAnswer``.
    """
    from aiortc.codecs import is_rtx

    for t in pc.getTransceivers():
        codecs = list(getattr(t, "_codecs", None) or [])
        if t.kind != "video" or not codecs:
            continue
        vp8 = [c for c in codecs if c.mimeType.lower() == "video/vp8"]
        if not vp8 or codecs[0] in vp8:
            continue
        types = {c.payloadType for c in vp8}
        first = vp8 + [c for c in codecs if is_rtx(c) and c.parameters.get("apt") in types]
        t._codecs = first + [c for c in codecs if c not in first]  # the answer's order, and what the sender uses
