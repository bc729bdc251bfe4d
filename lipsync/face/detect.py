"""Find the face in the still portrait and turn it into the model's 96x96 crop.

Detection runs once per request on the still image: S3FD (face-alignment's
detector, the one Wav2Lip used) when its weights can be had, else OpenCV's
frontal-face Haar cascade, which ships inside opencv-python. The detector that
ran is reported in the result.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError, NoFaceError, WeightsError

__all__ = [
    "FaceBox",
    "HaarDetector",
    "S3FDDetector",
    "make_detector",
    "find_face",
    "pad_box",
    "face_crop",
    "model_input",
    "FACE_SIZE",
    "DEFAULT_PADS",
]

log = logging.getLogger("lipsync")

FACE_SIZE = 96
DEFAULT_PADS = (0, 10, 0, 0)  # top, bottom, left, right, as the original inference


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in image pixels; rows y1:y2, columns x1:x2 (end exclusive)."""

    y1: int
    y2: int
    x1: int
    x2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.y1, self.y2, self.x1, self.x2)


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: offline, fast, less robust than S3FD."""

    name = "opencv-haar"

    def __init__(self) -> None:
        import cv2

        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():  # pragma: no cover - broken OpenCV install
            raise WeightsError(f"OpenCV's face cascade could not be loaded from {path}.")
        self._lock = threading.Lock()  # CascadeClassifier is not thread-safe

    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        """Faces as (x1, y1, x2, y2, score) in pixels."""
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = min(gray.shape[:2])
        with self._lock:
            rects, _, weights = self._cascade.detectMultiScale3(
                gray,
                scaleFactor=1.1,
                minNeighbors=5,
                minSize=(max(24, side // 12), max(24, side // 12)),
                outputRejectLevels=True,
            )
        out = []
        for (x, y, w, h), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            # the cascade's box stops at the lips' lower edge on many faces; Wav2Lip
            # needs the chin, so extend it down by a tenth of the box height
            out.append((int(x), int(y), int(x + w), int(y + h + h // 10), float(score)))
        return out


class S3FDDetector:
    """face-alignment's S3FD detector loaded from a local weights file."""

    name = "s3fd"

    def __init__(self, weights: str | Path, device: str = "cpu", threshold: float = 0.5):
        try:
            from face_alignment.detection.sfd.sfd_detector import SFDDetector
        except ImportError as e:  # pragma: no cover - a hard dependency
            raise WeightsError(f"face-alignment is not installed ({e}).") from None
        try:
            self._det = SFDDetector(device=str(device), path_to_detector=str(weights), filter_threshold=threshold)
        except Exception as e:  # noqa: BLE001 - any unusable file
            raise WeightsError(f"The S3FD weights at {weights} could not be loaded ({str(e)[:160]}).") from None
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        with self._lock:
            boxes = self._det.detect_from_image(np.ascontiguousarray(rgb))
        h, w = rgb.shape[:2]
        out = []
        for b in boxes:
            x1, y1, x2, y2, score = (float(v) for v in b[:5])
            x1, y1 = max(0, int(x1)), max(0, int(y1))
            x2, y2 = min(w, int(x2)), min(h, int(y2))
            if x2 - x1 >= 8 and y2 - y1 >= 8:
                out.append((x1, y1, x2, y2, score))
        return out


def make_detector(s3fd_weights: str | Path | None = None, device: str = "cpu", *, download: bool = True):
    """S3FD when its weights are given or can be fetched, else the Haar cascade.

    Args:
        s3fd_weights: a local ``s3fd-619a316812.pth``; ``None`` looks at
            ``$LIPSYNC_S3FD``, then the Hub cache, then downloads (if ``download``).
        device: torch device for S3FD.
    """
    import os

    from ..weights import S3FD, resolve_weights

    asked = s3fd_weights or os.environ.get(S3FD.env_var) or None
    if asked is not None:  # a file the user named must work: no silent fallback
        return S3FDDetector(resolve_weights(S3FD, asked), device=device)
    if not download:
        return HaarDetector()
    try:
        path = resolve_weights(S3FD)
        return S3FDDetector(path, device=device)
    except WeightsError as e:
        log.warning("S3FD face detector unavailable, using OpenCV's Haar cascade: %s", e)
        return HaarDetector()


def pad_box(rect: tuple[int, int, int, int], pads, shape) -> FaceBox:
    """Grow (x1, y1, x2, y2) by pads (top, bottom, left, right), clamped to the image."""
    top, bottom, left, right = (int(p) for p in pads)
    h, w = shape[:2]
    x1, y1, x2, y2 = (int(v) for v in rect[:4])
    box = FaceBox(max(0, y1 - top), min(h, y2 + bottom), max(0, x1 - left), min(w, x2 + right))
    if box.height < 8 or box.width < 8:
        raise ImageError(f"The face box {box.as_tuple()} is too small or outside the {w}x{h} image.")
    return box


def find_face(rgb: np.ndarray, detector, *, face_index: int = 0, pads=DEFAULT_PADS) -> FaceBox:
    """Detect faces and return the chosen one's padded box.

    Faces are ordered largest first; ``face_index`` 0 is the largest.

    Raises:
        NoFaceError: no face, or fewer faces than ``face_index + 1``.
    """
    faces = sorted(detector.detect(rgb), key=lambda f: (f[2] - f[0]) * (f[3] - f[1]), reverse=True)
    if not faces:
        raise NoFaceError()
    if not 0 <= face_index < len(faces):
        raise NoFaceError(
            f"Face number {face_index} was asked for, but the photo has {len(faces)} "
            f"face{'s' if len(faces) != 1 else ''} (numbered from 0, largest first)."
        )
    return pad_box(faces[face_index][:4], pads, rgb.shape)


def face_crop(rgb: np.ndarray, box: FaceBox) -> np.ndarray:
    """The box resized to 96x96, in BGR uint8 as the model was trained."""
    import cv2

    crop = rgb[box.y1 : box.y2, box.x1 : box.x2, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (FACE_SIZE, FACE_SIZE))


def model_input(crop_bgr: np.ndarray) -> np.ndarray:
    """(96, 96, 3) uint8 BGR -> (1, 6, 96, 96) float32: [lower half zeroed, full crop] / 255."""
    x = crop_bgr.astype(np.float32) / 255.0
    masked = x.copy()
    masked[FACE_SIZE // 2 :] = 0.0
    return np.concatenate([masked, x], axis=2).transpose(2, 0, 1)[None].copy()
