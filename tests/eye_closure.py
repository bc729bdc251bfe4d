"""How shut an eye looks, measured on a picture by landmark models (for the blink tests and scripts/blink_judge.py).

Two readings of the eye aspect ratio (lid gap over eye width, :func:`lipsync.face.landmarks.eye_aspect_ratio`):

* the face mesh (:class:`lipsync.face.landmarks.FaceMesh`), which the blinks take their eyelids from. Its
  eyelids follow the face's overall shape more than the eye: on the corpus portraits it reads an eye painted
  out entirely (skin inpainted over the opening) at 59-96 % of the open eye, and at 70-106 % with a dark lash
  line drawn along the lower lid, so it cannot tell a shut eye from an open one.
* MediaPipe's iris model (``iris_landmark.tflite`` from the same ``mediapipe==0.10.14`` wheel, loaded with
  OpenCV's DNN as the face mesh is; :class:`IrisEyes`), which looks at a 64x64 close-up of each eye, placed as
  MediaPipe places it (2.3 times the mesh's corner-to-corner width, square, turned so that the corners are
  level), and gives the 16 eyelid points MediaPipe refines the mesh with (mesh indices 33, 7, 163, 144, 145,
  153, 154, 155, 133 along the lower lid, then 246, 161, 160, 159, 158, 157, 173 along the upper one). The
  subject's left eye is mirrored into the close-up (the other way round the points come out upside down). It
  reads the painted-out eye at 46-94 % and, with a 2-3 px lash line along the lower lid, at 9-28 % (the
  astronaut) and 31-45 % (Grace Hopper). This is the reading the blink judge's target is set on. It is a
  guide, not a precise measure: placed from the iris model's own corners instead of the mesh's, the same
  frames read up to 28 points differently.

Also the fine detail (a robust Laplacian variance) of the shut lid and of the photo's lid skin, for "no smear".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

IRIS_FILE = ("modules", "iris_landmark", "iris_landmark.tflite")
CROP = 2.3  #: the close-up's side over the eye's corner-to-corner width (as MediaPipe's iris graph crops)


def iris_model_path() -> Path | None:
    """The iris model inside the installed mediapipe wheel, or None."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]).joinpath(*IRIS_FILE)
    return p if p.is_file() else None


