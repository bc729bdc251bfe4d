"""Face detection on the still portrait, padding, choice among several faces."""

import numpy as np
import pytest
import torch

from lipsync.errors import NoFaceError, WeightsError
from lipsync.face import FaceBox, HaarDetector, S3FDDetector, find_face, make_detector, pad_box
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
    assert det.name == "opencv-haar"
