"""Text to speak: cleaning and checking it, and cutting it into sentences to synthesise."""

from __future__ import annotations

import re
import unicodedata

from ..errors import InputError, TextError

__all__ = ["clean_text", "split_sentences", "DEFAULT_MAX_CHARS", "SENTENCE_PAUSE_S", "CLAUSE_PAUSE_S", "MAX_CHUNK_CHARS"]

from ..limits import MAX_CHARS as DEFAULT_MAX_CHARS  # the one home of the limit, below options and speech
SENTENCE_PAUSE_S = 0.35  #: silence between sentences
CLAUSE_PAUSE_S = 0.15  #: silence where an over-long sentence had to be split
MAX_CHUNK_CHARS = 250  #: longer sentences are split at commas, then spaces


def _is_emoji_part(ch: str, cat: str) -> bool:
    cp = ord(ch)
    return (
        cat in ("So", "Sk")  # pictographs, dingbats, emoji, skin-tone modifiers
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F1E6 <= cp <= 0x1F1FF  # regional indicators (flags)
        or cp == 0x20E3  # combining keycap
    )


#: terminal escape sequences (colours, cursor moves): removed whole, not just their ESC
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def clean_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Normalise ``text`` for speaking and check it.

    Unicode NFKC; line breaks, tabs and other whitespace become single spaces;
    control and format characters (NUL, escape, zero-width, bidi overrides)
    are removed, and so are terminal escape sequences; emoji and pictographs
    are dropped (they are not spoken).

    Args:
        text: what the portrait should say.
        max_chars: the longest accepted cleaned text (default 1,000 characters).

    Returns:
        The cleaned text, at most ``max_chars`` characters.

    Raises:
        TextError: not a string, empty, nothing pronounceable (only
            punctuation, symbols or emoji), or longer than ``max_chars``.
        InputError: ``max_chars`` is not a positive whole number.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise InputError(f"max_chars must be a positive whole number, got {max_chars!r}.")
    if not isinstance(text, str):
        raise TextError(f"The text must be a string, got {type(text).__name__}.")

    def too_long(n: int) -> TextError:
        return TextError(
            f"The text is {n:,} characters long; the limit is {max_chars:,}. "
            "Shorten it or split it into several videos."
        )

    if len(text) > 4 * max_chars + 1000:  # refuse megabytes before looking at them
        raise too_long(len(text))
    out = []
    for ch in unicodedata.normalize("NFKC", _ANSI_ESCAPE.sub("", text)):
        cat = unicodedata.category(ch)
        if ch.isspace() or cat in ("Zs", "Zl", "Zp"):
            out.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue  # control, format (zero-width, bidi), surrogate, private, unassigned
        elif _is_emoji_part(ch, cat):
            out.append(" ")
        else:
            out.append(ch)
    cleaned = re.sub(r" {2,}", " ", "".join(out)).strip()
    if not cleaned:
        raise TextError("The text is empty. Type the words the portrait should say.")
    if not any(c.isalnum() for c in cleaned):
        raise TextError(
            "The text has nothing to pronounce: it holds only punctuation, symbols or emoji. "
            "Type the words the portrait should say."
        )
    if len(cleaned) > max_chars:
        raise too_long(len(cleaned))
    return cleaned


_SENTENCE_END = re.compile(r"(?<=[.!?…;])[\"'”’)\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,:–—])\s+")


def _split_long(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence]
    parts: list[str] = []
    for clause in _CLAUSE_END.split(sentence):
        while len(clause) > limit:  # no comma: break at the last space that fits
            cut = clause.rfind(" ", 0, limit)
            cut = cut if cut > limit // 3 else limit
            parts.append(clause[:cut].strip())
            clause = clause[cut:].strip()
        if parts and len(parts[-1]) + 1 + len(clause) <= limit:
            parts[-1] = f"{parts[-1]} {clause}"
        elif clause:
            parts.append(clause)
    return parts


def split_sentences(text: str, max_chunk: int = MAX_CHUNK_CHARS) -> list[tuple[str, float]]:
    """Split cleaned text into chunks to synthesise: [(chunk, pause after it in seconds)].

    Sentences end at ``. ! ? … ;``; a sentence longer than ``max_chunk`` is
    split at commas (then spaces) with shorter pauses. Chunks with nothing to
    pronounce (a stray "...") are dropped.
    """
    chunks: list[tuple[str, float]] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        pieces = _split_long(sentence, max_chunk)
        for i, piece in enumerate(pieces):
            if any(c.isalnum() for c in piece):
                chunks.append((piece, CLAUSE_PAUSE_S if i < len(pieces) - 1 else SENTENCE_PAUSE_S))
    return chunks
