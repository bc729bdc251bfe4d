"""Probing the source with ffmpeg alone (no ffprobe): its ``framecrc`` muxer lists each stream's
codec, size and time base in its header, and every packet's timestamps in its lines."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ...errors import InputError
from ...proc import ffmpeg_exe, run

__all__ = ["SourceInfo", "probe"]


@dataclass(frozen=True)
class SourceInfo:
    """What :func:`probe` found in the source file."""

    width: int  #: display width (rotation and pixel aspect applied)
    height: int
    duration_s: float
    fps: Fraction
    has_audio: bool
    audio_rate: int = 0
    audio_channels: str = ""  #: ffmpeg's layout name ("mono", "stereo", ...)
    video_codec: str = ""


def _parse_framecrc(text: str) -> tuple[dict[int, dict[str, str]], list[tuple[int, int, int, int]]]:
    """framecrc output -> ({stream: {key: value}}, [(stream, pts, duration, flags)])."""
    streams: dict[int, dict[str, str]] = {}
    packets: list[tuple[int, int, int, int]] = []
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, rest = line[1:].partition(" ")
            idx, sep, value = rest.partition(":")
            if sep and idx.strip().isdigit():
                streams.setdefault(int(idx), {})[key] = value.strip()
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        try:
            stream, pts, dur = int(parts[0]), int(parts[2]), int(parts[3])
        except ValueError:
            continue
        flags = 0
        for p in parts[6:]:
            if p.startswith("F="):
                flags = int(p[2:], 16)
        if pts == -(2**63):  # AV_NOPTS_VALUE
            continue
        packets.append((stream, pts, dur, flags))
    return streams, packets


def _fraction(text: str, default: Fraction) -> Fraction:
    try:
        num, _, den = text.partition("/")
        f = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return default
    return f if f > 0 else default


def probe(mp4: Path, *, timeout: float = 120.0) -> SourceInfo:
    """Size, duration, frame rate and audio of a media file, with ffmpeg alone.

    Raises:
        InputError: the file has no video stream ffmpeg can read.
    """
    src = str(Path(mp4).resolve())
    base = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file", "-i", src]
    name = Path(mp4).name
    try:
        # every packet, copied (no decoding): codecs, time bases, timestamps
        packets_txt = run(
            base + ["-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-f", "framecrc", "pipe:1"],
            timeout=timeout, what="ffmpeg (probe)", error=InputError,
        ).decode("utf-8", "replace")
        # one decoded frame: the size as displayed (rotation applied) and the pixel aspect
        frame_txt = run(
            base + ["-map", "0:v:0", "-frames:v", "1", "-c:v", "rawvideo", "-pix_fmt", "yuv420p",
                    "-f", "framecrc", "pipe:1"],
            timeout=timeout, what="ffmpeg (probe)", error=InputError,
        ).decode("utf-8", "replace")
    except InputError as e:
        raise InputError(f"{name} is not a video ffmpeg can read ({e}).") from None

    streams, packets = _parse_framecrc(packets_txt)
    frame_streams, _ = _parse_framecrc(frame_txt)
    video = next((i for i, s in streams.items() if s.get("media_type") == "video"), None)
    audio = next((i for i, s in streams.items() if s.get("media_type") == "audio"), None)
    dims = frame_streams.get(0, {}).get("dimensions", "")
    if video is None or "x" not in dims:
        raise InputError(f"{name} has no video stream.")
    w, h = (int(v) for v in dims.split("x"))
    sar = _fraction(frame_streams[0].get("sar", "1/1"), Fraction(1))
    if sar != 1:
        w = int(round(w * sar))

    ends, starts = [], []
    frame_durs: list[int] = []
    vtb, vcount = Fraction(1, 90000), 0
    for i in (video, audio):
        if i is None:
            continue
        tb = _fraction(streams[i].get("tb", ""), Fraction(1, 90000))
        mine = [(pts, dur) for s, pts, dur, flags in packets if s == i and not flags & 0x4]  # 0x4: discard
        if not mine:
            continue
        starts.append(min(p for p, _ in mine) * tb)
        ends.append(max(p + d for p, d in mine) * tb)
        if i == video:
            frame_durs = [d for _, d in mine if d > 0]
            vtb, vcount = tb, len(mine)
    if vcount < 2:
        raise InputError(f"{name} is a still picture or an empty video; HLS needs a video of at least two frames.")
    duration = float(max(ends) - min(starts))
    if frame_durs:
        fps = 1 / (Fraction(statistics.median_low(frame_durs)) * vtb)
    elif duration > 0:
        fps = Fraction(vcount) / Fraction(duration)
    else:
        fps = Fraction(25)
    fps = fps.limit_denominator(1001)
    if not 1 <= fps <= 1000:
        fps = Fraction(25)
    a = streams.get(audio, {}) if audio is not None else {}
    return SourceInfo(
        width=w,
        height=h,
        duration_s=duration,
        fps=fps,
        has_audio=audio is not None,
        audio_rate=int(a["sample_rate"]) if a.get("sample_rate", "").isdigit() else 0,
        audio_channels=a.get("channel_layout_name", ""),
        video_codec=streams[video].get("codec_id", ""),
    )
