"""The mouth's restoration stage: sharper lower face within a per-frame budget.

Wav2Lip draws a 96x96 face and the paste stretches its lower half to the real
face's size, so the mouth region is much softer than the rest of the photo.
The modes (chosen by measurement, see ``benchmarks/restore.py`` and the
README's "Look" section):

* ``off``: the plain stretched crop (as before);
* ``fast``: :class:`DetailTransfer` -- the photo's own fine detail is added back
  wherever the generated mouth still matches the photo at the model's
  resolution (skin, stubble, chin); where the mouth changed (lips, teeth) the
  crop stays as drawn. A few milliseconds per frame on a CPU.
* ``face``: :class:`~lipsync.enhance.face.FaceRestorer` -- GFPGAN v1.4 redraws the
  face box and the paste keeps its mouth region, on speaking frames; for a GPU
  (about a second per frame on 2 CPU cores). Its weights are downloaded where
  there is network; without them it falls back to ``fast`` and says why.

:func:`make_enhancer` builds the callable the paste uses.
"""

from __future__ import annotations

import numpy as np

from ..options import ENHANCE_MODES
from .detail import DetailTransfer

__all__ = ["ENHANCE_MODES", "DetailTransfer", "describe", "make_enhancer"]


def make_enhancer(
    mode: str, weights: np.ndarray | None = None, *, still: bool = True, device: str | None = None
):
    """The paste's enhancer for ``mode``, and a line saying what runs (or why nothing does).

    Args:
        mode: one of :data:`ENHANCE_MODES`.
        weights: optional (N,) speech weight per frame in [0, 1], in paste order: the
            enhancement follows it (none in pauses, a cross-fade at their edges).
        still: the face region is one photo for every frame (False: a video).
        device: where ``face`` runs (default: CUDA when there is one, else the CPU).

    Returns:
        (enhancer or None, description).
    """
    if mode == "off":
        return None, describe(mode)
    if mode == "fast":
        return DetailTransfer(weights, still=still), describe(mode)
    if mode == "face":
        from .face import make_face_enhancer

        return make_face_enhancer(weights, still, device)
    raise ValueError(f"unknown enhance mode {mode!r}; expected one of {ENHANCE_MODES}")


def describe(mode: str) -> str:
    """One line for :class:`~lipsync.Result`: what the mode did."""
    if mode == "off":
        return "off: the plain stretched crop (as asked)"
    if mode == "face":
        from .face import status

        return status()
    return "fast: the photo's detail added back where the skin did not change, on speaking frames"
