"""Mouth crops for a moving face: a different face crop on every frame (a driving video).

The still-photo shortcut (the face encoder once per clip, see
:mod:`lipsync.models.still`) does not apply: here each forward pass takes a
batch of different face crops with their mel windows, the plain
``model(mel, faces)``. Frames that are not *active* (no face found, or a
pause in the speech) skip the network; the compositor keeps the video's own
pixels there, so their entries are never shown.

With ``step`` > 1 the network runs on every ``step``-th active frame of each
run of active frames (and on the run's first and last), and the frames between
are blended linearly, as :meth:`~lipsync.runtime.generator.Generator.predict`
does for a photo.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

from ..face import FACE_SIZE, model_input

__all__ = ["predict_frames", "key_frames"]

log = logging.getLogger("lipsync")

#: frames per yielded block at most (bounds memory through long pauses)
BLOCK = 32


def key_frames(active: np.ndarray, step: int) -> np.ndarray:
    """Frames the network runs on: in each run of active frames, every ``step``-th and the last."""
    active = np.asarray(active, bool)
    idx = np.flatnonzero(active)
    if idx.size == 0 or step <= 1:
        return idx
    starts = idx[np.r_[True, np.diff(idx) > 1]]
    ends = idx[np.r_[np.diff(idx) > 1, True]]
    run_start = starts[np.searchsorted(starts, idx, side="right") - 1]
    keep = ((idx - run_start) % step == 0) | np.isin(idx, ends)
    return idx[keep]


def _forward_faces(gen, faces: np.ndarray, mels: np.ndarray, batch) -> np.ndarray:
    """(B, 6, 96, 96) face inputs + (B, 80, 16) mels -> (B, 96, 96, 3) float32 BGR; halves the batch on OOM."""
    from .generator import _Prepared

    return gen.chunked(
        len(mels), lambda i, b: gen._forward(_Prepared(gen._tensor(faces[i : i + b]), None), mels[i : i + b]), batch
    )


def predict_frames(
    gen,
    face_at: Callable[[int], np.ndarray | None],
    mels: np.ndarray,
    active: np.ndarray,
    *,
    step: int = 1,
    batch_size: int | None = None,
) -> Iterator[np.ndarray]:
    """Mouth crops for every frame of a moving face, block by block, in frame order.

    Args:
        gen: the :class:`~lipsync.runtime.generator.Generator`.
        face_at: frame index -> that frame's (96, 96, 3) uint8 BGR face crop; called
            only for frames the network runs on, in increasing order.
        mels: (N, 80, 16) float32 mel windows, one per frame.
        active: (N,) bool: frames that get a mouth (a face and speech).
        step: run the network on every ``step``-th active frame and blend between.
        batch_size: frames per forward (default: the generator's); halved on OOM.

    Yields:
        (B, 96, 96, 3) float32 BGR in [0, 1] covering frames 0..N-1 in order;
        entries of inactive frames are zeros (never shown).
    """
    n = len(mels)
    active = np.asarray(active, bool)
    if active.shape != (n,):
        raise ValueError(f"active must have one entry per mel window ({n}), got {active.shape}")
    keys = key_frames(active, max(1, int(step)))
    from .generator import _Batch

    batch = _Batch(int(batch_size or gen.batch_size))
    known: dict[int, np.ndarray] = {}  # key -> output, kept until no later frame needs it
    emitted = 0
    j = 0
    while j < len(keys):
        idx = keys[j : j + batch.size]
        j += len(idx)
        crops = []
        for i in idx:
            face = face_at(int(i))
            if face is None:
                raise ValueError(f"frame {i} is active but has no face crop")
            crops.append(model_input(face))
        out = _forward_faces(gen, np.concatenate(crops), mels[idx], batch)
        known.update({int(i): o for i, o in zip(idx, out)})
        end = int(idx[-1]) + 1
        yield from _blocks(emitted, end, keys, known, active)
        emitted = end
        last = int(idx[-1])
        for k in [k for k in known if k < last]:
            del known[k]  # frames after ``last`` only need keys >= last
    if emitted < n:
        yield from _blocks(emitted, n, keys, known, active)


def _blocks(start: int, end: int, keys: np.ndarray, known: dict[int, np.ndarray], active: np.ndarray):
    """Frames start..end-1: key outputs, blends between keys, zeros elsewhere."""
    for b0 in range(start, end, BLOCK):
        b1 = min(end, b0 + BLOCK)
        block = np.zeros((b1 - b0, FACE_SIZE, FACE_SIZE, 3), np.float32)
        for f in range(b0, b1):
            if f in known:
                block[f - b0] = known[f]
            elif active[f]:
                r = int(np.searchsorted(keys, f))  # keys[r] > f: the next key (same run)
                k0, k1 = int(keys[r - 1]), int(keys[r])
                t = (f - k0) / (k1 - k0)
                block[f - b0] = (1.0 - t) * known[k0] + t * known[k1]
        yield block
