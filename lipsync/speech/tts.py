"""Voices: a catalogue of text-to-speech engines, and text -> :class:`~lipsync.media.audio.Speech`.

The rooms (this module gathers their public names, for the code and the
users that import them from here):

* :mod:`.catalogue` - the voices, their labels and whether each can be used here;
* :mod:`.text` - cleaning and checking the text, cutting it into sentences;
* :mod:`.coqui` - the Coqui VITS engine (models loaded once, one lock per model);
* :mod:`.espeak` - the espeak-ng engine;
* :mod:`.narration` - text -> speech with a voice, and the fallback to espeak-ng.

Nothing here imports torch or TTS until a Coqui voice is actually used.
"""

from __future__ import annotations

from .catalogue import (
    FALLBACK_VOICE,
    LIST_HINT,
    LJSPEECH,
    VCTK,
    VCTK_SPEAKERS,
    Voice,
    default_voice,
    get_voice,
    list_voices,
    usable_voice,
)
from .espeak import ESPEAK_SPEED_WPM, ESPEAK_TIMEOUT_S
from .narration import EDGE_S, LEAD_S, TAIL_S, narrate, synthesize
from .text import CLAUSE_PAUSE_S, DEFAULT_MAX_CHARS, MAX_CHUNK_CHARS, SENTENCE_PAUSE_S, clean_text, split_sentences

__all__ = [
    "Voice",
    "list_voices",
    "get_voice",
    "default_voice",
    "usable_voice",
    "synthesize",
    "narrate",
    "clean_text",
    "split_sentences",
    "DEFAULT_MAX_CHARS",
    "FALLBACK_VOICE",
    "VCTK_SPEAKERS",
    "VCTK",
    "LJSPEECH",
    "LIST_HINT",
    "SENTENCE_PAUSE_S",
    "CLAUSE_PAUSE_S",
    "MAX_CHUNK_CHARS",
    "LEAD_S",
    "TAIL_S",
    "EDGE_S",
    "ESPEAK_SPEED_WPM",
    "ESPEAK_TIMEOUT_S",
]
