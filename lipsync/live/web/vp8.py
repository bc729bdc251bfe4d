"""The live picture's VP8 encoder: aiortc's packetising and bitrate control, libvpx set for a talking head.

aiortc's own VP8 encoder runs libvpx at speed 6 with its temporal denoiser on. An avatar's
pictures are clean renders (the photo's own grain is the same in every one), so the denoiser
only smooths what the visitor should see, and speed 8 loses next to nothing at the same
bitrate. Measured on 2 cores (a lab script: 100 moving 336 px pictures of the example
portrait, 500 kbit/s, one thread): aiortc's settings 2.48 ms of CPU a picture, luma PSNR
38.6 dB; these 1.54 ms, 40.4 dB; the same 2.4 kB a picture. With live sessions
(``benchmarks/live_web.py --stand-in 4,0.03 --at-once 6``, 2 runs each way) the encoders'
threads went from 2.82 to 2.46 ms a picture (Opus included): a session's pictures change
less from one to the next than the lab's swaying head.

libvpx leaves out a block that changed less than ``static-thresh`` (300) since the last
picture: most of an avatar's picture (the background, the still shoulders) does not change
at all, and the mouth and eyes change far more than that. On 275 pictures of a live
session (336 px, a lab script), at 500 kbit/s, 0.83 → 0.64 ms of CPU a picture, the face's
PSNR 39.72 → 39.84 dB (the bits left over go to it), the whole picture's 38.88 → 38.78 dB;
at 1 Mbit/s 0.85 → 0.62 ms and 604 → 504 kbit/s sent, the face 40.08 → 40.01 dB. 400
saved more and lost 0.3 dB of the whole picture. Everything else is aiortc's:
the RTP payloads (:meth:`Vp8Encoder._packetize`), the picture id, the bitrate the visitor's
reports set (``target_bitrate``), a keyframe when asked.
"""

from __future__ import annotations

import av
from aiortc.codecs.vpx import Vp8Encoder, number_of_threads
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase

__all__ = ["SPEED", "TalkingHeadVp8"]

SPEED = 8  #: libvpx ``cpu-used`` in real-time mode (aiortc: 6; 10 lost 1.5 dB)
RETUNE = 0.1  #: a bitrate that moved by more than this share opens the encoder again at it


class TalkingHeadVp8(Vp8Encoder):
    """aiortc's :class:`Vp8Encoder` with libvpx set for an avatar's pictures (see the module docstring)."""

    def encode(self, frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        rate = self.target_bitrate
        ctx = self.codec
        if ctx is None or (ctx.width, ctx.height) != (frame.width, frame.height) or \
                abs(rate - ctx.bit_rate) > RETUNE * ctx.bit_rate:
            ctx = self.codec = self._open(frame.width, frame.height, rate)
        if force_keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        data = b"".join(bytes(p) for p in ctx.encode(frame))
        payloads = self._packetize(data, self.picture_id)
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        return payloads, convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE)

    @staticmethod
    def _open(width: int, height: int, rate: int):
        import multiprocessing

        ctx = av.CodecContext.create("libvpx", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.bit_rate = rate
        ctx.gop_size = 3000  # a keyframe only when the visitor asks (a lost packet) or the size changes
        ctx.qmin, ctx.qmax = 2, 56
        ctx.options = {
            "deadline": "realtime",
            "cpu-used": str(-SPEED),  # negative: real-time speed in libvpx's scale
            "lag-in-frames": "0",  # each picture leaves as soon as it is made
            "noise-sensitivity": "0",  # no temporal denoiser (aiortc: 4)
            # constant bitrate at the rate the visitor's reports allow, over a 1 s buffer
            "minrate": str(rate), "maxrate": str(rate), "bufsize": str(rate),
            "undershoot-pct": "100", "overshoot-pct": "15",
            "static-thresh": "300",  # blocks that changed less are left as they were (see above)
            "partitions": "0",  # one token partition
        }
        ctx.thread_count = number_of_threads(width * height, multiprocessing.cpu_count())
        return ctx
