"""Package an MP4 as adaptive HLS: a small ladder of fMP4 renditions, a master
playlist, a player page, and optionally a zip of it all.

    >>> from lipsync.media.hls import package_hls
    >>> r = package_hls(Path("talk.mp4"), Path("talk_hls"), zip_path=Path("talk_hls.zip"))
    >>> r.master, [(x.name, x.width, x.height) for x in r.renditions]

The layout written to ``outdir`` (and, with the same relative paths, to the zip)::

    master.m3u8            the variant list written here, with true CODECS strings
    720p/index.m3u8        one VOD media playlist per rendition ...
    720p/init.mp4          ... its fMP4 initialisation segment (moov, metadata tags)
    720p/seg_00001.m4s     ... and ~2 s media segments starting on aligned keyframes
    480p/ ...
    subs/index.m3u8        with captions: the subtitles rendition (segmented WebVTT,
    subs/seg_00001.vtt     cut where the video segments are cut)
    player.html            plays master.m3u8 with hls.js, native HLS as fallback, captions on
    hls.min.js             hls.js (Apache-2.0), hls.js-LICENSE.txt beside it
    README.txt             how to serve the folder

Only ffmpeg is needed (no ffprobe): the source is probed with ffmpeg's
``framecrc`` muxer, whose header lists each stream's codec, size and time base
and whose lines give every packet's timestamps. All renditions are encoded by
one ffmpeg process (``split`` + ``var_stream_map``), with the same forced
keyframes, so segment boundaries line up across renditions.

Nothing half-written is left behind: renditions are encoded into a staging
folder inside ``outdir`` and moved into place only when everything succeeded;
the zip is written under a temporary name and renamed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import shutil
import statistics
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..errors import EncodeError, InputError
from ..proc import ffmpeg_exe, run
from .captions import Cue, hls_vtt_segment, read_vtt
from .files import part_file, publish

__all__ = ["package_hls", "HlsResult", "Rendition", "SourceInfo", "probe", "plan_ladder", "h264_level", "avc1_codec"]

log = logging.getLogger("lipsync")

#: where player.html and the vendored hls.js live
ASSETS = Path(__file__).resolve().parent / "assets"

#: ladder rungs, by the picture's short side
RUNGS = (720, 480, 360)
#: a lower rung is added only if it is at most this fraction of the one above
RUNG_STEP = 0.85
#: x264 quality, and the bits per pixel per frame that cap the rate (maxrate)
CRF = 23
BITS_PER_PIXEL = 0.12
#: AAC bit rate per rendition, top first
AUDIO_KBPS = (128, 96, 64)
MAX_FPS = 60.0
MIN_SIDE = 16
#: the subtitles rendition: folder, GROUP-ID, and how players list it
SUBS_DIR = "subs"
SUBS_GROUP = "subs"

_KEEP_RATES = (32000, 44100, 48000)

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

Progress = Callable[[str, int, int], None]


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


@dataclass
class HlsResult:
    """What :func:`package_hls` wrote."""

    outdir: Path
    master: Path  #: outdir / "master.m3u8"
    renditions: list[Rendition]
    zip: Path | None  #: the zip, when one was asked for
    duration_s: float = 0.0  #: the source's duration
    fps: float = 0.0  #: frame rate of every rendition
    files: list[str] = field(default_factory=list)  #: relative paths written to outdir (and the zip)
    subtitles: Path | None = None  #: the subtitles playlist (outdir / "subs/index.m3u8"), with captions


# ----------------------------------------------------------------------------- probing


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
        ).decode("utf-8", "replace")  # fmt: skip
        # one decoded frame: the size as displayed (rotation applied) and the pixel aspect
        frame_txt = run(
            base + ["-map", "0:v:0", "-frames:v", "1", "-c:v", "rawvideo", "-pix_fmt", "yuv420p",
                    "-f", "framecrc", "pipe:1"],
            timeout=timeout, what="ffmpeg (probe)", error=InputError,
        ).decode("utf-8", "replace")  # fmt: skip
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


# ----------------------------------------------------------------------------- the ladder


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
                             audio_kbps=akbps))  # fmt: skip
    return out


# ----------------------------------------------------------------------------- playlists


def _media_playlist(path: Path) -> tuple[str | None, list[tuple[float, str]]]:
    """(EXT-X-MAP URI, [(EXTINF seconds, segment URI)]) of one media playlist."""
    init, segs, dur = None, [], None
    for line in path.read_text("utf-8").splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-MAP:"):
            for attr in line[len("#EXT-X-MAP:") :].split(","):
                k, _, v = attr.partition("=")
                if k.strip() == "URI":
                    init = v.strip().strip('"')
        elif line.startswith("#EXTINF:"):
            dur = float(line[len("#EXTINF:") :].split(",")[0])
        elif line and not line.startswith("#"):
            segs.append((dur or 0.0, line))
            dur = None
    return init, segs


def _finish_rendition(folder: Path, r: Rendition) -> Rendition:
    """Name the init segment ``init.mp4``, check every file, measure the bit rates."""
    playlist = folder / "index.m3u8"
    if not playlist.is_file():
        raise EncodeError(f"ffmpeg wrote no playlist for the {r.name} rendition.")
    init, segs = _media_playlist(playlist)
    text = playlist.read_text("utf-8")
    if "#EXT-X-ENDLIST" not in text or not segs or not init:
        raise EncodeError(f"The {r.name} playlist is incomplete.")
    if init != "init.mp4":
        os.replace(folder / init, folder / "init.mp4")
        text = text.replace(f'URI="{init}"', 'URI="init.mp4"')
        tmp = playlist.with_suffix(".tmp")
        tmp.write_text(text, "utf-8")
        os.replace(tmp, playlist)
    total_bits, total_s, peak = 0, 0.0, 0.0
    target = max(d for d, _ in segs)
    for d, uri in segs:
        f = folder / uri
        if "/" in uri or not f.is_file():
            raise EncodeError(f"The {r.name} playlist names a missing segment {uri}.")
        bits = f.stat().st_size * 8
        total_bits += bits
        total_s += d
        if d >= 0.5 * target or len(segs) == 1:  # a short last segment would exaggerate the peak
            peak = max(peak, bits / max(d, 1e-3))
    avg = total_bits / max(total_s, 1e-3)
    return dataclasses.replace(r, bandwidth=int(math.ceil(max(peak, avg))), average_bandwidth=int(math.ceil(avg)))


def _master_playlist(renditions: list[Rendition], fps: float, subtitles: tuple[str, str] | None = None) -> str:
    """The variant list; ``subtitles`` = (NAME, LANGUAGE) adds the captions rendition to every variant."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS", ""]
    subs_attr = ""
    if subtitles is not None:
        name, language = subtitles
        lines += [
            f'#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="{SUBS_GROUP}",NAME="{name}",LANGUAGE="{language}",'
            f'DEFAULT=YES,AUTOSELECT=YES,FORCED=NO,URI="{SUBS_DIR}/index.m3u8"',
            "",
        ]
        subs_attr = f',SUBTITLES="{SUBS_GROUP}"'
    for r in renditions:
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={r.bandwidth},AVERAGE-BANDWIDTH={r.average_bandwidth},"
            f'RESOLUTION={r.width}x{r.height},FRAME-RATE={fps:.3f},CODECS="{r.codecs}"{subs_attr}'
        )
        lines.append(r.playlist)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- subtitles


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """ISO-BMFF boxes in ``data[start:end]``: (type, payload start, box end)."""
    import struct

    end = len(data) if end is None else end
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        head = 8
        if size == 1 and i + 16 <= end:
            size, head = struct.unpack(">Q", data[i + 8 : i + 16])[0], 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            break
        yield kind.decode("latin-1"), i + head, i + size
        i += size


