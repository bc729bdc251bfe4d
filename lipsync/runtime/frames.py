"""Which frames the network runs on, and the frames in between: the key-frame planner.

Pure numpy, used by :meth:`lipsync.runtime.generator.Generator.predict` for any
face source (a still photo or a crop per video frame).

With ``step`` > 1 the network runs on every ``step``-th frame of each run of
*active* frames (and on the run's last), and the frames between are blended
linearly from the two keys around them. Inactive frames (no face, or a pause
in a video) get no output of their own: their entries are zeros, which the
compositor never shows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..face import FACE_SIZE

__all__ = ["key_frames", "KeyFrames", "BLOCK"]

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


class KeyFrames:
    """The outputs of key frames in, every frame out, in order and in small blocks.

    Feed the outputs of consecutive slices of :attr:`keys` with :meth:`add`; each
    call yields the frames up to the last key given, then :meth:`rest` yields the
    frames after the last key (inactive ones). Only the keys a later frame still
    needs are kept.

    Args:
        active: (N,) bool: frames that get an output.
        step: run the network on every ``step``-th active frame (see :func:`key_frames`).
    """

    def __init__(self, active: np.ndarray, step: int = 1):
        self.active = np.asarray(active, bool)
        self.n = len(self.active)
        self.keys = key_frames(self.active, max(1, int(step)))
        self._known: dict[int, np.ndarray] = {}
        self._emitted = 0

    def add(self, idx: np.ndarray, outputs: np.ndarray) -> Iterator[np.ndarray]:
        """Outputs (B, 96, 96, 3) of key frames ``idx`` (the next keys, in order) -> blocks up to ``idx[-1]``."""
        self._known.update({int(i): o for i, o in zip(idx, outputs)})
        end = int(idx[-1]) + 1
        yield from self._blocks(self._emitted, end)
        self._emitted = end
        last = int(idx[-1])
        for k in [k for k in self._known if k < last]:
            del self._known[k]  # frames after ``last`` only need keys >= last

    def rest(self) -> Iterator[np.ndarray]:
        """The frames after the last key (none of them active)."""
        if self._emitted < self.n:
            yield from self._blocks(self._emitted, self.n)
            self._emitted = self.n

    def _blocks(self, start: int, end: int) -> Iterator[np.ndarray]:
        """Frames start..end-1: key outputs, blends between keys, zeros elsewhere."""
        keys, known = self.keys, self._known
        for b0 in range(start, end, BLOCK):
            b1 = min(end, b0 + BLOCK)
            block = np.zeros((b1 - b0, FACE_SIZE, FACE_SIZE, 3), np.float32)
            for f in range(b0, b1):
                if f in known:
                    block[f - b0] = known[f]
                elif self.active[f]:
                    r = int(np.searchsorted(keys, f))  # keys[r] > f: the next key (same run)
                    k0, k1 = int(keys[r - 1]), int(keys[r])
                    t = np.float32((f - k0) / (k1 - k0))
                    block[f - b0] = (1.0 - t) * known[k0] + t * known[k1]
            yield block