class IrisEyes:
    """MediaPipe's iris model: ``ear(rgb, eye, left)`` is the eye's aspect ratio as its close-up shows it."""

    def __init__(self, path: str | Path | None = None):
        import cv2

        path = path or iris_model_path()
        if path is None:
            raise FileNotFoundError("no iris_landmark.tflite (pip install --no-deps -r requirements-landmarks.txt)")
        self.net = cv2.dnn.readNetFromTFLite(str(path))
        self.names = self.net.getUnconnectedOutLayersNames()

    def eyelids(self, rgb: np.ndarray, eye, left: bool) -> tuple[np.ndarray, np.ndarray]:
        """(lower lid (9, 2) from the outer corner to the inner, upper lid between them (7, 2)), image pixels.

        ``eye`` (:class:`lipsync.face.landmarks.Eye`) places the close-up: the open eye's landmarks.
        """
        import cv2

        a, b = eye.upper[0].astype(np.float64), eye.upper[-1].astype(np.float64)  # outer, inner corner
        centre = (a + b) / 2
        side = CROP * float(np.hypot(*(b - a)))
        level = a - b if left else b - a  # the corners level, the eye as the model knows it
        m = cv2.getRotationMatrix2D(
            (float(centre[0]), float(centre[1])), float(np.degrees(np.arctan2(level[1], level[0]))), 64.0 / side
        )
        m[:, 2] += 32.0 - centre
        crop = cv2.warpAffine(rgb, m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if left:
            crop = crop[:, ::-1]
        self.net.setInput((crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy())
        contour = next(o for o in self.net.forward(self.names) if o.size == 71 * 3).reshape(71, 3)[:16, :2].copy()
        if left:
            contour[:, 0] = 63.0 - contour[:, 0]
        back = cv2.invertAffineTransform(m)
        pts = contour @ back[:, :2].T + back[:, 2]
        return pts[:9], pts[9:16]

    def ear(self, rgb: np.ndarray, eye, left: bool) -> float:
        """Mean gap between the lids over the middle five points, over the corner-to-corner width."""
        lower, upper = self.eyelids(rgb, eye, left)
        return float(np.mean(lower[2:7, 1] - upper[1:6, 1])) / max(float(np.hypot(*(lower[8] - lower[0]))), 1e-6)


def fine_detail(values: np.ndarray) -> float:
    """A robust variance of Laplacian values: (1.4826 x their median absolute deviation) squared, so that the
    skin's typical fine detail counts and a few edges in the sample (a lash, a rim's fringe) do not."""
    if values.size < 8:
        return float("nan")
    return float((1.4826 * np.median(np.abs(values - np.median(values)))) ** 2)


def _lap(grey: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=1)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _columns(eye, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The middle 70 % of the eye's columns, with the upper and lower lids there."""
    up = eye.upper[np.argsort(eye.upper[:, 0])]
    lo = eye.lower[np.argsort(eye.lower[:, 0])]
    xa, xb = float(up[0, 0]), float(up[-1, 0])
    xs = np.arange(int(np.ceil(xa + 0.15 * (xb - xa))), int(np.floor(xb - 0.15 * (xb - xa))) + 1)
    xs = xs[(xs >= 0) & (xs < shape[1])]
    return xs, np.interp(xs, up[:, 0], up[:, 1]), np.interp(xs, lo[:, 0], lo[:, 1])


def shut_lid_texture(frame: np.ndarray, eye) -> float:
    """Laplacian variance of the grey picture over what was the eye's opening (middle 70 % of its width),
    above the shut lid's lash line (the lowest tenth of the eye's width above the lower lid is left out)."""
    xs, u, low = _columns(eye, frame.shape)
    lap = _lap(_grey(frame))
    skip = 0.1 * eye.width
    vals = [lap[int(np.ceil(a)) + 1 : int(np.floor(b - skip)), x] for x, a, b in zip(xs, u, low)]
    vals = np.concatenate(vals) if vals else np.zeros(0)
    return fine_detail(vals)


def lid_skin_texture(photo: np.ndarray, eye) -> tuple[float, str]:
    """(fine detail of the photo's lid skin above the eye, "above"); where a glasses rim or a brow leaves too
    little of it (under 30 pixels), that of the skin all around the eye ("around").

    Around: from two eye-openings above the upper lid to two below the lower one, 0.3 eye widths beyond the
    middle 70 % of the eye, less the eye and its lashes. Above: the middle 70 % of the eye's columns, from one
    eye-opening above the upper lid down to the lashes (a third of the opening and 2 pixels above the lid). Skin
    only: pixels more than 25 % off the skin's brightness (the 70th percentile around: a rim, a brow, a
    highlight) and their neighbours are left out. Fine detail: :func:`fine_detail` of the Laplacian."""
    import cv2

    xs, u, low = _columns(eye, photo.shape)
    grey = _grey(photo)
    lap = _lap(grey)
    g = low - u
    pad = int(np.ceil(0.3 * eye.width))
    h, w = photo.shape[:2]
    around = np.zeros((h, w), bool)
    x0, x1 = max(0, int(xs.min()) - pad), min(w, int(xs.max()) + pad + 1)
    around[max(0, int(np.floor((u - 2 * g).min())) - 2) : min(h, int(np.ceil((low + 2 * g).max())) + 3), x0:x1] = True
    lids = _opening(eye, (h, w), above=0.35, grow=2)
    around &= ~lids
    skin = float(np.percentile(grey[around], 70))
    odd = cv2.dilate((np.abs(grey - skin) > 0.25 * skin).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    above = np.zeros((h, w), bool)
    for x, a, b in zip(xs, u - g - 2, u - 0.35 * g - 2):
        above[max(0, int(np.ceil(a))) : max(0, int(np.floor(b))) + 1, x] = True
    for where, sel in (("above", above & ~odd), ("around", around & ~odd)):
        if sel.sum() >= 30:
            return fine_detail(lap[sel]), where
    return float("nan"), "none"


def _opening(eye, shape, above: float = 0.0, grow: int = 0) -> np.ndarray:
    """The eye's opening between the lids (the upper lid raised by ``above`` of the opening and 2 pixels when
    ``above`` > 0), grown by ``grow`` pixels."""
    import cv2

    up = eye.upper.astype(np.float64).copy()
    if above:
        up[:, 1] -= (
            above
            * np.interp(
                up[:, 0],
                eye.lower[:, 0][::-1] if eye.lower[0, 0] > eye.lower[-1, 0] else eye.lower[:, 0],
                np.abs(eye.lower[:, 1] - eye.upper[:, 1]),
            )
            + 2.0
        )
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(np.r_[up, eye.lower[::-1]]).astype(np.int32)], 1)
    if grow:
        m = cv2.dilate(m, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return m > 0
