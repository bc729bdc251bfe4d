"""The ``face`` enhancer: a face restorer (GFPGAN v1.4) redraws the face, the paste keeps its lower part.

For each speaking frame the enhancer composes what the plain paste would show
(the photo above, the stretched mouth below, through the paste's feathered
mask), resizes that face box to the restorer's 512x512, restores it and
resizes it back. The paste then blends the result in through the same mask, so
only the mouth and chin change; the eyes and the rest of the photo stay the
photo's own pixels. Silent frames are never restored (the plain stretch, as
``off``), and the restoration fades with the speech weight at a pause's edges.

The network is :class:`lipsync.models.gfpgan.GFPGAN` with the published
``GFPGANv1.4.pth`` (Apache-2.0, TencentARC), fetched through
:mod:`lipsync.weights` with a pinned sha256 where there is network (or
``LIPSYNC_GFPGAN=PATH``). On CUDA it runs under fp16 autocast. Where the
weights cannot be had, ``make_enhancer("face")`` falls back to ``fast`` and
:func:`status` says why (never random weights, never a crash).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from .detail import DetailTransfer, next_strength, stretch

__all__ = ["FaceRestorer", "load_restorer", "read_gfpgan", "status", "forget"]

log = logging.getLogger("lipsync")

RETRY_S = 300.0  #: a failed load is tried again after this long (the network may come back)

_lock = threading.Lock()
_loaded: dict[str, tuple[object | None, str, float]] = {}  # device -> (model or None, note, when)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def read_gfpgan(path: str | Path):
    """:func:`~lipsync.models.gfpgan.gfpgan_v14` with the weights at ``path`` (strict), in eval mode on the CPU.

    Raises:
        WeightsError: unreadable file, not plain tensors, or keys/shapes that are not GFPGAN v1.4's.
    """
    import torch

    from ..errors import WeightsError
    from ..models.gfpgan import gfpgan_v14

    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse an untrusted file
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path} is not a usable GFPGAN v1.4 weights file ({first}).") from None
    if isinstance(obj, dict):
        obj = obj.get("params_ema", obj.get("params", obj))
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not contain a GFPGAN state dict.")
    model = gfpgan_v14()
    try:
        model.load_state_dict(obj, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path} is not GFPGAN v1.4's layout ({str(e).splitlines()[0][:200]}).") from None
    model.eval().requires_grad_(False)
    return model


def load_restorer(device: str | None = None) -> tuple[object | None, str]:
    """The GFPGAN v1.4 module on ``device`` (default: CUDA when there is one), or None and why not.

    Loaded once per device and process; a failure is remembered for :data:`RETRY_S`.
    """
    from ..errors import WeightsError
    from ..weights import GFPGAN_V14, resolve_weights

    device = device or default_device()
    with _lock:
        hit = _loaded.get(device)
        if hit is not None and (hit[0] is not None or time.monotonic() - hit[2] < RETRY_S):
            return hit[0], hit[1]
        try:
            model = read_gfpgan(resolve_weights(GFPGAN_V14)).to(device)
            note = f"GFPGAN v1.4 on {device}" + (" (fp16)" if device.startswith("cuda") else "")
        except WeightsError as e:
            model, note = None, str(e)
        except (RuntimeError, OSError) as e:  # out of memory, a broken device
            model, note = None, f"the restorer could not be placed on {device} ({str(e).splitlines()[0][:160]})"
        if model is None:
            log.warning("enhance=face: falling back to fast: %s", note)
        _loaded[device] = (model, note, time.monotonic())
        return model, note


def status(device: str | None = None) -> str:
    """One line for :class:`~lipsync.Result` about the last ``face`` request on ``device``."""
    hit = _loaded.get(device or default_device())
    if hit is None:
        return "face: the GFPGAN v1.4 restorer on the mouth of speaking frames (not loaded yet)"
    model, note, _ = hit
    if model is None:
        return f"fast (face asked for, but the restorer is not available: {note})"
    return f"face: {note}, on the mouth region of speaking frames"


def forget() -> None:
    """Drop the loaded restorers (tests; frees the memory)."""
    with _lock:
        _loaded.clear()


class FaceRestorer:
    """The ``face`` enhancer: callable ``(pred (96, 96, 3) uint8 RGB, region (h, w, 3) uint8) -> (h, w, 3) uint8``.

    Args:
        model: a :class:`~lipsync.models.gfpgan.GFPGAN` (any ``out_size``), already on its device.
        weights: optional (N,) speech weight per frame in [0, 1], in call order: 0 leaves the
            frame as the plain stretch (the network does not run), values between fade.
        half: fp16 autocast (default: on CUDA).
    """

    def __init__(self, model, weights: np.ndarray | None = None, *, half: bool | None = None):
        import torch

        self.model = model
        self.device = next(model.parameters()).device
        self.half = self.device.type == "cuda" if half is None else bool(half)
        self.size = int(model.out_size)
        self.weights = None if weights is None else np.clip(np.asarray(weights, np.float32), 0.0, 1.0)
        self.frame = 0  #: frames called for so far (:func:`~.detail.next_strength` counts them)
        self._torch = torch

    def restore(self, face: np.ndarray) -> np.ndarray:
        """One face box (h, w, 3) uint8 RGB through the restorer, back at (h, w, 3) uint8."""
        import cv2

        torch = self._torch
        h, w = face.shape[:2]
        s = self.size
        square = cv2.resize(face, (s, s), interpolation=cv2.INTER_AREA if max(h, w) > s else cv2.INTER_CUBIC)
        x = torch.from_numpy(np.ascontiguousarray(square)).to(self.device).permute(2, 0, 1)[None].float()
        x = x / 127.5 - 1.0
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
            y = self.model(x)
        y = ((y.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()
        return cv2.resize(y, (w, h), interpolation=cv2.INTER_AREA if s > max(h, w) else cv2.INTER_CUBIC)

    def __call__(self, pred: np.ndarray, region: np.ndarray) -> np.ndarray:
        from ..blend import feather_mask

        h, w = region.shape[:2]
        mouth = stretch(pred, h, w)
        strength = next_strength(self)
        if strength <= 0.0:
            return mouth
        r = region.astype(np.float32)
        face = np.clip(r + feather_mask(h, w) * (mouth.astype(np.float32) - r) + 0.5, 0, 255).astype(np.uint8)
        restored = self.restore(face)
        if strength >= 1.0:
            return restored
        m = mouth.astype(np.float32)
        return np.clip(m + strength * (restored.astype(np.float32) - m) + 0.5, 0, 255).astype(np.uint8)


def make_face_enhancer(weights: np.ndarray | None, still: bool, device: str | None = None):
    """(enhancer, note): the restorer, or the ``fast`` enhancer when its weights are not available."""
    model, note = load_restorer(device)
    if model is None:
        return DetailTransfer(weights, still=still), status(device)
    if next(model.parameters()).device.type == "cpu":
        log.info("enhance=face runs on the CPU: about a second per frame at 2 cores; fast is the CPU mode")
    return FaceRestorer(model, weights), status(device)
