"""Typed text into a live session: spoken sentence by sentence, each pushed as soon as it is synthesised."""

from __future__ import annotations

import logging
import re
import threading
import time

log = logging.getLogger("lipsync")

__all__ = ["sentences", "speak"]

_END = re.compile(r"(?<=[.!?…;:])\s+|\n+")
MAX_TEXT_CHARS = 2000


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end (. ! ? … ; :) and line break; pieces without a letter or digit dropped."""
    return [s.strip() for s in _END.split(text or "") if any(c.isalnum() for c in s)]


def _room_for(session, seconds: float, cancel: threading.Event | None) -> bool:
    """Wait until the session's queue can take ``seconds`` more speech; False when cancelled or closed.

    A long text is synthesised faster than it is spoken: instead of overflowing the
    session's queue (:data:`~lipsync.live.timeline.MAX_QUEUE_S`), the next sentence waits
    for the ones before it to play.
    """
    from .timeline import MAX_QUEUE_S

    while True:
        if (cancel is not None and cancel.is_set()) or session.closed:
            return False
        if session.queued_s + seconds <= MAX_QUEUE_S or session.queued_s == 0:
            return True
        time.sleep(0.1)


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

    if len(text) > MAX_TEXT_CHARS:  # before the text is split: the check costs nothing, the split does not
        raise TextError(f"The text has {len(text):,} characters; the live avatar takes up to {MAX_TEXT_CHARS:,} "
                        "at a time. Send it in parts.")
    parts = sentences(text)
    if not parts:
        raise TextError("Type something to say: the text has no words.")
    done = 0
    for sentence in parts:
        if (cancel is not None and cancel.is_set()) or session.closed:
            break
        speech, _ = narrate(sentence, voice)
        if not _room_for(session, len(speech.samples) / speech.sample_rate, cancel):
            break
        session.push(speech.samples, speech.sample_rate)
        done += 1
    return done
