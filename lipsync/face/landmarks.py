"""Eyelid landmarks from MediaPipe's face-mesh model, run offline with OpenCV's DNN module.

The model is ``face_landmark.tflite`` (468 points, Apache-2.0) as it ships
inside the ``mediapipe==0.10.14`` wheel. Only that file is needed: the wheel is
installed without its dependencies (``pip install --no-deps mediapipe==0.10.14``,
see ``requirements-landmarks.txt``) and the file is read from the installed
package's data, without importing mediapipe. ``LIPSYNC_FACE_LANDMARKS=PATH``
points at a copy instead. Where neither has it (a Hugging Face Space installs
only ``requirements.txt``, which cannot say ``--no-deps``), the file is taken
from that same wheel downloaded from PyPI's file host, with the wheel's and the
file's sha256 and size pinned (:data:`lipsync.weights.FACE_LANDMARK`), and
cached; offline there are no blinks, and the reason says so. OpenCV's ``readNetFromTFLite`` runs it (measured
against ``ai-edge-litert``: the same points, 4.7 against 3.0 ms per face on
2 loaded cores, and no extra package), once per photo.

The face is cropped square around the face box, enlarged by
:data:`CROP_SCALE` as MediaPipe's own pipeline enlarges its detections, resized
to 192x192 RGB in [0, 1].
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detect import FaceBox

log = logging.getLogger("lipsync")

__all__ = ["Eye", "EyeLandmarks", "FaceMesh", "LandmarksUnavailable", "eye_aspect_ratio", "model_path"]

INPUT = 192  #: the model's input side, pixels
CROP_SCALE = 1.5  #: the square crop's side over the face box's larger side
ENV = "LIPSYNC_FACE_LANDMARKS"
PACKAGE_FILE = ("modules", "face_landmark", "face_landmark.tflite")

#: mesh indices per eye, from the outer corner to the inner one (the subject's right eye first)
RIGHT_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)


class LandmarksUnavailable(RuntimeError):
    """The landmark model cannot be found or loaded here; the message says why and what to do."""


def model_path() -> Path:
    """Where the face-mesh model is: ``$LIPSYNC_FACE_LANDMARKS``, the installed mediapipe wheel's
    data, or a checked download (see :func:`lipsync.weights.fetch_member`).

    Raises:
        LandmarksUnavailable: not found and it cannot be downloaded (the message says why).
    """
    env = os.environ.get(ENV, "").strip()
    if env:
        p = Path(env)
        if not p.is_file():
            raise LandmarksUnavailable(f"{ENV}={env} is not a file.")
        return p
    spec = importlib.util.find_spec("mediapipe")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        p = Path(list(spec.submodule_search_locations)[0]).joinpath(*PACKAGE_FILE)
        if p.is_file():
            return p
        missing = f"the installed mediapipe package has no {'/'.join(PACKAGE_FILE)}"
    else:
        missing = "the eyelid landmark model is not installed"
    from ..errors import WeightsError
    from ..weights import FACE_LANDMARK, fetch_member

    try:
        return fetch_member(FACE_LANDMARK)
    except WeightsError as e:
        raise LandmarksUnavailable(
            f"{missing} (pip install --no-deps -r requirements-landmarks.txt, or set {ENV}), "
            f"and it could not be downloaded: {e}"
        ) from None


@dataclass(frozen=True)
class Eye:
    """One eye's lids in image pixels: (9, 2) float32 (x, y) each, outer corner to inner corner."""

    upper: np.ndarray
    lower: np.ndarray

    @property
    def width(self) -> float:
        return float(np.hypot(*(self.upper[-1] - self.upper[0])))

    @property
    def opening(self) -> float:
        """Mean gap between the lids over the middle points, pixels."""
        return float(np.mean(self.lower[2:7, 1] - self.upper[2:7, 1]))


@dataclass(frozen=True)
class EyeLandmarks:
    right: Eye  #: the subject's right eye (on the left of the picture)
    left: Eye
    points: np.ndarray  #: (468, 3) all mesh points, image pixels (z in the same scale)
    score: float  #: the model's face presence score (0..1)


def eye_aspect_ratio(eye: Eye) -> float:
    """Opening over width: about 0.25-0.35 for an open eye, near 0 for a closed one."""
    return eye.opening / max(eye.width, 1e-6)


class FaceMesh:
    """The face-mesh network (OpenCV DNN). ``FaceMesh()`` raises :class:`LandmarksUnavailable` where it cannot load."""

    def __init__(self, path: str | Path | None = None):
        import cv2

        path = Path(path) if path is not None else model_path()
        try:
            self.net = cv2.dnn.readNetFromTFLite(str(path))
        except cv2.error as e:
            raise LandmarksUnavailable(f"OpenCV could not load the landmark model {path}: {e}") from None
        names = self.net.getUnconnectedOutLayersNames()
        self._names = names
        self.path = path

    def __call__(self, rgb: np.ndarray, box: FaceBox) -> EyeLandmarks:
        """Landmarks of the face in ``box`` of ``rgb`` ((H, W, 3) uint8)."""
        import cv2

        cx, cy = (box.x1 + box.x2) / 2.0, (box.y1 + box.y2) / 2.0
        side = CROP_SCALE * max(box.width, box.height)
        x0, y0 = cx - side / 2, cy - side / 2
        s = INPUT / side
        m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
        crop = cv2.warpAffine(rgb, m, (INPUT, INPUT), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        blob = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
        self.net.setInput(blob)
        outs = self.net.forward(self._names)
        pts = next(o for o in outs if o.size == 468 * 3).reshape(468, 3).astype(np.float32)
        score = next(o for o in outs if o.size == 1).reshape(())
        pts = pts / s
        pts[:, 0] += x0
        pts[:, 1] += y0

        def eye(up, lo) -> Eye:
            return Eye(pts[list(up), :2].copy(), pts[list(lo), :2].copy())

        return EyeLandmarks(eye(RIGHT_UPPER, RIGHT_LOWER), eye(LEFT_UPPER, LEFT_LOWER), pts,
                            float(1.0 / (1.0 + np.exp(-float(score)))))
