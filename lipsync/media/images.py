"""The one door through which a portrait enters: open, check and normalise it.

Untrusted files are opened with Pillow restricted to a few formats, with a
pixel cap (decompression bombs are errors), EXIF orientation applied, every
mode converted to RGB (alpha composited on a neutral grey), animations reduced
to their first frame, and the result scaled to the working size. Everything
downstream sees only an (H, W, 3) uint8 RGB array with even sides.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import ImageError

__all__ = ["load_image", "ALLOWED_FORMATS", "DEFAULT_MAX_PIXELS"]

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
DEFAULT_MAX_PIXELS = 40_000_000
MIN_SIDE = 64
BACKGROUND = (128, 128, 128)
_HELP = "Use a JPEG, PNG, WebP or BMP photo."


def _open(src, max_pixels: int):
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(src, Image.Image):
        return src
    if isinstance(src, (str, Path)):
        p = Path(src)
        if not p.is_file():
            raise ImageError(f"The image file {p} does not exist.")
        if p.stat().st_size == 0:
            raise ImageError(f"The image file {p.name} is empty. {_HELP}")
        data: bytes | io.BytesIO = p
        name = p.name
    elif isinstance(src, (bytes, bytearray)):
        if not src:
            raise ImageError(f"The image is empty. {_HELP}")
        data = io.BytesIO(bytes(src))
        name = "the image"
    else:
        raise ImageError(f"Unsupported image input of type {type(src).__name__}. {_HELP}")

    # Pillow's own bomb check (its MAX_IMAGE_PIXELS) stays as the process has it; the
    # explicit check below reads only the header and refuses before any decoding.
    try:
        img = Image.open(data, formats=ALLOWED_FORMATS)
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError(
                f"{name} is {w}x{h} pixels, more than the limit of {max_pixels / 1e6:.0f} megapixels. "
                "Use a smaller photo."
            )
        img.load()
        img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(
            f"{name} declares too many pixels (over {max_pixels / 1e6:.0f} megapixels). Use a smaller photo."
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not a picture this tool can read. {_HELP}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name} is damaged or incomplete ({str(e)[:120]}). {_HELP}") from None
    return img


def _to_rgb(img) -> "np.ndarray":
    from PIL import Image

    if getattr(img, "is_animated", False):
        img.seek(0)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        img = Image.alpha_composite(bg, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_image(
    src,
    *,
    max_side: int = 1280,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Open an untrusted image and return the working RGB array.

    Args:
        src: a path, the file's bytes, a PIL image, or an (H, W, 3) uint8 RGB array.
        max_side: the long side is scaled down to at most this many pixels
            (never up); 0 keeps the size.
        max_pixels: images declaring more pixels are refused before decoding.

    Returns:
        (H, W, 3) uint8 RGB, both sides even.

    Raises:
        ImageError: unreadable, unsupported, too large, or too small.
    """
    if isinstance(src, np.ndarray):
        arr = src
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ImageError("An image array must be (H, W, 3) uint8 RGB.")
    else:
        arr = _to_rgb(_open(src, max_pixels))
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(
            f"The image is only {w}x{h} pixels. Use a portrait at least {MIN_SIDE} pixels on each side "
            "(256 or more works best)."
        )
    if max_side and max(h, w) > max_side:
        import cv2

        s = max_side / max(h, w)
        arr = cv2.resize(arr, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)
        h, w = arr.shape[:2]
    return np.ascontiguousarray(arr[: h - h % 2, : w - w % 2])