def _child(data: bytes, start: int, end: int, kind: str):
    return next(((s, e) for k, s, e in _boxes(data, start, end) if k == kind), None)


def _media_start_90k(init: Path, segment: Path) -> int:
    """The media's first timestamp in 90 kHz units, as an HLS player takes it for fMP4.

    That is the earliest ``tfdt`` (base media decode time) of the first
    segment's tracks, each in its track's ``mdhd`` timescale; WebVTT segments'
    ``X-TIMESTAMP-MAP`` maps cue time 0 to it.
    """
    import struct

    data = init.read_bytes()
    scales: dict[int, int] = {}
    moov = _child(data, 0, len(data), "moov")
    for kind, s, e in _boxes(data, *moov) if moov else ():
        if kind != "trak":
            continue
        tkhd, mdia = _child(data, s, e, "tkhd"), _child(data, s, e, "mdia")
        mdhd = _child(data, *mdia, "mdhd") if mdia else None
        if not tkhd or not mdhd:
            continue
        v = data[tkhd[0]]
        track = struct.unpack(">I", data[tkhd[0] + (20 if v == 1 else 12) : tkhd[0] + (24 if v == 1 else 16)])[0]
        v = data[mdhd[0]]
        off = mdhd[0] + (20 if v == 1 else 12)
        scales[track] = struct.unpack(">I", data[off : off + 4])[0]
    seg = segment.read_bytes()
    starts = []
    moof = _child(seg, 0, len(seg), "moof")
    for kind, s, e in _boxes(seg, *moof) if moof else ():
        if kind != "traf":
            continue
        tfhd, tfdt = _child(seg, s, e, "tfhd"), _child(seg, s, e, "tfdt")
        if not tfhd or not tfdt:
            continue
        track = struct.unpack(">I", seg[tfhd[0] + 4 : tfhd[0] + 8])[0]
        if seg[tfdt[0]] == 1:
            base = struct.unpack(">Q", seg[tfdt[0] + 4 : tfdt[0] + 12])[0]
        else:
            base = struct.unpack(">I", seg[tfdt[0] + 4 : tfdt[0] + 8])[0]
        if scales.get(track):
            starts.append(Fraction(base, scales[track]))
    return int(round(min(starts) * 90000)) if starts else 0


