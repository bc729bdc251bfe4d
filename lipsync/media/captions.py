"""Captions: the spoken phrases as timed cues, as WebVTT, as HLS subtitle segments, and burnt into frames.

Cue times come from the synthesis, not from guessing: :func:`lipsync.speech.tts.narrate`
records where each sentence is heard in the soundtrack (``Speech.phrases``) and
:func:`lipsync.speech.post.fit_length` carries those times through padding,
looping and cutting. :func:`cues_for` turns the phrases into cues a viewer can
read (a long sentence becomes several cues of at most two short lines, its time
shared out by characters) and clips them to the video.

    >>> cues = cues_for(speech.phrases, duration_s=7.2)
    >>> write_vtt(cues, "talk.vtt")            # written under a temporary name, then renamed
    >>> read_vtt("talk.vtt") == cues
    True

:class:`CaptionBurner` draws the cues into the frames on their way to the
encoder (Pillow text with an outline on a dark backdrop, wrapped to the frame,
at the bottom unless that would cover the face or the "AI-generated" label).
No ffmpeg filter is needed, so any ffmpeg build works.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import EncodeError, InputError
from .files import part_file, publish

__all__ = [
    "Cue",
    "cues_for",
    "to_vtt",
    "write_vtt",
    "read_vtt",
    "vtt_time",
    "cue_settings",
    "placed",
    "hls_vtt_segment",
    "CaptionBurner",
    "bold_font",
    "MAX_CUE_CHARS",
]

#: a cue holds at most this many characters: two lines of about 42, the usual subtitle limit
MAX_CUE_CHARS = 84
#: cues shorter than this after clipping to the video are dropped
MIN_CUE_S = 0.1

Rect = tuple[int, int, int, int]  # x, y, width, height


@dataclass(frozen=True)
class Cue:
    """``text`` is shown from ``start_s`` to ``end_s`` (seconds from the start of the video).

    ``settings``: WebVTT cue settings written after the timing (e.g. ``line:80%,end``,
    see :func:`cue_settings`); empty: the player's default place, the bottom.
    """

    start_s: float
    end_s: float
    text: str
    settings: str = ""


# ----------------------------------------------------------------------------- timing


def _split_words(text: str, parts: int) -> list[str]:
    """``text`` cut at spaces into ``parts`` pieces of about the same length."""
    words = text.split()
    if parts <= 1 or len(words) <= 1:
        return [" ".join(words)]
    target = len(text) / parts
    pieces: list[str] = []
    current: list[str] = []
    for word in words:
        line = " ".join(current + [word])
        if current and len(line) > target and len(pieces) < parts - 1:
            pieces.append(" ".join(current))
            current = [word]
        else:
            current.append(word)
    pieces.append(" ".join(current))
    return pieces


def cues_for(phrases: Iterable, duration_s: float | None = None, *, max_chars: int = MAX_CUE_CHARS) -> list[Cue]:
    """Cues from spoken phrases (anything with ``text``, ``start_s`` and ``end_s``).

    A phrase longer than ``max_chars`` is split at spaces into pieces of about
    equal length, and its time is shared between them in proportion to their
    characters (speech runs at a roughly even rate within a sentence). Cues
    are clipped to ``[0, duration_s]``; one left shorter than 0.1 s is dropped.
    """
    cues: list[Cue] = []
    for p in phrases:
        text = " ".join(str(p.text).split())
        start, end = float(p.start_s), float(p.end_s)
        if not text or not end > start:
            continue
        pieces = _split_words(text, math.ceil(len(text) / max_chars))
        weights = np.array([len(x) + 1 for x in pieces], np.float64)
        bounds = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        for piece, a, b in zip(pieces, bounds[:-1], bounds[1:]):
            a, b = max(0.0, float(a)), float(b)
            if duration_s is not None:
                b = min(b, float(duration_s))
            if b - a >= MIN_CUE_S:
                cues.append(Cue(a, b, piece))
    cues.sort(key=lambda c: (c.start_s, c.end_s))
    return cues


# ----------------------------------------------------------------------------- WebVTT


def vtt_time(seconds: float) -> str:
    """``HH:MM:SS.mmm`` (WebVTT's timestamp, hours always present)."""
    ms = max(0, int(round(seconds * 1000)))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _cue_block(cue: Cue) -> str:
    start = vtt_time(cue.start_s)
    end = vtt_time(max(cue.end_s, cue.start_s + 0.001))
    settings = _clean_settings(cue.settings)
    # &, < and > are markup in cue text; escaping them also rules out a stray "-->"
    text = html.escape(cue.text, quote=False)
    return f"{start} --> {end}{' ' + settings if settings else ''}\n{text}\n"


_SETTING = re.compile(r"^(?:vertical|line|position|size|align|region):[^\s:]+$")


def _clean_settings(settings: str) -> str:
    """The well-formed WebVTT cue settings in ``settings`` (``name:value`` words), others dropped."""
    return " ".join(w for w in str(settings).split() if _SETTING.match(w))


def cue_settings(shape: tuple[int, ...], keep_clear: Rect | None) -> str:
    """WebVTT cue settings that keep a player's captions off the rows of ``keep_clear``.

    ``keep_clear`` is a rectangle (x, y, width, height) in a frame of ``shape``
    (H, W, ...), the burned-in "AI-generated" label. A player draws cues at the
    bottom by default; when the rectangle is in the lower half, the cue's bottom
    edge is put just above it (``line:P%,end``: the cue grows upwards from P % of
    the height), so no cue line shares a row with it. A rectangle in the upper
    half is already clear of the bottom, and None needs nothing: both give "".
    """
    if keep_clear is None:
        return ""
    height = int(shape[0])
    _x, y, _w, h = (int(v) for v in keep_clear)
    if y + h / 2 < height / 2:
        return ""
    margin = max(2, round(height * 0.01))
    top = max(0.0, 100.0 * (y - margin) / height)
    return f"line:{math.floor(top * 100) / 100:g}%,end"


def placed(cues: Iterable[Cue], settings: str) -> list[Cue]:
    """The cues with these WebVTT ``settings`` (see :func:`cue_settings`)."""
    return [replace(c, settings=settings) for c in cues]


def to_vtt(cues: Iterable[Cue], header: str = "") -> str:
    """A WebVTT document: the ``WEBVTT`` line, optional header lines, then one block per cue."""
    head = "WEBVTT\n" + (header.rstrip("\n") + "\n" if header else "")
    return head + "".join("\n" + _cue_block(c) for c in cues)


def write_vtt(cues: Iterable[Cue], path: str | Path) -> Path:
    """Write a ``.vtt`` file (UTF-8) under a temporary name beside ``path``, then rename it."""
    path = Path(path)
    tmp = part_file(path, ".part.vtt")
    try:
        tmp.write_text(to_vtt(cues), encoding="utf-8")
        return publish(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise EncodeError(f"Could not write the captions {path} ({e.strerror or e}).") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TIMING = re.compile(
    r"^(?P<a>(?:\d{2,}:)?[0-5]\d:[0-5]\d\.\d{3})[ \t]+-->[ \t]+(?P<b>(?:\d{2,}:)?[0-5]\d:[0-5]\d\.\d{3})"
    r"(?:[ \t]+(?P<settings>.*))?$"
)
_TAG = re.compile(r"<[^>]*>")


def _seconds(stamp: str) -> float:
    parts = stamp.split(":")
    secs = float(parts[-1])
    mins = int(parts[-2])
    hours = int(parts[-3]) if len(parts) == 3 else 0
    return hours * 3600 + mins * 60 + secs


def read_vtt(source: str | Path) -> list[Cue]:
    """Parse a WebVTT file (or its text) into cues, checking the syntax as a player would.

    Cue settings are kept (well-formed ``name:value`` words only), so cues
    written again (an HLS subtitles segment) stay where they were placed;
    identifiers, ``NOTE``/``STYLE``/``REGION`` blocks and header lines
    (``X-TIMESTAMP-MAP``) are accepted and ignored; tags are removed from the
    text and character references decoded.

    Raises:
        InputError: not WebVTT, or a block whose timing line is malformed or runs backwards.
    """
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.endswith(".vtt")):
        name = Path(source).name
        try:
            text = Path(source).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"The captions file {name} cannot be read ({e}).") from None
    else:
        name, text = "the captions", str(source).lstrip("\ufeff")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not re.match(r"^WEBVTT(?:[ \t].*)?$", lines[0]):
        raise InputError(f"{name} is not WebVTT: it must start with a WEBVTT line.")
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start_line = 0
    body_from = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))  # after the header
    for i, line in enumerate(lines[body_from:], start=body_from + 1):
        if line.strip():
            if not current:
                start_line = i
            current.append(line)
        elif current:
            blocks.append((start_line, current))
            current = []
    if current:
        blocks.append((start_line, current))
    cues: list[Cue] = []
    for lineno, block in blocks:
        if block[0].split(" ")[0].split("\t")[0] in ("NOTE", "STYLE", "REGION") and "-->" not in block[0]:
            continue
        timing = 0 if "-->" in block[0] else 1  # an optional cue identifier comes first
        if timing >= len(block) or "-->" not in block[timing]:
            raise InputError(f"{name}, line {lineno}: malformed cue (no 'start --> end' timing line).")
        m = _TIMING.match(block[timing].strip())
        if not m:
            raise InputError(f"{name}, line {lineno + timing}: malformed timing {block[timing].strip()!r}.")
        a, b = _seconds(m.group("a")), _seconds(m.group("b"))
        if b < a:
            raise InputError(f"{name}, line {lineno + timing}: the cue ends before it starts.")
        body = "\n".join(block[timing + 1 :])
        cues.append(Cue(a, b, html.unescape(_TAG.sub("", body)), _clean_settings(m.group("settings") or "")))
    return cues


