"""Speech post-processing: level, dither, trimming and fitting a soundtrack to a length."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..features import HOP, MEL_STEP, SAMPLE_RATE
from ..media.audio import Phrase, Speech
from .activity import active_range, find_pauses

__all__ = [
    "PEAK_DBFS", "MIN_LENGTH_S", "MAX_LENGTH_S", "LOOP_PAUSE_S", "MIN_PHRASE_S",
    "normalize_peak", "add_dither", "trim_silence", "check_length_s", "fit_length",
]

# -- speech clean-up and length fitting --------------------------------------------
#
# Loudness is *peak* normalised: the loudest sample is scaled to PEAK_DBFS
# (-1 dBFS). It is exact, cheap, and leaves headroom for the AAC encoder; the
# TTS engines all produce speech with a similar crest factor, so their voices
# end up at comparable loudness. Silence is found from the RMS level of 20 ms
# frames relative to the loudest frame (see lipsync.speech.activity).

PEAK_DBFS = -1.0  #: target peak level of synthesised speech
#: TPDF dither amplitude: one 16-bit step (about -90 dBFS), far below any
#: pause threshold but enough that no stretch is digital silence.
DITHER = 2.0**-15
LOOP_PAUSE_S = 0.6  #: silence between repeats with ``loop=True``
CUT_FADE_S = 0.04  #: fade-out where a cut falls in a pause
HARD_CUT_FADE_S = 0.12  #: fade-out of a cut in the middle of speech
MIN_LENGTH_S = MEL_STEP * HOP / SAMPLE_RATE  #: 0.2 s, the shortest usable soundtrack
MAX_LENGTH_S = 3600.0  #: the longest length_s fit_length accepts (the pipeline's max_audio_s is lower)
#: a phrase that a cut leaves shorter than this is dropped (too brief to read as a caption)
MIN_PHRASE_S = 0.2


def trim_silence(samples: np.ndarray, sample_rate: int, *, lead_s: float = 0.15, tail_s: float = 0.25) -> np.ndarray:
    """Shorten leading/trailing silence to at most ``lead_s`` / ``tail_s`` seconds.

    Silence already shorter than the margin is kept as it is (nothing is
    added). An all-silent input is returned unchanged.
    """
    samples = np.asarray(samples, np.float32)
    rng = active_range(samples, sample_rate)
    if rng is None:
        return samples
    start = max(0, rng[0] - int(round(lead_s * sample_rate)))
    end = min(len(samples), rng[1] + int(round(tail_s * sample_rate)))
    return samples[start:end]


def normalize_peak(samples: np.ndarray, peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """Scale so the loudest sample sits at ``peak_dbfs``; silence is returned unchanged."""
    samples = np.asarray(samples, np.float32)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak < 1e-6:
        return samples
    return (samples * (10.0 ** (peak_dbfs / 20.0) / peak)).astype(np.float32)


def add_dither(samples: np.ndarray, amplitude: float = DITHER, seed: int = 0) -> np.ndarray:
    """Add triangular (TPDF) noise of ``amplitude`` peak: no stretch stays digital silence.

    Deterministic for a given ``seed`` and length.
    """
    samples = np.asarray(samples, np.float32)
    rng = np.random.default_rng(seed)
    noise = (rng.random(samples.shape) - rng.random(samples.shape)) * amplitude
    return np.clip(samples + noise.astype(np.float32), -1.0, 1.0)


def check_length_s(length_s: float) -> float:
    """Validate a target length: 0 (keep) or between 0.2 and 3600 seconds.

    Raises:
        InputError: not a number, negative, too short or too long.
    """
    try:
        value = float(length_s)
    except (TypeError, ValueError):
        raise InputError(f"The length must be a number of seconds, got {length_s!r}.") from None
    if not np.isfinite(value) or value < 0:
        raise InputError(f"The length must be 0 (natural length) or a positive number of seconds, got {length_s}.")
    if 0 < value < MIN_LENGTH_S:
        raise InputError(f"The length must be at least {MIN_LENGTH_S:g} seconds (or 0 for the natural length).")
    if value > MAX_LENGTH_S:
        raise InputError(f"The length must be at most {MAX_LENGTH_S:g} seconds, got {value:g}.")
    return value


def _fade_out(samples: np.ndarray, n_fade: int) -> np.ndarray:
    n_fade = min(n_fade, len(samples))
    if n_fade > 0:
        ramp = 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, n_fade, dtype=np.float64)))
        samples[-n_fade:] *= ramp.astype(np.float32)
    return samples


def fit_length(speech: Speech, length_s: float, loop: bool = False) -> Speech:
    """Make ``speech`` last exactly ``length_s`` seconds (to the nearest sample).

    * ``length_s == 0``: the speech is returned unchanged (its natural length).
    * Longer target: silence is added at the end; with ``loop=True`` the speech
      is first repeated, after a :data:`LOOP_PAUSE_S` pause, as many whole
      times as fit.
    * Shorter target: the speech is cut in the last pause (at least
      :data:`MIN_PAUSE_S` of silence) that starts before the target and keeps
      at least half of it, with a short fade-out, and silence fills up to the
      target; without such a pause it is cut at the target with a
      :data:`HARD_CUT_FADE_S` fade-out.

    Added silence carries the same tiny dither as synthesised speech. Works
    for uploaded audio as well as synthesised speech; the sample rate is kept.
    The speech's ``phrases`` follow the audio: kept with padding, repeated
    with each loop, dropped past a cut and trimmed at it (a remainder shorter
    than :data:`MIN_PHRASE_S` is dropped).

    Raises:
        InputError: ``length_s`` is negative, not finite, below 0.2 s or above an hour.
    """
    length_s = check_length_s(length_s)
    if length_s == 0:
        return speech
    sr = int(speech.sample_rate)
    wav = np.asarray(speech.samples, np.float32)
    target = int(round(length_s * sr))
    n = len(wav)
    if n == target:
        return speech
    if n < target:
        pieces = [wav]
        starts = [0]  # where each copy of the speech begins, in samples
        used = n
        if loop and n > 0:
            gap = int(round(LOOP_PAUSE_S * sr))
            while used + gap + n <= target:
                pieces += [add_dither(np.zeros(gap, np.float32), seed=used), wav]
                starts.append(used + gap)
                used += gap + n
        pieces.append(add_dither(np.zeros(target - used, np.float32), seed=target))
        out = np.concatenate(pieces)
        phrases = tuple(
            Phrase(p.text, p.start_s + at / sr, p.end_s + at / sr) for at in starts for p in speech.phrases
        )
    else:
        cut = None
        for start, _end in reversed(find_pauses(wav, sr)):
            if start < target and start >= target / 2:
                cut = min(target, start + int(round(CUT_FADE_S * sr)))
                break
        if cut is not None:
            head = _fade_out(wav[:cut].copy(), int(round(CUT_FADE_S * sr)))
        else:
            head = _fade_out(wav[:target].copy(), int(round(HARD_CUT_FADE_S * sr)))
        out = np.concatenate([head, add_dither(np.zeros(target - len(head), np.float32), seed=target)])
        phrases = _cut_phrases(speech.phrases, len(head) / sr)
    return Speech(out.astype(np.float32), sr, phrases)


def _cut_phrases(phrases: tuple[Phrase, ...], end_s: float) -> tuple[Phrase, ...]:
    """The phrases still heard when the speech stops at ``end_s``: later ones dropped, the one cut trimmed."""
    kept = []
    for p in phrases:
        end = min(p.end_s, end_s)
        if end - p.start_s >= MIN_PHRASE_S:
            kept.append(Phrase(p.text, p.start_s, end))
    return tuple(kept)
