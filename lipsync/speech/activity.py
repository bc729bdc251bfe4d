"""Speech activity: the one silence detector, and what it tells the other stages.

Silence is found from the RMS level of 20 ms frames: a frame is silent when it
is quieter than :data:`SILENCE_FLOOR_DB` dBFS, or more than
:data:`SILENCE_BELOW_PEAK_DB` under the loudest frame of the clip. Everything
else here is built on :func:`silent_frames`:

* :func:`active_range` and :func:`find_pauses` serve speech clean-up and
  length fitting (:mod:`lipsync.speech.post`);
* :func:`speech_weights` tells the pipeline how much each video frame speaks,
  so long pauses show the face at rest instead of running the network;
* :func:`activity_envelope` gives head motion a smooth loudness curve.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LEVEL_FRAME_S", "SILENCE_FLOOR_DB", "SILENCE_BELOW_PEAK_DB", "MIN_PAUSE_S",
    "frame_levels", "silent_frames", "active_range", "find_pauses", "speech_weights",
]

LEVEL_FRAME_S = 0.02  #: frame length of the level analysis
SILENCE_FLOOR_DB = -50.0  #: frames quieter than this (dBFS RMS) are silent...
SILENCE_BELOW_PEAK_DB = 35.0  #: ...and so are frames this far below the loudest frame
MIN_PAUSE_S = 0.12  #: shortest silence that counts as a pause in speech clean-up
REST_PAUSE_S = 0.3  #: shortest pause in which the face rests (the network is skipped)
WINDOW_S = 0.2  #: audio the model hears per video frame (16 mel columns)
REST_FADE_FRAMES = 2  #: frames over which the mouth settles into / leaves a rest


def frame_levels(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """RMS level (dBFS) of each whole 20 ms frame, and the frame length in samples."""
    n = max(1, int(round(LEVEL_FRAME_S * sample_rate)))
    x = np.asarray(samples, np.float64).reshape(-1)
    frames = len(x) // n
    if frames == 0:
        return np.zeros(0, np.float64), n
    energy = np.mean(x[: frames * n].reshape(frames, n) ** 2, axis=1)
    return 10.0 * np.log10(energy + 1e-12), n


def silent_frames(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """(silent flag per 20 ms frame, frame length in samples)."""
    level, n = frame_levels(samples, sample_rate)
    if level.size == 0:
        return np.ones(0, bool), n
    threshold = max(SILENCE_FLOOR_DB, float(level.max()) - SILENCE_BELOW_PEAK_DB)
    return level < threshold, n


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end)] of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def active_range(samples: np.ndarray, sample_rate: int) -> tuple[int, int] | None:
    """``(start, end)`` sample indices from the first to the last sound, or None if all silent."""
    silent, n = silent_frames(samples, sample_rate)
    loud = np.flatnonzero(~silent)
    if loud.size == 0:
        return None
    return int(loud[0] * n), int(min(len(samples), (loud[-1] + 1) * n))


def find_pauses(samples: np.ndarray, sample_rate: int, min_pause_s: float = MIN_PAUSE_S) -> list[tuple[int, int]]:
    """Silences of at least ``min_pause_s`` that come after some sound: [(start, end)] in samples.

    Leading silence is not a pause; trailing silence is (it ends at the last sample).
    """
    silent, n = silent_frames(samples, sample_rate)
    loud = np.flatnonzero(~silent)
    if loud.size == 0:
        return []
    min_run = max(1, int(np.ceil(min_pause_s * sample_rate / n)))
    total = len(silent)
    out = []
    for a, b in _runs(silent):
        if a < loud[0] or b - a < min_run:
            continue
        out.append((a * n, len(samples) if b == total else b * n))
    return out


def speech_weights(
    wav: np.ndarray,
    sample_rate: int,
    n_frames: int,
    fps: float,
    *,
    min_pause_s: float = REST_PAUSE_S,
    fade_frames: int = REST_FADE_FRAMES,
) -> np.ndarray:
    """How much each video frame speaks: 1 while speaking, 0 in long pauses.

    A video frame is silent when every 20 ms level frame of the 0.2 s the model
    hears for it (from the frame's start) is silent; only silences lasting at least
    ``min_pause_s`` count, so short gaps between words keep moving. Silent frames
    within ``fade_frames`` of speech get a linear ramp so the mouth settles
    rather than snaps.

    Args:
        wav: mono float audio.
        sample_rate: its rate.
        n_frames: video frames.
        fps: video frame rate.

    Returns:
        (n_frames,) float32 in [0, 1].
    """
    silent, n = silent_frames(wav, sample_rate)
    if silent.size == 0:
        return np.ones(n_frames, np.float32)
    # the model hears 0.2 s from each frame's start (16 mel columns): that span is
    # silent when all its level frames are (prefix sums of the speaking flags)
    csum = np.concatenate([[0], np.cumsum(~silent)])
    start = np.arange(n_frames) / fps * sample_rate / n
    a = np.clip(np.floor(start).astype(np.int64), 0, len(silent))
    b = np.clip(np.ceil(start + WINDOW_S * sample_rate / n).astype(np.int64), 0, len(silent))
    b = np.maximum(b, np.minimum(a + 1, len(silent)))
    quiet = (csum[b] - csum[a]) == 0
    min_run = max(1, int(round(min_pause_s * fps)))
    for s, e in _runs(quiet):
        if e - s < min_run:
            quiet[s:e] = False
    speaking = ~quiet
    if not speaking.any():
        return np.zeros(n_frames, np.float32)
    idx = np.arange(n_frames)
    last = np.maximum.accumulate(np.where(speaking, idx, -(10**9)))
    nxt = np.minimum.accumulate(np.where(speaking, idx, 10**9)[::-1])[::-1]
    dist = np.minimum(idx - last, nxt - idx)
    return np.clip(1.0 - dist / (fade_frames + 1.0), 0.0, 1.0).astype(np.float32)


def activity_envelope(wav: np.ndarray, sample_rate: int, n_frames: int, fps: float) -> np.ndarray:
    """Loudness per video frame in [0, 1] (0 at the silence threshold, 1 at the loudest frame)."""
    level, n = frame_levels(wav, sample_rate)
    if level.size == 0:
        return np.zeros(n_frames, np.float32)
    top = float(level.max())
    floor = max(SILENCE_FLOOR_DB, top - SILENCE_BELOW_PEAK_DB)
    norm = np.clip((level - floor) / max(top - floor, 1e-6), 0.0, 1.0)
    t = np.clip(((np.arange(n_frames) + 0.5) / fps * sample_rate / n).astype(np.int64), 0, len(norm) - 1)
    return norm[t].astype(np.float32)
