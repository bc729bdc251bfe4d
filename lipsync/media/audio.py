"""Decoding untrusted audio files (ffmpeg) and resampling.

:class:`Speech` is a mono soundtrack at its own sample rate; :func:`load_audio`
decodes any file ffmpeg reads into one, within size and duration limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AudioError
from ..proc import ffmpeg_exe, run
from .files import check_input_file

__all__ = ["Speech", "Phrase", "load_audio", "resample", "DECODE_TIMEOUT_S"]

SAMPLE_RATE = 16_000  #: the model's rate, the default resampling target


@dataclass(frozen=True)
class Phrase:
    """Words spoken in a soundtrack, and when: ``text`` is heard from ``start_s`` to ``end_s``."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Speech:
    """A mono soundtrack at its own sample rate.

    ``phrases`` says which words are heard when (sentences, or clauses of long
    ones), in time order; speech synthesised from a text has them, a decoded
    recording has none. They are what captions are made from.
    """

    samples: np.ndarray  #: (n,) float32 in [-1, 1]
    sample_rate: int
    phrases: tuple[Phrase, ...] = field(default=(), compare=False)

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
    path = check_input_file(
        path, "audio", AudioError, max_bytes=max_bytes, too_large_hint="Use a shorter or more compressed recording."
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
