"""Inputs the int8 backend calibrates on and checks against: faces and mel windows.

They come from package data, ``int8_calibration.npz`` beside this file (made by
``scripts/make_int8_calibration.py``, which says how):

* faces: augmented 96x96 crops of the example portrait's face (public domain):
  the face box jittered in position and scale, mirrored, exposure, colour
  balance and gamma changed, sometimes blurred, greyed or noised, so that the
  recorded activation ranges are not those of one photo only;
* mel windows: 16-column windows of the model's mel spectrogram of espeak-ng
  speech in several voices and languages, with the pauses between sentences,
  plus the all-silent window the pipeline shows during pauses.

The calibration set and the held-out set share nothing: different sentences,
voices and languages, and faces drawn with a different random seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import features
from ..face import FACE_SIZE

__all__ = ["Batch", "calibration_batches", "heldout_batches", "augmented_face"]

DATA = Path(__file__).with_name("int8_calibration.npz")
SILENT_MEL = -4.0  # the normalised mel floor: digital silence (as the generator's)


@dataclass(frozen=True)
class Batch:
    """One face and the mel windows it speaks."""

    face_bgr: np.ndarray  #: (96, 96, 3) uint8
    mels: np.ndarray  #: (B, 80, 16) float32


@lru_cache(maxsize=1)
def _data() -> dict[str, np.ndarray]:
    with np.load(DATA) as d:
        return {k: d[k] for k in d.files}


def augmented_face(rng: np.random.Generator, *, plain: bool = False) -> np.ndarray:
    """A (96, 96, 3) uint8 BGR face crop; ``plain`` gives the unaltered crop."""
    import cv2

    d = _data()
    region = d["face"]
    y1, y2, x1, x2 = (float(v) for v in d["face_box"])
    h, w = y2 - y1, x2 - x1
    if not plain:
        scale = rng.uniform(0.92, 1.08)
        cy = (y1 + y2) / 2 + rng.uniform(-0.06, 0.06) * h
        cx = (x1 + x2) / 2 + rng.uniform(-0.06, 0.06) * w
        h, w = h * scale, w * scale * rng.uniform(0.95, 1.05)
        y1, x1 = cy - h / 2, cx - w / 2
    # an affine map from the box to 96x96 (the region has a margin, so jitter stays inside)
    m = np.array([[FACE_SIZE / w, 0, -x1 * FACE_SIZE / w], [0, FACE_SIZE / h, -y1 * FACE_SIZE / h]], np.float32)
    crop = cv2.warpAffine(region, m, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    if plain:
        return crop
    x = crop.astype(np.float32) / 255.0
    if rng.random() < 0.5:
        x = x[:, ::-1]
    if rng.random() < 0.15:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    x = x ** rng.uniform(0.8, 1.25)
    x = x * rng.uniform(0.75, 1.25) * rng.uniform(0.85, 1.15, size=3) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), rng.uniform(0.5, 1.2))
    x = x + rng.normal(0.0, rng.uniform(0.0, 4.0) / 255.0, x.shape)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _windows(mel: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` windows at random starts, the first replaced by digital silence."""
    starts = rng.integers(0, mel.shape[1] - features.MEL_STEP + 1, size=n)
    out = np.stack([mel[:, s : s + features.MEL_STEP] for s in starts]).astype(np.float32)
    out[0] = SILENT_MEL
    return out


def _batches(mel_key: str, seed: int, faces: int, per_face: int, plain_first: bool) -> list[Batch]:
    rng = np.random.default_rng(seed)
    mel = _data()[mel_key]
    return [
        Batch(augmented_face(rng, plain=plain_first and i == 0), _windows(mel, per_face, rng))
        for i in range(faces)
    ]


def calibration_batches(faces: int = 10, per_face: int = 8) -> list[Batch]:
    """What quantization ranges are set from: 10 faces x 8 windows (80) by default."""
    return _batches("mel_calibration", 0, faces, per_face, plain_first=True)


def heldout_batches(faces: int = 4, per_face: int = 8) -> list[Batch]:
    """What the quantized network is checked on: other faces, other speech (4 x 8 by default)."""
    return _batches("mel_heldout", 1, faces, per_face, plain_first=False)

