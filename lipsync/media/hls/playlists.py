"""Playlists: the media playlists ffmpeg wrote (checked and measured), the master, and the subtitles rendition."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from ...errors import EncodeError
from ..captions import Cue, hls_vtt_segment
from .isobmff import media_start_90k
from .ladder import Rendition

__all__ = ["SUBS_DIR", "SUBS_GROUP", "finish_rendition", "master_playlist", "write_subtitles"]

#: the subtitles rendition: folder, GROUP-ID, and how players list it
SUBS_DIR = "subs"
SUBS_GROUP = "subs"


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


def finish_rendition(folder: Path, r: Rendition) -> Rendition:
    """Check and measure one rendition ffmpeg wrote: its init segment is renamed ``init.mp4``.

    Args:
        folder: the rendition's folder, holding ``index.m3u8``, its init segment and media segments.
        r: the planned rendition.

    Returns:
        ``r`` with ``bandwidth`` (peak of the full-length segments, at least the average) and
        ``average_bandwidth`` measured from the segment files, in bits per second.

    Raises:
        EncodeError: no playlist, an unfinished one, or a segment it names is missing.
    """
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


def master_playlist(renditions: list[Rendition], fps: float, subtitles: tuple[str, str] | None = None) -> str:
    """The text of ``master.m3u8``: one variant per rendition (measured by :func:`finish_rendition`).

    ``subtitles`` = (NAME, LANGUAGE) adds the captions rendition (:data:`SUBS_DIR`) to every variant.
    """
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


def write_subtitles(folder: Path, cues: list[Cue], video_dir: Path) -> list[str]:
    """Write the subtitles rendition: WebVTT segments cut where the video's segments are, and their playlist.

    Args:
        folder: where to write (created), normally ``<package>/`` :data:`SUBS_DIR`.
        cues: the captions.
        video_dir: a finished video rendition (:func:`finish_rendition`) whose segments set the cuts
            and whose first timestamp sets each segment's ``X-TIMESTAMP-MAP``.

    Returns:
        The file names written (relative to ``folder``): ``index.m3u8`` first.
    """
    init, segs = _media_playlist(video_dir / "index.m3u8")
    mpegts = media_start_90k(video_dir / (init or "init.mp4"), video_dir / segs[0][1])
    folder.mkdir(parents=True, exist_ok=True)
    target = max(1, math.ceil(max(d for d, _ in segs) - 1e-6))
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:1",
             "#EXT-X-PLAYLIST-TYPE:VOD"]
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
