"""Text → speech: the voice catalogue, the engines (Coqui TTS, espeak-ng),
post-processing, length fitting and speech activity."""

from ..media.audio import Speech
from .post import check_length_s, fit_length
from .tts import (
    Voice,
    clean_text,
    default_voice,
    get_voice,
    list_voices,
    narrate,
    synthesize,
    usable_voice,
)

__all__ = [
    "Speech", "Voice", "check_length_s", "clean_text", "default_voice", "fit_length",
    "get_voice", "list_voices", "narrate", "synthesize", "usable_voice",
]
