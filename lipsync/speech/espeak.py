"""The espeak-ng engine: formant synthesis, always there and offline.

The text goes to espeak-ng in a file (``-f``), never on its command line; the
voice name comes from the catalogue, never from the user.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import VoiceError
from ..proc import run

__all__ = ["espeak_exe", "espeak_chunks", "ESPEAK_SPEED_WPM", "ESPEAK_TIMEOUT_S"]

ESPEAK_SPEED_WPM = 160
ESPEAK_TIMEOUT_S = 60.0


def espeak_exe() -> str | None:
    """The espeak-ng program (``$LIPSYNC_ESPEAK``, else on PATH), or None."""
    return os.environ.get("LIPSYNC_ESPEAK") or shutil.which("espeak-ng")


def espeak_chunks(voice: str, chunks: list[tuple[str, float]]) -> tuple[list[np.ndarray], int]:
    """One espeak-ng run per chunk with the espeak-ng ``voice``: (mono float32 waves, sample rate)."""
    import soundfile as sf

    exe = espeak_exe()
    if exe is None:
        raise VoiceError("espeak-ng is not installed (apt-get install espeak-ng, brew install espeak-ng).")
    work = Path(tempfile.mkdtemp(prefix="lipsync-tts-"))
    try:
        wavs, rate = [], 22050
        for i, (text, _pause) in enumerate(chunks):
            txt, wav = work / f"{i}.txt", work / f"{i}.wav"
            txt.write_text(text, encoding="utf-8")
            # -b 1: the file is UTF-8
            args = [exe, "-b", "1", "-v", voice, "-s", str(ESPEAK_SPEED_WPM)]
            args += ["-w", str(wav), "-f", str(txt)]
            run(args, timeout=ESPEAK_TIMEOUT_S, what="espeak-ng", error=VoiceError)
            try:
                data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
            except Exception as e:  # noqa: BLE001 - empty or truncated output
                raise VoiceError(f"espeak-ng wrote no usable audio ({e}).") from None
            wavs.append(data.mean(axis=1))
        return wavs, int(rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
