"""The only door for images: every hostile or awkward file gives a clean answer."""

import numpy as np
import pytest

from bad_inputs import CORPUS
from lipsync.errors import ImageError
from lipsync.face import HaarDetector, find_face
from lipsync.media.images import load_image


@pytest.fixture(scope="module")
def haar():
    return HaarDetector()


@pytest.fixture(scope="module")
def upright_box(example_image, haar):
    return find_face(load_image(example_image), haar)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_through_the_library(name, tmp_path, haar, upright_box):
    fname, make, expect = CORPUS[name]
    path = tmp_path / fname
    path.write_bytes(make())
    if expect == "error":
        with pytest.raises(ImageError) as e:
            load_image(path)
        msg = str(e.value)
        assert msg and "\n" not in msg and "Traceback" not in msg
        return
    rgb = load_image(path)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[0] % 2 == 0 and rgb.shape[1] % 2 == 0
    if name.startswith("exif_") or name in ("cmyk_jpeg", "animated_webp"):
        box = find_face(rgb, haar)  # Haar finds upright faces only
        assert abs(box.y1 - upright_box.y1) <= 12 and abs(box.x1 - upright_box.x1) <= 12, (name, box)


def test_large_images_are_scaled_down_to_the_working_size(tmp_path):
    from PIL import Image

    p = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000), (90, 120, 150)).save(p)
    rgb = load_image(p, max_side=1280)
    assert rgb.shape == (960, 1280, 3)


def test_pixel_cap_refuses_before_decoding(tmp_path):
    from PIL import Image

    p = tmp_path / "big.png"
    Image.new("RGB", (3000, 3000)).save(p)
    with pytest.raises(ImageError, match="megapixels"):
        load_image(p, max_pixels=4_000_000)


def test_alpha_is_composited_on_grey(tmp_path):
    from PIL import Image

    p = tmp_path / "clear.png"
    Image.new("RGBA", (100, 100), (255, 0, 0, 0)).save(p)
    rgb = load_image(p)
    assert (rgb == 128).all()


def test_bytes_and_arrays_are_accepted(example_image):
    a = load_image(example_image.read_bytes())
    b = load_image(a)
    np.testing.assert_array_equal(a, b)


def test_loading_leaves_process_wide_settings_alone(monkeypatch):
    """Pillow's bomb limit and the warnings filters are the process's, never changed per request."""
    import warnings

    from PIL import Image

    from bad_inputs import CORPUS

    seen = []
    real_open = Image.open

    def spy(*a, **k):
        seen.append((Image.MAX_IMAGE_PIXELS, list(warnings.filters)))
        return real_open(*a, **k)

    monkeypatch.setattr(Image, "open", spy)
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    for _name, make, _expect in CORPUS.values():
        try:
            load_image(make(), max_pixels=1_000_000)
        except ImageError:
            pass
    assert seen and all(s == before for s in seen)
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before
