"""Show which faces a portrait has, numbered as ``face_index`` counts them, before anything is generated.

    >>> boxes = list_faces(rgb, detector, pads=(0, 10, 0, 0))   # the boxes the pipeline would use
    >>> picture = draw_faces(rgb, boxes, chosen=0)              # numbered, the chosen one highlighted
"""

from __future__ import annotations

import numpy as np

from ..errors import LipSyncError
from .detect import DEFAULT_PADS, FaceBox, find_face

__all__ = ["list_faces", "draw_faces", "face_at"]

CHOSEN = (46, 204, 64)  #: green: the face that will be animated
OTHER = (255, 220, 0)  #: yellow: the others


class _Found:
    """A detector that answers with faces already found (so detection runs once for all of them)."""

    def __init__(self, detector, faces):
        self.name = getattr(detector, "name", "detector")
        self._faces = faces

    def detect(self, rgb):
        return list(self._faces)


def list_faces(rgb: np.ndarray, detector, pads=DEFAULT_PADS) -> list[FaceBox | None]:
    """Every face in the photo, in ``face_index`` order, as the padded box the pipeline would use.

    Detection runs once; each face is then picked through
    :func:`~lipsync.face.find_face` itself, so numbering and padding are
    exactly those of a request with that ``face_index``. A face whose box is
    unusable (too small once padded) is listed as None.
    """
    found = _Found(detector, detector.detect(rgb))
    boxes: list[FaceBox | None] = []
    for i in range(len(found.detect(rgb))):
        try:
            boxes.append(find_face(rgb, found, face_index=i, pads=pads))
        except LipSyncError:
            boxes.append(None)
    return boxes


def face_at(boxes: list[FaceBox | None], x: float, y: float) -> int | None:
    """The index of the smallest face box holding the point (x, y), or None."""
    hits = [(b.width * b.height, i) for i, b in enumerate(boxes) if b and b.x1 <= x < b.x2 and b.y1 <= y < b.y2]
    return min(hits)[1] if hits else None


def draw_faces(rgb: np.ndarray, boxes: list[FaceBox | None], chosen: int | None = 0) -> np.ndarray:
    """A copy of the photo with each face boxed and numbered; the ``chosen`` one in green and marked."""
    from PIL import Image, ImageDraw

    from ..media.captions import bold_font

    img = Image.fromarray(np.ascontiguousarray(rgb))
    d = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    line = max(2, round(min(h, w) / 200))
    font = bold_font(max(12, round(min(h, w) / 28)))
    order = [i for i in range(len(boxes)) if i != chosen] + ([chosen] if chosen is not None and chosen < len(boxes) else [])
    for i in order:
        b = boxes[i]
        if b is None:
            continue
        color = CHOSEN if i == chosen else OTHER
        width = line * 2 if i == chosen else line
        d.rectangle((b.x1, b.y1, b.x2 - 1, b.y2 - 1), outline=color, width=width)
        tag = f"{i} (animated)" if i == chosen else str(i)
        x0, y0, x1, y1 = d.textbbox((0, 0), tag, font=font)
        tw, th = x1 - x0, y1 - y0
        pad = max(2, line)
        tx = min(max(0, b.x1), max(0, w - tw - 2 * pad))
        ty = b.y1 - th - 2 * pad if b.y1 >= th + 2 * pad else min(b.y2, h - th - 2 * pad)
        d.rectangle((tx, ty, tx + tw + 2 * pad, ty + th + 2 * pad), fill=color)
        d.text((tx + pad - x0, ty + pad - y0), tag, font=font, fill=(0, 0, 0))
    return np.asarray(img)
