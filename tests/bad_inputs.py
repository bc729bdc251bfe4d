"""A corpus of hostile and awkward images, made on the fly (shared by several tests).

Each entry: name -> (file name, bytes maker, expectation) where expectation is
"ok" (a video or a normalised image must come out) or "error" (a clean
ImageError / exit 2 / readable message).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from conftest import EXAMPLE


def _portrait() -> Image.Image:
    return Image.open(EXAMPLE).convert("RGB")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_declaring(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _exif_rotated(orientation: int) -> bytes:
    """The portrait stored so that applying EXIF ``orientation`` shows it upright."""
    img = _portrait()
    inverse = {
        1: lambda i: i,
        2: lambda i: i.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        3: lambda i: i.transpose(Image.Transpose.ROTATE_180),
        4: lambda i: i.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        5: lambda i: i.transpose(Image.Transpose.TRANSPOSE),
        6: lambda i: i.transpose(Image.Transpose.ROTATE_90),
        7: lambda i: i.transpose(Image.Transpose.TRANSVERSE),
        8: lambda i: i.transpose(Image.Transpose.ROTATE_270),
    }[orientation]
    stored = inverse(img)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, "JPEG", quality=92, exif=exif.tobytes())


def _animated_gif(frames: int) -> bytes:
    base = _portrait().resize((128, 128))
    seq = [base] + [Image.new("RGB", (128, 128), (i % 256, 0, 0)) for i in range(frames - 1)]
    buf = io.BytesIO()
    seq[0].save(buf, "GIF", save_all=True, append_images=seq[1:], duration=20, loop=0)
    return buf.getvalue()


def _animated_webp(frames: int) -> bytes:
    base = _portrait()
    seq = [base] + [Image.new("RGB", base.size, (0, i % 256, 0)) for i in range(frames - 1)]
    buf = io.BytesIO()
    seq[0].save(buf, "WEBP", save_all=True, append_images=seq[1:], duration=40, quality=80)
    return buf.getvalue()


def _palette_with_alpha() -> bytes:
    img = _portrait().convert("RGBA")
    a = np.asarray(img).copy()
    a[:40, :, 3] = 0  # transparent band at the top
    return _save(Image.fromarray(a, "RGBA").quantize(colors=255, method=Image.Quantize.FASTOCTREE), "PNG")


def _png16() -> bytes:
    gray = np.asarray(_portrait().convert("L"), np.uint16) * 257
    return _save(Image.fromarray(gray), "PNG")


CORPUS = {
    "zero_bytes": ("empty.jpg", lambda: b"", "error"),
    "truncated_jpeg": ("cut.jpg", lambda: _save(_portrait(), "JPEG")[:3000], "error"),
    "text_as_png": ("notes.png", lambda: b"just some text\n" * 10, "error"),
    "html_as_jpg": ("page.jpg", lambda: b"<!doctype html><html><body><script>alert(1)</script></body></html>", "error"),
    "svg": ("vector.svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><circle r="40"/></svg>', "error"),
    "png_30000x30000": ("huge.png", lambda: _png_declaring(30000, 30000), "error"),
    "cmyk_jpeg": ("cmyk.jpg", lambda: _save(_portrait().convert("CMYK"), "JPEG"), "ok"),
    "png_16bit": ("deep.png", _png16, "ok"),
    "palette_alpha_png": ("palette.png", _palette_with_alpha, "ok"),
    "gif_500_frames": ("anim.gif", lambda: _animated_gif(500), "error"),  # GIF is not an accepted format
    "animated_webp": ("anim.webp", lambda: _animated_webp(30), "ok"),  # first frame is used
    "one_pixel": ("dot.png", lambda: _save(Image.new("RGB", (1, 1)), "PNG"), "error"),
    "one_by_5000": ("line.png", lambda: _save(Image.new("RGB", (1, 5000)), "PNG"), "error"),
    **{f"exif_{k}": (f"exif{k}.jpg", (lambda k=k: _exif_rotated(k)), "ok") for k in range(1, 9)},
}