def hls_vtt_segment(cues: Sequence[Cue], start_s: float, end_s: float, mpegts: int) -> str:
    """One WebVTT segment of an HLS subtitles playlist: the cues overlapping ``[start_s, end_s)``.

    Cues keep their whole times (a cue spanning two segments appears in both,
    and players merge the copies). ``X-TIMESTAMP-MAP`` ties cue time 0 to the
    media's timeline: ``mpegts`` is the media's first timestamp in 90 kHz units.
    """
    inside = [c for c in cues if c.start_s < end_s and c.end_s > start_s]
    return to_vtt(inside, header=f"X-TIMESTAMP-MAP=MPEGTS:{int(mpegts)},LOCAL:00:00:00.000")


# ----------------------------------------------------------------------------- burnt-in captions

_FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
    "/Library/Fonts/Arial Bold.ttf",
    "C:/Windows/Fonts/arialbd.ttf",
)


@lru_cache(maxsize=16)
def bold_font(size: int):
    """A bold sans-serif font at ``size`` px: DejaVu Sans Bold when installed, else Pillow's own font."""
    from PIL import ImageFont

    for f in _FONT_FILES:
        if Path(f).is_file():
            try:
                return ImageFont.truetype(f, size)
            except OSError:
                continue
    return ImageFont.load_default(size=size)