def _write_subtitles(folder: Path, cues: list[Cue], video_dir: Path) -> list[str]:
    """The subtitles rendition: WebVTT segments cut where the video's segments are, and their playlist.

    Returns the file names written (relative to ``folder``).
    """
    init, segs = _media_playlist(video_dir / "index.m3u8")
    mpegts = _media_start_90k(video_dir / (init or "init.mp4"), video_dir / segs[0][1])
    folder.mkdir(parents=True, exist_ok=True)
    target = max(1, math.ceil(max(d for d, _ in segs) - 1e-6))
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:1",
             "#EXT-X-PLAYLIST-TYPE:VOD"]  # fmt: skip
    names = []
    t = 0.0
    for i, (duration, _uri) in enumerate(segs, start=1):
        name = f"seg_{i:05d}.vtt"
        (folder / name).write_text(hls_vtt_segment(cues, t, t + duration, mpegts), "utf-8")
        lines += [f"#EXTINF:{duration:.6f},", name]
        names.append(name)
        t += duration
    lines.append("#EXT-X-ENDLIST")
    (folder / "index.m3u8").write_text("\n".join(lines) + "\n", "utf-8")
    return ["index.m3u8", *names]


# ----------------------------------------------------------------------------- encoding


def _encode_args(src: Path, stage: Path, info: SourceInfo, ladder: list[Rendition], segment_s: float) -> list[str]:
    fps = info.fps if info.fps <= MAX_FPS else Fraction(30)
    gop = max(1, int(round(float(fps) * segment_s)))
    n = len(ladder)
    graph = f"[0:v:0]fps={fps.numerator}/{fps.denominator},format=yuv420p,split={n}" + "".join(
        f"[s{i}]" for i in range(n)
    )
    for i, r in enumerate(ladder):
        graph += f";[s{i}]scale={r.width}:{r.height}:flags=bicubic,setsar=1[v{i}]"
    args = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-protocol_whitelist", "file", "-i", str(src.resolve()),
        "-filter_complex", graph,
    ]  # fmt: skip
    for i in range(n):
        args += ["-map", f"[v{i}]"]
        if info.has_audio:
            args += ["-map", "0:a:0"]
    args += [
        "-map_metadata", "0",
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-crf", str(CRF), "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{segment_s:g})",
    ]  # fmt: skip
    for i, r in enumerate(ladder):
        args += [
            f"-level:v:{i}", f"{r.level / 10:.1f}",
            f"-maxrate:v:{i}", f"{r.maxrate_kbps}k", f"-bufsize:v:{i}", f"{2 * r.maxrate_kbps}k",
        ]  # fmt: skip
    if info.has_audio:
        args += ["-c:a", "aac"]
        if info.audio_channels != "mono":
            args += ["-ac", "2"]
        if info.audio_rate not in _KEEP_RATES:
            args += ["-ar", "48000"]
        for i, r in enumerate(ladder):
            args += [f"-b:a:{i}", f"{r.audio_kbps}k"]
    vmap = " ".join(
        f"v:{i}" + (f",a:{i}" if info.has_audio else "") + f",name:{r.name}" for i, r in enumerate(ladder)
    )
    stage = stage.resolve()  # absolute: never read as an option or a protocol
    args += [
        "-f", "hls", "-hls_time", f"{segment_s:g}", "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
        "-hls_segment_options", "movflags=+use_metadata_tags",  # custom tags (encoder_tool) too
        "-hls_fmp4_init_filename", "init.mp4", "-start_number", "1",
        "-hls_segment_filename", str(stage / "%v" / "seg_%05d.m4s"),
        "-var_stream_map", vmap,
        str(stage / "%v" / "index.m3u8"),
    ]  # fmt: skip
    return args


