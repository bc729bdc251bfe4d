"""Pasting mouths back: only the lower face changes, smoothly."""

import numpy as np

from lipsync.blend import Blender, feather_mask
from lipsync.face import FaceBox


def _image():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)


def test_pixels_outside_the_box_are_the_source_exactly():
    img = _image()
    box = FaceBox(40, 160, 60, 180)
    pred = np.ones((96, 96, 3), np.float32)  # white mouth
    out = Blender(img, box).paste(pred)
    outside = np.ones(img.shape[:2], bool)
    outside[box.y1 : box.y2, box.x1 : box.x2] = False
    np.testing.assert_array_equal(out[outside], img[outside])
    assert out.dtype == np.uint8 and out.shape == img.shape


def test_box_edges_and_upper_face_are_untouched_lower_face_replaced():
    img = _image()
    box = FaceBox(40, 160, 60, 180)
    out = Blender(img, box).paste(np.ones((96, 96, 3), np.float32))
    region, src = out[40:160, 60:180].astype(int), img[40:160, 60:180].astype(int)
    np.testing.assert_array_equal(region[0], src[0])  # top edge
    np.testing.assert_array_equal(region[-1], src[-1])  # bottom edge
    np.testing.assert_array_equal(region[:, 0], src[:, 0])
    np.testing.assert_array_equal(region[:, -1], src[:, -1])
    np.testing.assert_array_equal(region[:40], src[:40])  # eyes and nose stay
    assert (region[85, 60] == 255).all()  # mouth centre is the prediction


def test_mask_has_no_seam():
    m = feather_mask(120, 120)[..., 0]
    assert m.min() == 0.0 and m.max() == 1.0
    # neighbouring weights never jump: a seam would be a step close to 1
    assert np.abs(np.diff(m, axis=0)).max() < 0.2
    assert np.abs(np.diff(m, axis=1)).max() < 0.2


def test_prediction_is_bgr():
    img = np.zeros((100, 100, 3), np.uint8)
    pred = np.zeros((96, 96, 3), np.float32)
    pred[..., 0] = 1.0  # blue in BGR
    out = Blender(img, FaceBox(0, 100, 0, 100)).paste(pred)
    assert out[75, 50, 2] > 200 and out[75, 50, 0] == 0  # blue in RGB


def test_the_rows_above_the_mouths_rows_never_reach_the_video():
    """The int8 network computes only the crop's rows from MOUTH_FROM down (the face's own pixels above): a
    paste, plain or with the fast enhancement, must not read the rows above, at any box size."""
    from lipsync.enhance.detail import DetailTransfer
    from lipsync.models.still import MOUTH_FROM

    rng = np.random.default_rng(3)
    pred = rng.uniform(0, 1, (96, 96, 3)).astype(np.float32)
    other = pred.copy()
    other[:MOUTH_FROM] = rng.uniform(0, 1, (MOUTH_FROM, 96, 3))  # anything at all above
    for size in (24, 48, 95, 96, 150, 300, 460):
        img = rng.integers(0, 256, (size + 40, size + 40, 3), dtype=np.uint8)
        box = FaceBox(20, 20 + size, 20, 20 + size)
        for enhance in (None, DetailTransfer(), DetailTransfer(still=False)):
            a, b = Blender(img, box, enhance).paste(pred), Blender(img, box, enhance).paste(other)
            np.testing.assert_array_equal(a, b, err_msg=f"box {size}, enhance {enhance}")
