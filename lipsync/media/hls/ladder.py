"""The ladder: which renditions to make of a source, and the H.264 level and RFC 6381 codec string of each."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import EncodeError, InputError

__all__ = ["Rendition", "plan_ladder", "h264_level", "avc1_codec", "RUNGS"]

#: ladder rungs, by the picture's short side
RUNGS = (720, 480, 360)
#: a lower rung is added only if it is at most this fraction of the one above
RUNG_STEP = 0.85
#: bits per pixel per frame that cap each rendition's rate (maxrate)
BITS_PER_PIXEL = 0.12
#: AAC bit rate per rendition, top first
AUDIO_KBPS = (128, 96, 64)
MIN_SIDE = 16

# H.264 Table A-1: level -> (MaxMBPS, MaxFS, MaxBR in 1000 bit/s for Baseline/Main)
_LEVELS = (
    (10, 1485, 99, 64),
    (11, 3000, 396, 192),
    (12, 6000, 396, 384),
    (13, 11880, 396, 768),
    (20, 11880, 396, 2000),
    (21, 19800, 792, 4000),
    (22, 20250, 1620, 4000),
    (30, 40500, 1620, 10000),
    (31, 108000, 3600, 14000),
    (32, 216000, 5120, 20000),
    (40, 245760, 8192, 20000),
    (41, 245760, 8192, 50000),
    (42, 522240, 8704, 50000),
    (50, 589824, 22080, 135000),
    (51, 983040, 36864, 240000),
    (52, 2073600, 36864, 240000),
)
_HIGH_BR_FACTOR = 1.25  # cpbBrVclFactor 1250 for High vs 1000 for Baseline/Main
_MIN_LEVEL = 30  # nothing below 3.0: every device that plays High profile takes it


@dataclass(frozen=True)
class Rendition:
    """One rung of the ladder (bandwidths are measured from the written segments)."""

    name: str  #: folder name, e.g. "720p"
    width: int
    height: int
    bandwidth: int = 0  #: peak segment bit rate, bit/s (BANDWIDTH)
    average_bandwidth: int = 0  #: whole-stream bit rate, bit/s (AVERAGE-BANDWIDTH)
    codecs: str = ""  #: RFC 6381 string, e.g. "avc1.64001f,mp4a.40.2"
    level: int = 0  #: H.264 level_idc (31 = 3.1)
    maxrate_kbps: int = 0
    audio_kbps: int = 0

    @property
    def playlist(self) -> str:
        """The media playlist's path relative to the master."""
        return f"{self.name}/index.m3u8"


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def h264_level(width: int, height: int, fps: float, maxrate_kbps: float) -> int:
    """The lowest H.264 level (level_idc, e.g. 31) for this size, rate and High-profile bit rate."""
    mbs_w, mbs_h = math.ceil(width / 16), math.ceil(height / 16)
    fs = mbs_w * mbs_h
    for level, max_mbps, max_fs, max_br in _LEVELS:
        if level < _MIN_LEVEL:
            continue
        side = math.sqrt(max_fs * 8)  # A.3.1: neither side may exceed sqrt(8 * MaxFS) macroblocks
        if fs <= max_fs and mbs_w <= side and mbs_h <= side and fs * fps <= max_mbps and (
            maxrate_kbps <= max_br * _HIGH_BR_FACTOR
        ):
            return level
    raise EncodeError(f"{width}x{height} at {fps:g} fps is beyond H.264 level 5.2.")


def avc1_codec(level: int, profile_idc: int = 100, constraints: int = 0) -> str:
    """RFC 6381 codec string: ``avc1.PPCCLL`` (High = 100 = 0x64; level 3.1 = 0x1f)."""
    return f"avc1.{profile_idc:02x}{constraints:02x}{level:02x}"


def plan_ladder(width: int, height: int, fps: float, *, has_audio: bool = True) -> list[Rendition]:
    """Up to three renditions, largest first, never larger than the source.

    The top rendition is the source's own size, or 720 on the short side when
    the source is larger; 480 and 360 follow when they are clearly smaller
    (at most 85 % of the rung above). Sides are even and keep the aspect ratio.
    """
    if min(width, height) < MIN_SIDE:
        raise InputError(f"The video is {width}x{height}; it must be at least {MIN_SIDE} pixels on each side.")
    short, long_ = min(width, height), max(width, height)
    top = min(short, RUNGS[0])
    shorts = [top]
    for rung in RUNGS[1:]:
        if rung <= shorts[-1] * RUNG_STEP:
            shorts.append(rung)
    out = []
    for i, s in enumerate(shorts):
        if s == short:
            s_px, l_px = short - short % 2, long_ - long_ % 2
        else:
            s_px, l_px = _even(s), min(_even(s * long_ / short), long_ - long_ % 2)
        w, h = (l_px, s_px) if width >= height else (s_px, l_px)
        maxrate = int(round(w * h * min(float(fps), 30.0) * BITS_PER_PIXEL / 1000 / 50) * 50) or 50
        maxrate = max(maxrate, 300)
        level = h264_level(w, h, float(fps), maxrate)
        akbps = AUDIO_KBPS[min(i, len(AUDIO_KBPS) - 1)] if has_audio else 0
        codecs = avc1_codec(level) + (",mp4a.40.2" if has_audio else "")
        out.append(Rendition(f"{min(w, h)}p", w, h, codecs=codecs, level=level, maxrate_kbps=maxrate,
                             audio_kbps=akbps))
    return out
