"""Detail transfer: the photo's own high frequencies, added back where the skin did not change.

The model sees the face through a 96x96 crop (:func:`lipsync.face.face_crop`)
and its output is stretched back to the face box (bilinear, as the plain
paste; bicubic where the box is smaller than the crop both ways, which measured
3-4 dB better there). The photo's
region therefore splits into what survives that round trip, ``low``, and what
it loses, ``detail = photo - low``. For each frame:

* ``diff``: how far the stretched mouth is from ``low`` (grey levels, blurred over
  a few pixels so the choice does not speckle);
* ``keep = clip((HI - diff) / (HI - LO), 0, 1)``: 1 where the generated pixels match
  the photo at the model's resolution (the skin did not change), 0 where they
  moved (lips, teeth, the open mouth);
* ``out = mouth + strength * keep * detail``.

Nothing is invented: every added value is the photo's own detail at the same
place, and where the mouth changed nothing is added, so the lips stay as the
network drew them. Only the rows from :data:`TOP` down are touched (the paste's
mask is zero above them). Pure numpy/cv2. Measured in ``benchmarks/restore.py``
(a bicubic stretch measured sharper on the photos but passes more of the
network's frame-to-frame noise: more flicker than the plain paste, so bilinear).
"""

from __future__ import annotations

import numpy as np


def next_strength(enhancer) -> float:
    """The speech weight of the frame an enhancer is called for (1 without weights), counting the call.

    ``enhancer`` has ``weights`` ((N,) float32 in [0, 1], in paste order, or None) and a
    public frame counter ``frame`` (the calls so far); past the last weight the last one holds.
    """
    w = enhancer.weights
    if w is None or not len(w):
        return 1.0
    strength = float(w[min(enhancer.frame, len(w) - 1)])
    enhancer.frame += 1
    return strength

__all__ = ["HI", "LO", "MODEL_SIZE", "TOP", "DetailTransfer", "round_trip", "stretch"]

MODEL_SIZE = 96  #: the model's face crop side, pixels
LO, HI = 8.0, 24.0  #: grey-level differences: full transfer below LO, none above HI
TOP = 0.40  #: first row touched, as a share of the box height (the paste's mask starts at 0.42)
BLUR = 1.0 / 32  #: the difference is blurred over this share of the box width


def _interpolation(height: int, width: int, interpolation: int | None) -> int:
    import cv2

    if interpolation is not None:
        return interpolation
    return cv2.INTER_CUBIC if max(height, width) < MODEL_SIZE else cv2.INTER_LINEAR


def stretch(pred_rgb: np.ndarray, height: int, width: int, interpolation: int | None = None) -> np.ndarray:
    """The model's (96, 96, 3) uint8 crop resized to the box (uint8)."""
    import cv2

    return cv2.resize(np.ascontiguousarray(pred_rgb), (width, height),
                      interpolation=_interpolation(height, width, interpolation))


def round_trip(region: np.ndarray, interpolation: int | None = None) -> np.ndarray:
    """``region`` (h, w, 3) through the model's resolution and back, as the pipeline does it (float32)."""
    import cv2

    h, w = region.shape[:2]
    small = cv2.resize(np.ascontiguousarray(region), (MODEL_SIZE, MODEL_SIZE))
    return cv2.resize(small, (w, h), interpolation=_interpolation(h, w, interpolation)).astype(np.float32)


def _keep_table(strength: float) -> np.ndarray:
    """(1, 256) float32: the transfer's weight for each (blurred) grey-level difference."""
    d = np.arange(256, dtype=np.float32)
    return (np.clip((HI - d) / (HI - LO), 0.0, 1.0) * np.float32(strength)).astype(np.float32)[None, :]


class _Reference:
    """The photo region's detail and grey low band (rows from TOP down)."""

    def __init__(self, region: np.ndarray, interpolation: int | None):
        import cv2

        h = region.shape[0]
        self.shape = region.shape
        self.top = int(TOP * h)
        full = region.astype(np.float32)
        low = round_trip(region, interpolation)
        self.detail = np.ascontiguousarray(full[self.top :] - low[self.top :])
        grey = cv2.cvtColor(np.ascontiguousarray(low[self.top :]), cv2.COLOR_RGB2GRAY)
        self.grey = np.clip(grey + 0.5, 0, 255).astype(np.uint8)
        k = max(3, int(BLUR * region.shape[1]) | 1)
        self.ksize = (k, k)


class DetailTransfer:
    """The ``fast`` enhancer: callable ``(pred, region) -> mouth``.

    Args:
        weights: optional (N,) speech weight per frame in [0, 1], in call order
            (one call per output frame): the transfer is scaled by it, so silent
            frames are left exactly as the plain paste leaves them.
        still: the region is the same picture on every call (a photo): its reference
            is computed once. False (a video): computed from each call's region.
        interpolation: the cv2 resize used to stretch the crop (default: bilinear;
            bicubic for a box under 96 px both ways).

    Call with ``pred``: the model's (96, 96, 3) uint8 RGB crop, and ``region``: the
    photo's (h, w, 3) pixels under the box (uint8 or float32); returns the mouth
    stretched to (h, w, 3) uint8 RGB, detail added.
    """

    def __init__(
        self, weights: np.ndarray | None = None, *, still: bool = True, interpolation: int | None = None
    ):
        self.weights = None if weights is None else np.clip(np.asarray(weights, np.float32), 0.0, 1.0)
        self.still = still
        self.interpolation = interpolation
        self.frame = 0  #: frames called for so far (:func:`next_strength` counts them)
        self._ref: _Reference | None = None

    def reference(self, region: np.ndarray) -> _Reference:
        if self._ref is None or not self.still or self._ref.shape != region.shape:
            self._ref = _Reference(region, self.interpolation)
        return self._ref

    def __call__(self, pred: np.ndarray, region: np.ndarray) -> np.ndarray:
        mouth = stretch(pred, region.shape[0], region.shape[1], self.interpolation)
        strength = next_strength(self)
        if strength <= 0.0:
            return mouth
        return self.apply(mouth, region, strength)

    def apply(self, mouth: np.ndarray, region: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """The transfer onto an already stretched ``mouth`` (h, w, 3) uint8 (no frame counting)."""
        import cv2

        if mouth.shape != region.shape:
            raise ValueError(f"mouth {mouth.shape} and region {region.shape} differ")
        ref = self.reference(region)
        top = ref.top
        lower = np.ascontiguousarray(mouth[top:])
        grey = cv2.cvtColor(lower, cv2.COLOR_RGB2GRAY)
        diff = cv2.blur(cv2.absdiff(grey, ref.grey), ref.ksize)  # uint8 grey levels
        keep = cv2.LUT(diff, _keep_table(strength))  # float32 in [0, strength]
        added = cv2.multiply(ref.detail, cv2.cvtColor(keep, cv2.COLOR_GRAY2RGB))
        out = mouth.copy()
        out[top:] = cv2.add(lower, added, dtype=cv2.CV_8U)  # rounded and saturated
        return out
