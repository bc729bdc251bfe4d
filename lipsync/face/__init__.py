"""Finding the face: detectors, the face box and the model's 96×96 crop."""

from .detect import (
    DEFAULT_PADS,
    FACE_SIZE,
    FaceBox,
    HaarDetector,
    MTCNNDetector,
    MultiHaarDetector,
    S3FDDetector,
    face_crop,
    find_face,
    make_detector,
    model_input,
    offline_detector,
    pad_box,
)

__all__ = [
    "DEFAULT_PADS", "FACE_SIZE", "FaceBox", "HaarDetector", "MTCNNDetector", "MultiHaarDetector",
    "S3FDDetector", "face_crop", "find_face", "make_detector", "model_input", "offline_detector", "pad_box",
]
