"""The live voice's Opus encoder: one mono 40 ms packet a picture.

aiortc's own Opus encoder sends stereo at 96 kbit/s in 20 ms packets: two encoder calls,
two trips through the event loop's thread pool and two packets for each 40 ms picture
(25 frames a second), each trip a wait for the interpreter lock. A session's sound is
one voice, mono, and each picture's 40 ms of it is ready at once, so nothing is gained
by cutting it finer. :class:`SpeechOpus` sends it as what a browser sends for a voice
(mono) in one 40 ms packet a call.

**The page keeps a floor under the browser's sound buffer** (``jitterBufferTarget``, 80 ms,
in ``static/live.js``). While the avatar is quiet its packets leave exactly 40 ms apart,
and Chromium's buffer shrinks to match (49-78 ms); when speech starts, the first pictures
with a moving mouth run the network and leave 38-55 ms late, and the sound leaves with
its picture: without the floor it ran dry at the onset once in 20 runs of the browser
test. aiortc's 20 ms packets leave in pairs and kept the buffer at 69-99 ms by themselves.
With the floor, none ran dry at the onset in 60 runs; what is left (3 runs in 40, at most
26 ms) follows a stall of the whole session on a busy machine, which aiortc's voice meets
as well (3 in 40, up to 175 ms). docs/live.md has the runs.
"""

from __future__ import annotations

import fractions

__all__ = ["BITRATE", "FRAME_S", "SpeechOpus"]

RATE = 48_000  #: Opus's clock in RTP, whatever the voice's own rate
FRAME_S = 0.04  #: one packet carries this much sound: one picture's at 25 frames a second
BITRATE = 48_000  #: mono voice (aiortc: 96,000 stereo; browsers send a voice at about 32,000)
TIME_BASE = fractions.Fraction(1, RATE)


class SpeechOpus:
    """aiortc's encoder interface (``encode``, ``pack``) for a voice: mono, 40 ms a packet.

    A frame of s16 mono sound at 48 kHz that is exactly 40 ms long (what the live tracks
    hand it) goes straight to libopus; anything else is first resampled and cut to 40 ms
    frames, as aiortc's own encoder does.
    """

    def __init__(self) -> None:
        import av

        self.size = round(RATE * FRAME_S)
        self.codec = av.CodecContext.create("libopus", "w")
        self.codec.bit_rate = BITRATE
        self.codec.format = "s16"
        self.codec.layout = "mono"
        self.codec.sample_rate = RATE
        self.codec.time_base = TIME_BASE
        self.codec.options = {"application": "voip", "frame_duration": str(round(FRAME_S * 1000))}
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE, frame_size=self.size)
        self.first_pts: int | None = None

    def encode(self, frame, force_keyframe: bool = False) -> tuple[list[bytes], int | None]:
        if (frame.format.name, frame.layout.name, frame.sample_rate, frame.samples) == ("s16", "mono", RATE,
                                                                                          self.size):
            frames = [frame]
        else:
            frames = self.resampler.resample(frame)
        packets = []
        for f in frames:
            packets += self.codec.encode(f)
        if not packets:
            return [], None  # libopus holds the first frame back (its look-ahead)
        if self.first_pts is None:
            self.first_pts = packets[0].pts
        return [bytes(p) for p in packets], packets[0].pts - self.first_pts

    def pack(self, packet) -> tuple[list[bytes], int]:
        from aiortc.mediastreams import convert_timebase

        return [bytes(packet)], convert_timebase(packet.pts, packet.time_base, TIME_BASE)