def _wrap(text: str, font, width: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels (a word longer than a line gets a line of its own)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}" if current else word
        if current and font.getlength(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def _overlap(a: Rect, b: Rect | None) -> int:
    if b is None:
        return 0
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0, w) * max(0, h)


@dataclass
class _Patch:
    x: int
    y: int
    alpha: np.ndarray  #: (h, w, 1) float32 coverage
    color: np.ndarray  #: (h, w, 3) float32, colour already multiplied by alpha


class CaptionBurner:
    """A frame sink that draws the current cue into each frame, then passes it on.

    Wraps anything with ``write(frame)``, ``close()`` and ``abort()`` (a
    :class:`~lipsync.media.encode.VideoWriter`). Frame ``i`` is shown at
    ``i / fps`` seconds and carries the cue whose interval holds that time.
    Each cue is rendered once (white bold text with a dark outline on a
    translucent backdrop, wrapped to 90 % of the width, at most three lines,
    shrinking the font rather than adding lines); per frame only its small
    rectangle is blended.

    Placement: centred at the bottom. When that would cover ``avoid`` (the
    face box) the cue goes to the top; the rectangles in ``keep_clear`` (the
    "AI-generated" label) are stepped around the same way. If every place
    overlaps the face, the one covering least of its lower half (the mouth)
    is used.
    """

    def __init__(
        self,
        sink,
        cues: Sequence[Cue],
        fps: float,
        shape: tuple[int, ...],
        *,
        avoid=None,
        keep_clear: Iterable[Rect] = (),
    ):
        self.sink = sink
        self.fps = float(fps)
        self.frames = 0
        self._h, self._w = int(shape[0]), int(shape[1])
        face: Rect | None = None
        if avoid is not None:
            face = (int(avoid.x1), int(avoid.y1), int(avoid.width), int(avoid.height))
        self._face = face
        self._clear = [tuple(int(v) for v in r) for r in keep_clear]
        self._cues = sorted(cues, key=lambda c: c.start_s)
        self._patches: list[_Patch | None] = [None] * len(self._cues)
        self._next = 0  # first cue that has not ended yet

    # the sink protocol -----------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        t = self.frames / self.fps
        while self._next < len(self._cues) and self._cues[self._next].end_s <= t:
            self._patches[self._next] = None  # rendered cues are freed once past
            self._next += 1
        j = self._next
        if j < len(self._cues) and self._cues[j].start_s <= t:
            frame = self.draw(frame, j)
        self.sink.write(frame)
        self.frames += 1

    def close(self):
        return self.sink.close()

    def abort(self) -> None:
        self.sink.abort()

    # drawing -----------------------------------------------------------------------
    def draw(self, frame: np.ndarray, index: int) -> np.ndarray:
        """A copy of ``frame`` (H, W, 3) uint8 RGB with cue ``index`` drawn in."""
        patch = self._patches[index]
        if patch is None:
            patch = self._patches[index] = self._render(self._cues[index].text)
        out = frame.copy()
        h, w = patch.alpha.shape[:2]
        region = out[patch.y : patch.y + h, patch.x : patch.x + w].astype(np.float32)
        region = region * (1.0 - patch.alpha) + patch.color
        out[patch.y : patch.y + h, patch.x : patch.x + w] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
        return out

    def _layout(self, text: str) -> tuple[object, list[str], int, int, int]:
        """(font, lines, stroke, line height, padding) for ``text`` fitted to the frame."""
        W, H = self._w, self._h
        size = max(12, min(44, round(min(W, H) * 0.042)))
        while True:
            font = bold_font(size)
            stroke = max(1, round(size / 12))
            pad = max(4, round(size * 0.35))
            lines = _wrap(text, font, W * 0.9 - 2 * pad)
            if len(lines) <= 3 or size <= 12:
                break
            size = max(12, round(size * 0.85))
        ascent, descent = font.getmetrics()
        return font, lines, stroke, ascent + descent + 2 * stroke, pad

    def _place(self, bw: int, bh: int) -> tuple[int, int]:
        W, H = self._w, self._h
        margin = max(4, round(min(W, H) * 0.03))
        x = (W - bw) // 2
        ys = [H - margin - bh]
        for r in self._clear:  # just above / below each rectangle to keep clear
            ys += [r[1] - margin - bh, r[1] + r[3] + margin]
        ys.append(margin)
        ys = [min(max(y, 0), max(0, H - bh)) for y in ys]
        face = self._face
        mouth = None if face is None else (face[0], face[1] + face[3] // 2, face[2], face[3] - face[3] // 2)

        def cost(y: int) -> tuple[int, int, int]:
            r = (x, y, bw, bh)
            return (_overlap(r, mouth), _overlap(r, face), sum(_overlap(r, c) for c in self._clear))

        clear = [y for y in ys if cost(y) == (0, 0, 0)]
        return x, (clear[0] if clear else min(ys, key=cost))

    def _render(self, text: str) -> _Patch:
        from PIL import Image, ImageDraw

        font, lines, stroke, line_h, pad = self._layout(text)
        widths = [font.getlength(line) for line in lines] or [0.0]
        bw = min(self._w, int(math.ceil(max(widths))) + 2 * pad + 2 * stroke)
        bh = min(self._h, line_h * max(1, len(lines)) + 2 * pad)
        x, y = self._place(bw, bh)
        img = Image.new("RGBA", (bw, bh), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        d.rounded_rectangle((0, 0, bw - 1, bh - 1), radius=max(2, pad // 2), fill=(0, 0, 0, 150))
        for i, line in enumerate(lines):
            lx = (bw - widths[i]) / 2
            ly = pad + i * line_h + stroke
            d.text((lx, ly), line, font=font, fill=(255, 255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
        rgba = np.asarray(img, np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        return _Patch(x, y, alpha, rgba[:, :, :3] * alpha)
