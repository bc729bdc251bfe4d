"""Audio: decoding, the model's mel spectrogram and its per-frame windows.

The constants reproduce the audio front end Wav2Lip was trained with (see
``shared/reference/README.md``): 16 kHz, pre-emphasis 0.97, STFT 800/200/800
with reflection padding, 80 Slaney mel bands from 55 to 7600 Hz, dB with a
-100 dB floor and a symmetric [-4, 4] normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import AudioError
from .proc import ffmpeg_exe, run

__all__ = [
    "SAMPLE_RATE",
    "MEL_BANDS",
    "MEL_STEP",
    "MEL_PER_SECOND",
    "load_audio",
    "melspectrogram",
    "window_starts",
    "mel_windows",
    "resample",
    "frame_count",
    "speech_weights",
    "Speech",
    "fit_length",
    "check_length_s",
    "trim_silence",
    "normalize_peak",
    "add_dither",
    "find_pauses",
    "active_range",
]

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
WIN = 800
MEL_BANDS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
MEL_STEP = 16  #: mel columns per model window (0.2 s)
MEL_PER_SECOND = SAMPLE_RATE / HOP  #: 80 columns per second

@dataclass(frozen=True)
class Speech:
    """A mono soundtrack at its own sample rate."""

    samples: np.ndarray  #: (n,) float32 in [-1, 1]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


#: Longest an audio decode may take before ffmpeg is stopped.
DECODE_TIMEOUT_S = 120.0


def load_audio(
    path: str | Path,
    sample_rate: int | None = SAMPLE_RATE,
    *,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
) -> tuple[np.ndarray, int]:
    """Decode any audio file ffmpeg reads (wav, mp3, m4a, ogg, flac, ...) to mono float32.

    Args:
        path: the file.
        sample_rate: resample to this rate; ``None`` keeps the file's own rate.
        max_seconds: refuse audio longer than this (decoding stops just past it).
        max_bytes: refuse files larger than this before decoding.

    Returns:
        ``(samples, rate)``: samples is a 1-D float32 array in [-1, 1].

    Raises:
        AudioError: missing, empty, too large, too long or undecodable file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"The audio file {path} does not exist.")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"The audio file {path.name} is empty.")
    if max_bytes is not None and size > max_bytes:
        raise AudioError(
            f"The audio file {path.name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
            "Use a shorter or more compressed recording."
        )
    args = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path.resolve()),
        *(["-t", f"{max_seconds + 0.5:.3f}"] if max_seconds else []),
        "-map", "0:a:0", "-vn", "-ac", "1",
        *(["-ar", str(sample_rate)] if sample_rate else []),
        "-f", "wav", "-acodec", "pcm_f32le", "-rf64", "never", "pipe:1",
    ]  # fmt: skip
    try:
        raw = run(args, timeout=DECODE_TIMEOUT_S, what="ffmpeg (audio decode)", error=AudioError)
    except AudioError:
        raise AudioError(
            f"{path.name} could not be decoded as audio. Use a wav, mp3, m4a, ogg or flac file with speech in it."
        ) from None
    rate, wav = _parse_wav_f32(raw)
    if wav.size == 0:
        raise AudioError(
            f"{path.name} holds no decodable audio. Use a wav, mp3, m4a, ogg or flac file with speech in it."
        )
    if max_seconds and wav.size > max_seconds * rate + 1:
        raise AudioError(
            f"The audio lasts more than {max_seconds:g} seconds, the limit. Use a shorter recording."
        )
    return np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0), rate


def _parse_wav_f32(raw: bytes) -> tuple[int, np.ndarray]:
    """(rate, samples) from the float32 mono WAV ffmpeg streamed (data size may be unset)."""
    import struct

    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise AudioError("The decoder returned no audio.")
    i, rate = 12, None
    while i + 8 <= len(raw):
        kind, size = raw[i : i + 4], struct.unpack("<I", raw[i + 4 : i + 8])[0]
        if kind == b"fmt ":
            rate = struct.unpack("<I", raw[i + 12 : i + 16])[0]
        elif kind == b"data":
            body = raw[i + 8 :]
            body = body[: len(body) - len(body) % 4]
            if rate is None:
                break
            return rate, np.frombuffer(body, dtype="<f4").astype(np.float32)
        i += 8 + size + (size & 1)
    raise AudioError("The decoder returned no audio.")


