"""Typed text into a live session: spoken sentence by sentence, each pushed as soon as it is synthesised."""

from __future__ import annotations

import logging
import re
import threading

log = logging.getLogger("lipsync")

__all__ = ["sentences", "speak"]

_END = re.compile(r"(?<=[.!?…;:])\s+|\n+")
MAX_TEXT_CHARS = 2000


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end (. ! ? … ; :) and line break; pieces without a letter or digit dropped."""
    return [s.strip() for s in _END.split(text or "") if any(c.isalnum() for c in s)]


def speak(session, text: str, voice: str | None = None, cancel: threading.Event | None = None) -> int:
    """Synthesise ``text`` one sentence at a time and push each into ``session`` when it is ready.

    The first sentence is heard while the next is being synthesised. Stops early
    when ``cancel`` is set or the session closes.

    Returns:
        the number of sentences pushed.

    Raises:
        TextError: empty or too long text; VoiceError: an unknown or unusable voice.
    """
    from ..errors import TextError
    from ..speech import narrate

    parts = sentences(text)
    if not parts:
        raise TextError("Type something to say: the text has no words.")
    if len(text) > MAX_TEXT_CHARS:
        raise TextError(f"The text has {len(text)} characters; the live avatar takes up to {MAX_TEXT_CHARS} at a time.")
    done = 0
    for sentence in parts:
        if (cancel is not None and cancel.is_set()) or session.closed:
            break
        speech, _ = narrate(sentence, voice)
        if (cancel is not None and cancel.is_set()) or session.closed:
            break
        session.push(speech.samples, speech.sample_rate)
        done += 1
    return done
