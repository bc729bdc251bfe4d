"""A live session's sound, sample by sample: pushed chunks checked, queued, cut into mel windows.

* :func:`check_chunk`: a pushed chunk as float32 mono in [-1, 1], or an
  :class:`~lipsync.AudioError` that says what to send instead.
* :class:`SampleQueue`: float32 samples in at the back, taken from the front in
  any amounts, a few pushed back in front (a faded edge).
* :func:`mel_window`: frame ``n``'s (80, 16) mel window from the 4000 samples
  around its start (:data:`SEGMENT`), bit for bit the offline spectrogram's
  columns, at a small share of its cost.

**Look-ahead.** Frame ``n``'s mouth is predicted from the mel window that starts at
its own time and spans 16 mel columns (0.2 s), as in the offline pipeline; the
last column's STFT frame reaches 25 ms further. A frame can only follow speech
once :data:`LOOKAHEAD_S` (212.5 ms) of it beyond the frame's start has arrived:
that is the floor under the latency.
"""

from __future__ import annotations

import collections

import numpy as np

from .. import features
from ..errors import AudioError

__all__ = [
    "LOOKAHEAD_S",
    "LOOKAHEAD_SAMPLES",
    "MAX_CHUNK_S",
    "MAX_RATE",
    "MIN_RATE",
    "MODEL_RATE",
    "SEGMENT",
    "SampleQueue",
    "check_chunk",
    "mel_window",
    "silent_mels",
    "to_int16",
]

MODEL_RATE = features.SAMPLE_RATE  #: the model's rate (16 kHz): the mel windows' timeline
LOOKAHEAD_SAMPLES = (features.MEL_STEP - 1) * features.HOP + features.N_FFT // 2  #: 3400 samples at 16 kHz
LOOKAHEAD_S = LOOKAHEAD_SAMPLES / MODEL_RATE  #: 0.2125 s of speech beyond a frame's start decide its mouth
SEGMENT = 600 + LOOKAHEAD_SAMPLES  #: samples (16 kHz) that one mel window is computed from (4000)
MAX_CHUNK_S = 60.0  #: the longest chunk one push() takes
MIN_RATE, MAX_RATE = 8_000, 192_000  #: the rates a chunk may come at (and a session's sound may go out at)
SILENT = -4.0  #: the normalised mel floor: a window of silence


class SampleQueue:
    """Float32 samples in at the back, taken from the front in any amounts (not thread-safe: the session locks)."""

    def __init__(self) -> None:
        self._parts: collections.deque[np.ndarray] = collections.deque()
        self._size = 0

    @property
    def size(self) -> int:
        """Samples queued."""
        return self._size

    def put(self, x: np.ndarray) -> None:
        """Queue ``x`` (1-D float32) at the back."""
        if x.size:
            self._parts.append(x)
            self._size += x.size

    def push_front(self, x: np.ndarray) -> None:
        """Put ``x`` back in front of the queue (what :meth:`take` just took, changed)."""
        if x.size:
            self._parts.appendleft(x)
            self._size += x.size

    def take(self, n: int) -> np.ndarray:
        """Up to ``n`` samples from the front, removed from the queue."""
        out = self.peek(n)
        left = len(out)
        while left:
            head = self._parts[0]
            if head.size <= left:
                self._parts.popleft()
                left -= head.size
            else:
                self._parts[0] = head[left:]
                left = 0
        self._size -= len(out)
        return out

    def peek(self, n: int) -> np.ndarray:
        """Up to ``n`` samples from the front, left in the queue (a copy)."""
        n = min(n, self._size)
        out = np.empty(n, np.float32)
        i = 0
        for part in self._parts:
            if i >= n:
                break
            k = min(n - i, part.size)
            out[i : i + k] = part[:k]
            i += k
        return out

    def clear(self) -> None:
        self._parts.clear()
        self._size = 0


def check_chunk(samples, sample_rate) -> tuple[np.ndarray, int]:
    """The chunk as float32 mono in [-1, 1] and its rate, checked; raises AudioError with what to do."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float)):
        raise AudioError(f"The sample rate must be a number of samples per second, not {sample_rate!r}.")
    if float(sample_rate) != int(sample_rate) or not MIN_RATE <= int(sample_rate) <= MAX_RATE:
        raise AudioError(
            f"A sample rate of {sample_rate} Hz is not supported: send audio at {MIN_RATE:,} to "
            f"{MAX_RATE:,} Hz (16,000 or 48,000 are usual)."
        )
    rate = int(sample_rate)
    x = np.asarray(samples)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise AudioError(f"The audio must be mono: one channel of samples, got an array of shape {x.shape}.")
    if x.size == 0:
        raise AudioError("The audio chunk is empty; push at least one sample.")
    if x.size > MAX_CHUNK_S * rate:
        raise AudioError(
            f"The chunk lasts {x.size / rate:.0f} seconds; one push takes at most {MAX_CHUNK_S:.0f} s. "
            "Push long speech in chunks of a few seconds."
        )
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0, rate
    if x.dtype.kind != "f":
        raise AudioError(f"Audio samples must be int16 or float32, not {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise AudioError("The audio chunk contains invalid samples (NaN or infinity); nothing of it was queued.")
    return np.clip(x, -1.0, 1.0), rate


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16 (an int16 chunk comes back exactly)."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _front_end() -> tuple[np.ndarray, np.ndarray]:
    """The model front end's STFT window (800,) and mel basis (80, 401), cached by :mod:`lipsync.features`."""
    return features.window(), features.mel_basis()


def mel_window(segment: np.ndarray) -> np.ndarray:
    """(80, 16) mel window of a 4000-sample segment that starts 600 samples before the window.

    The 200 samples ahead of the first STFT frame give pre-emphasis its history, so
    the window equals the offline spectrogram's columns for the same timeline.
    Only the 16 columns used are computed: column ``3 + k`` of the segment's
    spectrogram is centred on sample ``600 + 200 k`` and reaches 400 either side, so
    none needs the edge padding, and the result is ``features.melspectrogram(segment)[:, 3:19]``
    (tested; bit for bit where the BLAS library sums the mel product in the same order for 16
    columns as for all, within float32 rounding elsewhere) at a small share of its cost.
    """
    f = features
    window, basis = _front_end()
    wav = np.asarray(segment, np.float64)
    first = 3 * f.HOP - f.N_FFT // 2  # the first used STFT frame's first sample (200)
    x = wav[first - 1 :]
    emphasised = x[1:] - f.PREEMPHASIS * x[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(emphasised, f.N_FFT)[:: f.HOP][: f.MEL_STEP]
    spec = np.abs(np.fft.rfft(frames * window, n=f.N_FFT, axis=1)).T.astype(np.float32)
    db = 20.0 * np.log10(np.maximum(1e-5, basis @ spec)) - f.REF_LEVEL_DB
    norm = 2 * f.MAX_ABS * (db - f.MIN_LEVEL_DB) / (-f.MIN_LEVEL_DB) - f.MAX_ABS
    return np.clip(norm, -f.MAX_ABS, f.MAX_ABS).astype(np.float32)


def silent_mels(n: int = 1) -> np.ndarray:
    """(n, 80, 16) mel windows of silence: what the mouth at rest is predicted from."""
    return np.full((n, features.MEL_BANDS, features.MEL_STEP), SILENT, np.float32)
