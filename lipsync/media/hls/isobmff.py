"""Reading ISO base media (fMP4) boxes: where a rendition's media starts, for the subtitles' timestamp map."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

__all__ = ["media_start_90k"]


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """ISO-BMFF boxes in ``data[start:end]``: (type, payload start, box end)."""
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


def media_start_90k(init: Path, segment: Path) -> int:
    """The media's first timestamp in 90 kHz units, as an HLS player takes it for fMP4.

    That is the earliest ``tfdt`` (base media decode time) of the first
    segment's tracks, each in its track's ``mdhd`` timescale; WebVTT segments'
    ``X-TIMESTAMP-MAP`` maps cue time 0 to it.
    """
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
