"""The mouth's restoration stage: sharper lower face within a per-frame budget.

Wav2Lip draws a 96x96 face and the paste stretches its lower half to the real
face's size, so the mouth region is much softer than the rest of the photo.
The modes (chosen by measurement, see ``benchmarks/restore.py`` and the
README's "Look" section):

* ``auto`` (the default): ``face`` where the engine runs on a CUDA GPU and the
  restorer's weights can be had (a local file, the Hub cache, or a download
  where there is network), else ``fast``; :func:`choose` says which and why;
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

__all__ = ["ENHANCE_MODES", "DetailTransfer", "choose", "describe", "make_enhancer"]


def _device_type(device) -> str:
    """"cuda" or "cpu" for a device name (``auto``/None: CUDA when there is one)."""
    name = "" if device is None else str(device).strip().lower()
    if name in ("", "auto"):
        from .face import default_device

        name = default_device()
    return "cuda" if name.startswith("cuda") else "cpu"


def choose(device=None) -> tuple[str, str]:
    """What ``auto`` runs on ``device`` (the engine's: ``auto``, ``cpu``, ``cuda``...): (mode, why).

    ``face`` on a CUDA GPU whose restorer weights are available (a local file, the
    Hub cache, or a download that could start now); ``fast`` elsewhere.
    """
    if _device_type(device) != "cuda":
        return "fast", "no CUDA GPU: the face restorer takes about a second per frame on a CPU"
    from ..weights import GFPGAN_V14, unavailable_reason

    why_not = unavailable_reason(GFPGAN_V14)
    if why_not:
        return "fast", f"on a GPU, but the face restorer's weights cannot be had: {why_not}"
    return "face", "a CUDA GPU with the face restorer's weights"


def make_enhancer(
    mode: str, weights: np.ndarray | None = None, *, still: bool = True, device: str | None = None
):
    """The paste's enhancer for ``mode``, and a line saying what runs (or why nothing does).

    Args:
        mode: one of :data:`ENHANCE_MODES` (``auto``: see :func:`choose`).
        weights: optional (N,) speech weight per frame in [0, 1], in paste order: the
            enhancement follows it (none in pauses, a cross-fade at their edges).
        still: the face region is one photo for every frame (False: a video).
        device: the engine's device: where ``face`` runs, and what ``auto`` chooses by
            (default: CUDA when there is one, else the CPU).

    Returns:
        (enhancer or None, description).
    """
    if mode == "auto":
        picked, why = choose(device)
        enhancer, note = make_enhancer(picked, weights, still=still, device=device)
        return enhancer, f"{note} (auto: {why})"
    if mode == "off":
        return None, describe(mode)
    if mode == "fast":
        return DetailTransfer(weights, still=still), describe(mode)
    if mode == "face":
        from .face import make_face_enhancer

        return make_face_enhancer(weights, still, _restorer_device(device))
    raise ValueError(f"unknown enhance mode {mode!r}; expected one of {ENHANCE_MODES}")


def _restorer_device(device) -> str | None:
    """The torch device name for the restorer: None (CUDA when there is one) for ``auto``."""
    name = "" if device is None else str(device).strip().lower()
    return None if name in ("", "auto") else name


def describe(mode: str, device=None) -> str:
    """One line for :class:`~lipsync.Result`: what the mode did (``auto``: what it chooses on ``device``)."""
    if mode == "auto":
        picked, why = choose(device)
        return f"{describe(picked, device)} (auto: {why})"
    if mode == "off":
        return "off: the plain stretched crop (as asked)"
    if mode == "face":
        from .face import status

        return status(_restorer_device(device))
    return "fast: the photo's detail added back where the skin did not change, on speaking frames"
