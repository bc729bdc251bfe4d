"""The model's audio front end: mel spectrogram and one 16-column window per video frame.

The constants reproduce the audio front end Wav2Lip was trained with: 16 kHz,
pre-emphasis 0.97, STFT 800/200/800 with reflection padding, 80 Slaney mel
bands from 55 to 7600 Hz, dB with a -100 dB floor and a symmetric [-4, 4]
normalisation. Frame ``i`` of a video at ``fps`` hears the window starting at
mel column ``int(i * 80 / fps)``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import AudioError

__all__ = [
    "SAMPLE_RATE", "N_FFT", "HOP", "MEL_BANDS", "MEL_STEP", "MEL_PER_SECOND",
    "melspectrogram", "window_starts", "mel_windows", "frame_count", "window", "mel_basis",
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
def mel_basis() -> np.ndarray:
    """(80, 401) float32 Slaney-normalised triangular filters (what librosa.filters.mel gives
    with htk=False, norm="slaney"), built here so the hot path needs no librosa import.

    Built once and cached: the same array is returned on every call, so do not write to it.
    ``mel_basis() @ |STFT|`` ((401, T) magnitudes) gives the (80, T) mel power.
    """
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
def window() -> np.ndarray:
    """(800,) float64 analysis window of the STFT: periodic Hann (scipy's
    ``get_window("hann", WIN, fftbins=True)``, librosa's default).

    Built once and cached: the same array is returned on every call, so do not write to it.
    """
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
    spec = np.fft.rfft(frames * window(), n=N_FFT, axis=1)
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
    mel = mel_basis() @ _stft_magnitude(emphasised)
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
