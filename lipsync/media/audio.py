"""Decoding untrusted audio files (ffmpeg) and resampling.

:class:`Speech` is a mono soundtrack at its own sample rate; :func:`load_audio`
decodes an audio file (or a video's sound) into samples, hardened like the
video door (:mod:`lipsync.media.video`): container sniffed from the first
bytes and forced, ``file`` protocol only, allow-listed decoders, size,
duration and time limits.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AudioError
from ..proc import ffmpeg_exe, run
from .files import check_input_file
from .sniff import input_args, sniff_as

__all__ = ["Speech", "Phrase", "load_audio", "resample", "DECODE_TIMEOUT_S", "ALLOWED_DECODERS", "AUDIO_CONTAINERS"]

log = logging.getLogger("lipsync")

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


#: Longest an audio decode may take before ffmpeg is stopped (with its process group).
DECODE_TIMEOUT_S = 120.0
#: Longest audio decoded when the caller sets no limit.
MAX_AUDIO_SECONDS = 3600.0
#: Highest sample rate accepted (studio recordings go to 192 kHz).
MAX_SAMPLE_RATE = 192_000
#: Containers accepted, recognised from the file's first bytes (see :mod:`lipsync.media.sniff`):
#: audio files, and videos whose sound is used.
AUDIO_CONTAINERS = ("wav", "mp3", "aac", "mp4", "ogg", "flac", "matroska", "aiff", "avi")
#: ffmpeg decoders allowed: PCM and the codecs recorders, phones, browsers and editors write.
ALLOWED_DECODERS = (
    "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le", "pcm_u8",
    "pcm_s16be", "pcm_s24be", "pcm_s32be", "pcm_f32be", "pcm_f64be", "pcm_alaw", "pcm_mulaw",
    "adpcm_ima_wav", "adpcm_ms",
    "mp3float", "mp3", "mp2float", "mp2", "aac", "aac_fixed", "alac",
    "vorbis", "libvorbis", "opus", "libopus", "flac", "ac3", "ac3_fixed", "eac3",
)
_HELP = "Use a wav, mp3, m4a, ogg, opus, flac or webm file with speech in it."
#: picture and video decoders ffmpeg tries on cover art and video tracks while probing (refusing them is harmless)
_NOT_SOUND = ("mjpeg", "png", "bmp", "gif", "webp", "tiff", "h264", "hevc", "vp8", "vp9", "av1", "libdav1d",
             "mpeg4", "prores")


def load_audio(
    path: str | Path,
    sample_rate: int | None = SAMPLE_RATE,
    *,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
) -> tuple[np.ndarray, int]:
    """Decode an untrusted audio file (wav, mp3, m4a, ogg, flac, webm...) to mono float32.

    The container is recognised from the file's first bytes, never its name;
    ffmpeg then opens the file with that demuxer forced, the ``file``
    protocol only and :data:`ALLOWED_DECODERS`, so a playlist or a list of
    files named ``.wav`` never reaches a demuxer that could open other files
    or the network. The decode runs under a time limit and in its own
    process group, killed whole if it overruns; its output is bounded by the
    duration limit.

    Args:
        path: the file.
        sample_rate: resample to this rate; ``None`` keeps the file's own rate.
        max_seconds: refuse audio longer than this (decoding stops just past it);
            ``None`` means :data:`MAX_AUDIO_SECONDS`.
        max_bytes: refuse files larger than this before decoding.

    Returns:
        ``(samples, rate)``: samples is a 1-D float32 array in [-1, 1].

    Raises:
        AudioError: missing, empty, too large, too long, not an accepted
            container or codec, or undecodable file.
    """
    path = check_input_file(
        path, "audio", AudioError, max_bytes=max_bytes, too_large_hint="Use a shorter or more compressed recording."
    )
    container = sniff_as(
        path, AUDIO_CONTAINERS, AudioError, kind="audio", what="audio", a_kind="an audio file", help=_HELP
    )
    limit = float(max_seconds) if max_seconds else MAX_AUDIO_SECONDS
    out_rate = sample_rate or MAX_SAMPLE_RATE
    args = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-codec_whitelist", ",".join(ALLOWED_DECODERS), *input_args(path, container),
        "-t", f"{limit + 0.5:.3f}", "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1",
        *(["-ar", str(sample_rate)] if sample_rate else []),
        # the output never exceeds the duration limit at the highest accepted rate
        "-fs", str(int((limit + 1.0) * out_rate * 4) + 65536),
        "-f", "wav", "-acodec", "pcm_f32le", "-rf64", "never", "pipe:1",
    ]
    try:
        raw = run(args, timeout=DECODE_TIMEOUT_S, what="ffmpeg (audio decode)", error=AudioError)
    except AudioError as e:
        log.info("decoding %s failed: %s", path.name, e)
        raise AudioError(_decode_failure(path.name, str(e))) from None
    rate, wav = _parse_wav_f32(raw)
    if wav.size == 0:
        raise AudioError(f"{path.name} holds no decodable audio. {_HELP}")
    if rate > MAX_SAMPLE_RATE:
        raise AudioError(
            f"{path.name} is sampled at {rate} Hz; the limit is {MAX_SAMPLE_RATE} Hz. Use an ordinary recording."
        )
    if wav.size > limit * rate + 1:
        raise AudioError(f"The audio lasts more than {limit:g} seconds, the limit. Use a shorter recording.")
    return np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0), rate


def _decode_failure(name: str, detail: str) -> str:
    """The user's message for a failed decode (ffmpeg's own words go to the log)."""
    if "did not finish within" in detail:
        return f"Decoding {name} took too long and was stopped; the file may be damaged. {_HELP}"
    if "matches no streams" in detail:
        return f"{name} has no sound track. {_HELP}"
    refused = [c for c in re.findall(r"Codec \((\w+)\) not on whitelist", detail) if c not in _NOT_SOUND]
    if refused:
        return f"{name} uses the {refused[0]} audio codec, which is not accepted. {_HELP}"
    return f"{name} could not be decoded as audio; it may be damaged or incomplete. {_HELP}"


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