def resample(wav: np.ndarray, orig_rate: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (libsoxr, high quality), float32 in, float32 out."""
    wav = np.asarray(wav, dtype=np.float32)
    if orig_rate == rate or wav.size == 0:
        return wav
    import soxr

    return soxr.resample(wav, int(orig_rate), int(rate), quality="HQ").astype(np.float32, copy=False)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    mel = f / (200.0 / 3.0)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3.0))


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """(80, 401) Slaney-normalised triangular filters (what librosa.filters.mel gives
    with htk=False, norm="slaney"), built here so the hot path needs no librosa import."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2.0, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), MEL_BANDS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    # periodic Hann (scipy's get_window("hann", WIN, fftbins=True), librosa's default)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)


def _stft_magnitude(y: np.ndarray) -> np.ndarray:
    """|STFT|, centred with reflection padding: (N_FFT//2+1, 1 + len(y)//HOP)."""
    pad = N_FFT // 2
    if y.size <= pad:
        # reflection needs more samples than the pad; repeat-reflect like np.pad's
        # "reflect" cannot, so fall back to symmetric edges for tiny inputs.
        y = np.pad(y, pad, mode="symmetric")
    else:
        y = np.pad(y, pad, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP]
    spec = np.fft.rfft(frames * _window(), n=N_FFT, axis=1)
    return np.abs(spec).T.astype(np.float32)


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """The normalised log-mel spectrogram Wav2Lip expects.

    Args:
        wav: 1-D float audio at 16 kHz.

    Returns:
        (80, 1 + len(wav) // 200) float32 in [-4, 4]. Digital silence gives
        -4 everywhere, never NaN.
    """
    wav = np.nan_to_num(np.asarray(wav, dtype=np.float64).reshape(-1))
    if wav.size == 0:
        raise AudioError("The audio is empty.")
    emphasised = np.empty_like(wav)
    emphasised[0] = wav[0]
    emphasised[1:] = wav[1:] - PREEMPHASIS * wav[:-1]
    mel = _mel_basis() @ _stft_magnitude(emphasised)
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    norm = 2 * MAX_ABS * (db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB) - MAX_ABS
    return np.clip(norm, -MAX_ABS, MAX_ABS).astype(np.float32)


def window_starts(n_columns: int, fps: float, n_frames: int | None = None) -> np.ndarray:
    """First mel column of each video frame's 16-column window.

    Frame ``i`` starts at ``int(i * 80 / fps)``. Without ``n_frames`` this is
    the original inference rule: frames while the window fits, then one last
    window clamped to end at the last column. With ``n_frames`` there is exactly
    that many frames (the video length the soundtrack asks for), and every
    window that would run past the end is clamped the same way.

    Returns:
        int64 array, one entry per video frame.
    """
    if n_columns < MEL_STEP:
        raise AudioError("The audio is too short: it must last at least 0.2 seconds.")
    if fps <= 0:
        raise ValueError("fps must be positive")
    step = MEL_PER_SECOND / float(fps)
    last = n_columns - MEL_STEP
    if n_frames is not None:
        starts = np.array([int(i * step) for i in range(n_frames)], dtype=np.int64)
        return np.minimum(starts, last)
    out = []
    i = 0
    while True:
        s = int(i * step)
        if s + MEL_STEP > n_columns:
            out.append(last)
            break
        out.append(s)
        i += 1
    return np.asarray(out, dtype=np.int64)


def mel_windows(
    mel: np.ndarray, fps: float, n_frames: int | None = None, starts: np.ndarray | None = None
) -> np.ndarray:
    """(N, 80, 16) windows of ``mel`` for each video frame.

    ``starts`` (from :func:`window_starts`) may be passed when the caller has them.
    """
    if starts is None:
        starts = window_starts(mel.shape[1], fps, n_frames)
    view = np.lib.stride_tricks.sliding_window_view(mel, MEL_STEP, axis=1)  # (80, T-15, 16)
    return view.transpose(1, 0, 2)[starts]


def frame_count(n_samples: int, sample_rate: int, fps: float) -> int:
    """Video frames that cover ``n_samples`` of audio, to the nearest frame (at least 1)."""
    return max(1, int(round(n_samples / sample_rate * fps)))


def speech_weights(
    wav: np.ndarray,
    starts: np.ndarray,
    *,
    threshold_db: float = -42.0,
    below_peak_db: float = 38.0,
    min_pause_s: float = 0.3,
    fade_frames: int = 2,
    fps: float = 25.0,
) -> np.ndarray:
    """How much each video frame speaks, from the audio its mel window hears.

    A frame is silent when the RMS level of the samples its window covers is
    below ``threshold_db`` dBFS or more than ``below_peak_db`` under the loudest
    frame, and the silence lasts at least ``min_pause_s``. Speaking frames get
    1, silent ones 0, and silent frames within ``fade_frames`` of speech get a
    linear ramp so the mouth settles rather than snaps.

    Args:
        wav: 16 kHz mono float audio.
        starts: each frame's first mel column (:func:`window_starts`).

    Returns:
        (N,) float32 in [0, 1].
    """
    wav = np.asarray(wav, np.float64)
    csum = np.concatenate([[0.0], np.cumsum(wav * wav)])
    lo = np.clip(starts * HOP - N_FFT // 2, 0, len(wav))
    hi = np.clip((starts + MEL_STEP - 1) * HOP + N_FFT // 2, 0, len(wav))
    energy = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    level = 10.0 * np.log10(energy + 1e-12)
    peak = float(level.max()) if level.size else -120.0
    silent = level < max(threshold_db, peak - below_peak_db)
    # only pauses long enough to see count; short gaps between words keep moving
    min_run = max(1, int(round(min_pause_s * fps)))
    n = len(silent)
    i = 0
    while i < n:
        if silent[i]:
            j = i
            while j < n and silent[j]:
                j += 1
            if j - i < min_run:
                silent[i:j] = False
            i = j
        else:
            i += 1
    speaking = ~silent
    if not speaking.any():
        return np.zeros(n, np.float32)
    # distance (in frames) from each frame to the nearest speaking frame
    idx = np.arange(n)
    last = np.where(speaking, idx, -10**9)
    last = np.maximum.accumulate(last)
    nxt = np.where(speaking, idx, 10**9)
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    dist = np.minimum(idx - last, nxt - idx)
    w = np.clip(1.0 - dist / (fade_frames + 1.0), 0.0, 1.0)
    return w.astype(np.float32)


# -- speech clean-up and length fitting --------------------------------------------
#
# Loudness is *peak* normalised: the loudest sample is scaled to PEAK_DBFS
# (-1 dBFS). It is exact, cheap, and leaves headroom for the AAC encoder; the
# TTS engines all produce speech with a similar crest factor, so their voices
# end up at comparable loudness. Silence is found from the RMS level of 20 ms
# frames relative to the loudest frame (see _silent_frames).

PEAK_DBFS = -1.0  #: target peak level of synthesised speech
#: TPDF dither amplitude: one 16-bit step (about -90 dBFS), far below any
#: pause threshold but enough that no stretch is digital silence.
DITHER = 2.0**-15
LEVEL_FRAME_S = 0.02  #: frame length of the level analysis
SILENCE_FLOOR_DB = -50.0  #: frames quieter than this (dBFS RMS) are silent...
SILENCE_BELOW_PEAK_DB = 35.0  #: ...and so are frames this far below the loudest frame
MIN_PAUSE_S = 0.12  #: shortest silence that counts as a pause
LOOP_PAUSE_S = 0.6  #: silence between repeats with ``loop=True``
CUT_FADE_S = 0.04  #: fade-out where a cut falls in a pause
HARD_CUT_FADE_S = 0.12  #: fade-out of a cut in the middle of speech
MIN_LENGTH_S = MEL_STEP * HOP / SAMPLE_RATE  #: 0.2 s, the shortest usable soundtrack
MAX_LENGTH_S = 3600.0  #: the longest length_s fit_length accepts (the pipeline's max_audio_s is lower)


def _silent_frames(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """(silent flag per frame, frame length in samples)."""
    n = max(1, int(round(LEVEL_FRAME_S * sample_rate)))
    x = np.asarray(samples, np.float64)
    frames = len(x) // n
    if frames == 0:
        return np.ones(0, bool), n
    energy = np.mean(x[: frames * n].reshape(frames, n) ** 2, axis=1)
    level = 10.0 * np.log10(energy + 1e-12)
    threshold = max(SILENCE_FLOOR_DB, float(level.max()) - SILENCE_BELOW_PEAK_DB)
    return level < threshold, n


def active_range(samples: np.ndarray, sample_rate: int) -> tuple[int, int] | None:
    """``(start, end)`` sample indices from the first to the last sound, or None if all silent."""
    silent, n = _silent_frames(samples, sample_rate)
    loud = np.flatnonzero(~silent)
    if loud.size == 0:
        return None
    return int(loud[0] * n), int(min(len(samples), (loud[-1] + 1) * n))


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


def find_pauses(samples: np.ndarray, sample_rate: int, min_pause_s: float = MIN_PAUSE_S) -> list[tuple[int, int]]:
    """Silences of at least ``min_pause_s`` that come after some sound: [(start, end)] in samples.

    Leading silence is not a pause; trailing silence is (it ends at the last sample).
    """
    silent, n = _silent_frames(samples, sample_rate)
    loud = np.flatnonzero(~silent)
    if loud.size == 0:
        return []
    min_run = max(1, int(np.ceil(min_pause_s * sample_rate / n)))
    out = []
    i = int(loud[0])
    total = len(silent)
    while i < total:
        if silent[i]:
            j = i
            while j < total and silent[j]:
                j += 1
            if j - i >= min_run:
                out.append((i * n, len(samples) if j == total else j * n))
            i = j
        else:
            i += 1
    return out


def check_length_s(length_s: float) -> float:
    """Validate a target length: 0 (keep) or between 0.2 and 3600 seconds.

    Raises:
        InputError: not a number, negative, too short or too long.
    """
    from .errors import InputError

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
        used = n
        if loop and n > 0:
            gap = int(round(LOOP_PAUSE_S * sr))
            while used + gap + n <= target:
                pieces += [add_dither(np.zeros(gap, np.float32), seed=used), wav]
                used += gap + n
        pieces.append(add_dither(np.zeros(target - used, np.float32), seed=target))
        out = np.concatenate(pieces)
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
    return Speech(out.astype(np.float32), sr)