# ----------------------------------------------------------------------------- the package


def _player_files() -> dict[str, Path]:
    files = {
        "player.html": ASSETS / "player.html",
        "hls.min.js": ASSETS / "hls" / "hls.min.js",
        "hls.js-LICENSE.txt": ASSETS / "hls" / "LICENSE",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise EncodeError(f"The HLS player files are missing ({', '.join(missing)}); reinstall lipsync.")
    return files


def _hls_js_version() -> str:
    try:
        m = re.search(r"hls\.js (\d+\.\d+\.\d+)", (ASSETS / "hls" / "README.md").read_text("utf-8"))
    except OSError:
        m = None
    return m.group(1) if m else "(version unknown)"


def _readme(renditions: list[Rendition], duration_s: float, captions: bool = False) -> str:
    ladder = ", ".join(f"{r.name} ({r.width}x{r.height}, {r.bandwidth / 1e6:.2f} Mbit/s peak)" for r in renditions)
    subs = "\nCaptions: subs/ (WebVTT, shown by default; the player has a Captions button)\n" if captions else ""
    return f"""HLS package made by lipsync (this video was generated with AI).

Duration: {duration_s:.2f} s
Renditions: {ladder}
{subs}
To watch it, serve this folder over HTTP (browsers refuse to load the
playlists from file://):

  1. open a terminal in this folder, where master.m3u8 is
  2. run:   python3 -m http.server 8000
            (on Windows: py -m http.server 8000)
  3. open   http://localhost:8000/player.html

To publish it, upload the whole folder to any static web host; the stream's
address is .../master.m3u8 (it plays in Safari, iOS and, through hls.js,
in every browser with Media Source Extensions).

Files:
  master.m3u8                the adaptive stream: one line per rendition
  <name>/index.m3u8          a rendition's playlist
  <name>/init.mp4, *.m4s     its fragmented-MP4 initialisation and media segments
  player.html                the player page
  hls.min.js                 hls.js {_hls_js_version()}, Apache License 2.0 (hls.js-LICENSE.txt)
"""


def _write_zip(root: Path, names: list[str], zip_path: Path) -> None:
    tmp = part_file(zip_path, ".part.zip")
    try:
        with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as z:
            for name in names:
                arc = Path(name).as_posix()
                if arc.startswith("/") or ".." in Path(arc).parts:  # never: the names are ours
                    raise EncodeError(f"Refusing to zip the path {arc}.")
                kind = zipfile.ZIP_STORED if arc.endswith((".m4s", ".mp4")) else zipfile.ZIP_DEFLATED
                z.write(root / name, arc, compress_type=kind)
        publish(tmp, zip_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def package_hls(
    mp4: Path,
    outdir: Path,
    *,
    zip_path: Path | None = None,
    segment_s: float = 2.0,
    progress: Progress | None = None,
    captions: str | Path | list[Cue] | None = None,
    captions_name: str = "English",
    captions_language: str = "en",
) -> HlsResult:
    """Turn an MP4 into an adaptive HLS package (and optionally a zip of it).

    Args:
        mp4: any video ffmpeg reads (an H.264/AAC MP4 from :class:`~lipsync.LipSync`).
        outdir: the folder to write; created if needed. Files and rendition
            folders of the same names are replaced; nothing else is touched.
        zip_path: also write a zip with ``master.m3u8`` at its root.
        segment_s: segment length in seconds (0.5 to 10); keyframes are forced
            at every multiple of it in every rendition.
        progress: ``(stage, done, total)`` callback; the stage is ``"hls"``.
        captions: a WebVTT file (or cues) to add as a subtitles rendition:
            segmented WebVTT cut with the video, ``EXT-X-MEDIA:TYPE=SUBTITLES``
            in the master and ``SUBTITLES=`` on every variant; the player shows
            them by default. ``captions_name`` / ``captions_language`` label it.

    Returns:
        :class:`HlsResult` with the renditions (largest first) and their measured bit rates.

    Raises:
        InputError: the file is missing or has no readable video.
        EncodeError: ffmpeg failed or the player files are missing.
    """
    report = progress or (lambda stage, done, total: None)
    steps = 5 if zip_path is not None else 4
    mp4, outdir = Path(mp4), Path(outdir)
    if not mp4.is_file():
        raise InputError(f"The video {mp4} does not exist.")
    if not (0.5 <= float(segment_s) <= 10.0):
        raise InputError(f"segment_s must be between 0.5 and 10 seconds, not {segment_s}.")
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir} exists and is not a folder.")
    if zip_path is not None and Path(zip_path).is_dir():
        raise InputError(f"{zip_path} is a folder; give the zip file's name.")
    player = _player_files()
    cues = None
    if captions is not None:
        cues = read_vtt(Path(captions)) if isinstance(captions, (str, Path)) else list(captions)
        if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*", captions_language or ""):
            raise InputError(f"captions_language must be a language tag such as en or en-US, got {captions_language!r}.")
        if not captions_name or '"' in captions_name or "\n" in captions_name:
            raise InputError("captions_name must be a short label without quotes.")

    report("hls", 0, steps)
    info = probe(mp4)
    if info.duration_s <= 0:
        raise InputError(f"{mp4.name} has no duration.")
    fps = info.fps if info.fps <= MAX_FPS else Fraction(30)
    ladder = plan_ladder(info.width, info.height, float(fps), has_audio=info.has_audio)
    log.info("hls: %s %dx%d %.2fs %s fps -> %s", mp4.name, info.width, info.height, info.duration_s, fps,
             ", ".join(f"{r.name} {r.width}x{r.height} L{r.level / 10:.1f}" for r in ladder))  # fmt: skip
    report("hls", 1, steps)

    created = not outdir.exists()
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".hls-staging-", dir=outdir))
    except OSError as e:
        raise EncodeError(f"Cannot write to {outdir} ({e.strerror or e}).") from None
    moved: list[Path] = []
    zipped = False
    try:
        run(
            _encode_args(mp4, stage, info, ladder, float(segment_s)),
            timeout=300.0 + 20.0 * info.duration_s * len(ladder),
            what="ffmpeg (HLS)",
        )
        report("hls", 2, steps)
        ladder = [_finish_rendition(stage / r.name, r) for r in ladder]
        subs = None
        if cues is not None:
            subs = [f"{SUBS_DIR}/{n}" for n in _write_subtitles(stage / SUBS_DIR, cues, stage / ladder[0].name)]
        label = (captions_name, captions_language) if subs else None
        (stage / "master.m3u8").write_text(_master_playlist(ladder, float(fps), label), "utf-8")
        for name, src in player.items():
            shutil.copyfile(src, stage / name)
        (stage / "README.txt").write_text(_readme(ladder, info.duration_s, bool(subs)), "utf-8")
        names = ["master.m3u8", *player, "README.txt"]
        for r in ladder:
            names += sorted(p.relative_to(stage).as_posix() for p in (stage / r.name).iterdir() if p.is_file())
        names += subs or []
        report("hls", 3, steps)
        if zip_path is not None:
            _write_zip(stage, names, Path(zip_path))
            zipped = True
            report("hls", 4, steps)
        # move into place: whole rendition folders, then the top-level files
        for top in [r.name for r in ladder] + ([SUBS_DIR] if subs else []) + ["master.m3u8", *player, "README.txt"]:
            dest = outdir / top
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(stage / top, dest)
            moved.append(dest)
    except BaseException as e:
        for p in moved:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if zipped:
            Path(zip_path).unlink(missing_ok=True)
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(outdir, ignore_errors=True)
        if isinstance(e, OSError):
            raise EncodeError(f"Could not write the HLS package ({e.strerror or e}: {e.filename or outdir}).") from e
        raise
    shutil.rmtree(stage, ignore_errors=True)
    report("hls", steps, steps)
    return HlsResult(
        outdir=outdir,
        master=outdir / "master.m3u8",
        renditions=ladder,
        zip=Path(zip_path) if zip_path is not None else None,
        duration_s=info.duration_s,
        fps=float(fps),
        files=names,
        subtitles=outdir / SUBS_DIR / "index.m3u8" if subs else None,
    )
