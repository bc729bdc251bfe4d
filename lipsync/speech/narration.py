"""Narration: text -> :class:`~lipsync.media.audio.Speech`, sentence by sentence, with the chosen voice.

Text is cleaned (:func:`~.text.clean_text`), split into sentences,
synthesised sentence by sentence and joined with
:data:`~.text.SENTENCE_PAUSE_S` pauses (the result's ``phrases`` say where
each sentence is heard: captions are timed by them); the result is trimmed to
short silent margins, peak-normalised to -1 dBFS
(:data:`lipsync.speech.post.PEAK_DBFS`) and dithered so it is never digital
silence. It keeps the voice's native sample rate (22050 Hz for the VITS
models and espeak-ng).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import replace

import numpy as np

from ..errors import TextError, VoiceError
from ..media.audio import Phrase, Speech
from .catalogue import FALLBACK_VOICE, Voice, VoiceSpec, get_voice, is_default, spec_of, usable_voice
from .coqui import coqui_chunks
from .espeak import espeak_chunks
from .post import add_dither, normalize_peak, trim_silence
from .text import DEFAULT_MAX_CHARS, clean_text, split_sentences

__all__ = ["narrate", "synthesize", "LEAD_S", "TAIL_S", "EDGE_S"]

log = logging.getLogger("lipsync")

LEAD_S = 0.15  #: silence before the first word
TAIL_S = 0.25  #: silence after the last word
EDGE_S = (0.02, 0.05)  #: what trimming leaves around each sentence (onset, decay), part of the pauses


def _speak(text: str, spec: VoiceSpec) -> Speech:
    chunks = split_sentences(text)
    if not chunks:
        raise TextError("The text has nothing to pronounce. Type the words the portrait should say.")
    if spec.engine == "coqui":
        wavs, rate = coqui_chunks(spec, chunks)
    else:
        assert spec.espeak_voice is not None
        wavs, rate = espeak_chunks(spec.espeak_voice, chunks)
    lead, tail = EDGE_S

    def gap(seconds: float) -> np.ndarray:
        return np.zeros(int(round(max(0.0, seconds - lead - tail) * rate)), np.float32)

    pieces = [gap(LEAD_S + tail)]
    at = pieces[0].size  # where the next piece starts, in samples
    spans: list[tuple[str, int, int]] = []  # (chunk, first sample, end sample) of each spoken chunk
    for wav, (chunk, pause) in zip(wavs, chunks):
        tight = trim_silence(wav, rate, lead_s=lead, tail_s=tail)
        if tight.size == 0:
            continue
        spans.append((chunk, at, at + tight.size))
        pause_samples = gap(pause)
        pieces += [tight, pause_samples]
        at += tight.size + pause_samples.size
    if not spans:
        raise VoiceError(f"The voice {spec.id} produced no audio for this text.")
    pieces[-1] = gap(TAIL_S + lead)  # the last pause becomes the tail
    samples = normalize_peak(np.concatenate(pieces))
    samples = add_dither(samples, seed=zlib.crc32(text.encode()))
    # each chunk is heard from the start to the end of its trimmed audio (its short margins included)
    phrases = tuple(Phrase(chunk, start / rate, end / rate) for chunk, start, end in spans)
    return Speech(samples, rate, phrases)


def narrate(text: str, voice_id: str | None = None, *, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[Speech, Voice]:
    """Like :func:`synthesize`, and also return the voice that actually spoke.

    With ``voice_id=None`` the :func:`default_voice` is used; if that neural
    voice then fails to load (a download error, a corrupt cache), a warning is
    logged and :data:`FALLBACK_VOICE` speaks instead.
    """
    cleaned = clean_text(text, max_chars)
    voice = usable_voice(voice_id)
    try:
        return _speak(cleaned, spec_of(voice.id)), voice
    except VoiceError as e:
        if not is_default(voice_id) or voice.engine != "coqui":
            raise
        fallback = get_voice(FALLBACK_VOICE)
        if not fallback.available:
            raise
        message = f"The default voice {voice.id} failed ({e}); using {FALLBACK_VOICE} (espeak-ng) instead."
        log.warning("%s", message)
        fallback = replace(fallback, note=message)
        return _speak(cleaned, spec_of(fallback.id)), fallback


def synthesize(text: str, voice_id: str | None = None, *, max_chars: int = DEFAULT_MAX_CHARS) -> Speech:
    """Speak ``text`` with a voice of the catalogue.

    Args:
        text: what to say; cleaned and checked by :func:`clean_text`.
        voice_id: a catalogue id (``python -m lipsync voices``); None = :func:`default_voice`.
        max_chars: the text length limit.

    Returns:
        :class:`Speech` at the voice's native rate (22050 Hz for VITS and
        espeak-ng): float32 mono, peak -1 dBFS, short silent margins, dithered;
        its ``phrases`` hold each sentence (or clause of a long one) with the
        time it is heard, in seconds from the start.

    Raises:
        TextError: empty, unpronounceable or too long text.
        VoiceError: unknown voice, or the voice cannot be used here (the message says why).
    """
    return narrate(text, voice_id, max_chars=max_chars)[0]
