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


def load_audio(path: str | Path, sample_rate: int | None = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Decode any audio file ffmpeg reads (wav, mp3, m4a, ogg, flac, ...) to mono float32.

    Args:
        path: the file.
        sample_rate: resample to this rate; ``None`` keeps the file's own rate.

    Returns:
        ``(samples, rate)``: samples is a 1-D float32 array in [-1, 1].

    Raises:
        AudioError: missing, empty, undecodable or silent-length file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"The audio file {path} does not exist.")
    if path.stat().st_size == 0:
        raise AudioError(f"The audio file {path.name} is empty.")
    rate = sample_rate or _native_rate(path)
    args = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path.resolve()),
        "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(rate),
        "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]  # fmt: skip
    raw = run(args, timeout=DECODE_TIMEOUT_S, what="ffmpeg (audio decode)", error=AudioError)
    wav = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if wav.size == 0:
        raise AudioError(
            f"{path.name} holds no decodable audio. Use a wav, mp3, m4a, ogg or flac file with speech in it."
        )
    return np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0), rate


def _native_rate(path: Path) -> int:
    """The first audio stream's sample rate, read from ffmpeg's stream banner."""
    import re

    try:
        run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path.resolve())], timeout=30, what="ffmpeg")
    except AudioError as e:  # pragma: no cover - run() raises EncodeError by default
        msg = str(e)
    except Exception as e:  # ffmpeg exits 1 with no output file: the banner is in the message
        msg = str(e)
    else:  # pragma: no cover
        msg = ""
    m = re.search(r"Audio: .*?, (\d+) Hz", msg)
    if not m:
        raise AudioError(f"{path.name} is not an audio file ffmpeg can read (wav, mp3, m4a, ogg, flac).")
    return int(m.group(1))


def resample(wav: np.ndarray, orig_rate: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (polyphase), float32 in, float32 out."""
    if orig_rate == rate:
        return np.asarray(wav, dtype=np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(orig_rate), int(rate))
    return resample_poly(np.asarray(wav, np.float64), rate // g, orig_rate // g).astype(np.float32)


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    import librosa

    return librosa.filters.mel(
        sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=MEL_BANDS, fmin=FMIN, fmax=FMAX
    ).astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    from scipy.signal import get_window

    return get_window("hann", WIN, fftbins=True).astype(np.float64)


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


def mel_windows(mel: np.ndarray, fps: float, n_frames: int | None = None) -> np.ndarray:
    """(N, 80, 16) windows of ``mel`` for each video frame (a read-only view)."""
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
