"""Paste generated mouth crops back into the portrait through a feathered mask.

Pure numpy/cv2. Only the lower part of the face box changes; the weight falls
smoothly to zero towards the box's sides, its bottom edge and the nose line, so
no rectangle seam shows. Pixels outside the box are the source's, bit for bit.
"""

from __future__ import annotations

from functools import lru_cache

import logging

import numpy as np

from .face import FaceBox

log = logging.getLogger("lipsync")

__all__ = ["feather_mask", "Blender", "paste_mouth", "draw_label", "label_box"]


def _ramp(n: int, start: float, full: float, end_full: float, end: float) -> np.ndarray:
    """1-D weight over n samples: 0 before start, smooth up to 1 at full, 1 until
    end_full, smooth down to 0 at end (positions as fractions of n)."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    up = np.clip((t - start) / max(full - start, 1e-6), 0.0, 1.0)
    down = np.clip((end - t) / max(end - end_full, 1e-6), 0.0, 1.0)
    w = np.minimum(up, down)
    return w * w * (3.0 - 2.0 * w)  # smoothstep


@lru_cache(maxsize=8)
def feather_mask(height: int, width: int) -> np.ndarray:
    """(height, width, 1) float32 weights in [0, 1] for a face box of that size.

    Full weight over the mouth and chin region; zero at every edge of the box.
    """
    rows = _ramp(height, 0.42, 0.58, 0.90, 0.995)
    cols = _ramp(width, 0.005, 0.16, 0.84, 0.995)
    m = np.outer(rows, cols).astype(np.float32)
    m[0, :] = m[-1, :] = 0.0
    m[:, 0] = m[:, -1] = 0.0
    m.setflags(write=False)
    return m[:, :, None]


def paste_mouth(
    frame_rgb: np.ndarray, box: FaceBox, pred_bgr: np.ndarray, strength: float = 1.0, enhance=None
) -> np.ndarray:
    """Paste one mouth crop into ``frame_rgb`` in place: the one paste, for a photo and a video.

    Args:
        frame_rgb: (H, W, 3) uint8 RGB frame, written in place.
        box: where the face is in this frame.
        pred_bgr: (96, 96, 3) uint8 or [0, 1] float BGR mouth crop.
        strength: scales the feathered mask, in [0, 1] (0 leaves the frame untouched:
            a pause in a video keeps its own mouth).
        enhance: optional ``(pred_rgb (96, 96, 3) uint8, region (h, w, 3)) -> (h, w, 3) uint8``
            that stretches the crop to the box in place of the plain resize, given the
            frame's own pixels there (see :mod:`lipsync.enhance`).

    Pixels outside ``box`` are never written. Returns ``frame_rgb``.
    """
    import cv2

    if strength <= 0:
        return frame_rgb
    if pred_bgr.dtype != np.uint8:
        pred_bgr = np.clip(pred_bgr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    region = frame_rgb[box.y1 : box.y2, box.x1 : box.x2]
    if enhance is not None:
        mouth = enhance(pred_bgr[:, :, ::-1], region)
    else:
        mouth = cv2.resize(pred_bgr[:, :, ::-1], (box.width, box.height), interpolation=cv2.INTER_LINEAR)
    mask = feather_mask(box.height, box.width)
    if strength < 1:
        mask = mask * np.float32(strength)
    r = region.astype(np.float32)
    region[:] = np.clip(r + mask * (mouth.astype(np.float32) - r) + 0.5, 0, 255).astype(np.uint8)
    return frame_rgb


class Blender:
    """Pastes 96x96 BGR predictions into copies of one RGB portrait (with :func:`paste_mouth`).

    ``enhance``: as for :func:`paste_mouth` (given the portrait's own pixels in the box).
    """

    def __init__(self, image_rgb: np.ndarray, box: FaceBox, enhance=None):
        self.image = image_rgb
        self.box = box
        self.enhance = enhance

    def paste(self, pred_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One frame: (96, 96, 3) uint8 or [0,1] float BGR -> (H, W, 3) uint8 RGB (into ``out`` when given)."""
        if out is None:
            out = self.image.copy()
        else:
            np.copyto(out, self.image)
        return paste_mouth(out, self.box, pred_bgr, enhance=self.enhance)


def _label_position(h: int, w: int, bw: int, bh: int, margin: int, avoid: FaceBox | None) -> tuple[int, int] | None:
    """Top-left corner for a ``bw`` x ``bh`` label that stays clear of ``avoid``, or None.

    A corner first (bottom-left, bottom-right, top-left, top-right); failing that,
    any place along an edge, the one farthest from the face first.
    """
    if bw > w - 2 * margin or bh > h - 2 * margin:
        return None
    xs = [margin, w - margin - bw]
    ys = [h - margin - bh, margin]
    corners = [(xs[0], ys[0]), (xs[1], ys[0]), (xs[0], ys[1]), (xs[1], ys[1])]
    if avoid is None:
        return corners[0]

    def clear(x: int, y: int) -> bool:
        return x + bw <= avoid.x1 or x >= avoid.x2 or y + bh <= avoid.y1 or y >= avoid.y2

    for x, y in corners:
        if clear(x, y):
            return x, y
    # slide along each edge: just beside the face, and centred
    along_x = [avoid.x1 - bw - margin, avoid.x2 + margin, (w - bw) // 2]
    along_y = [avoid.y1 - bh - margin, avoid.y2 + margin, (h - bh) // 2]
    cands = [(x, y) for x in along_x for y in ys] + [(x, y) for x in xs for y in along_y]
    cands = [(min(max(x, margin), w - margin - bw), min(max(y, margin), h - margin - bh)) for x, y in cands]
    cx, cy = (avoid.x1 + avoid.x2) / 2, (avoid.y1 + avoid.y2) / 2
    cands.sort(key=lambda p: -((p[0] + bw / 2 - cx) ** 2 + (p[1] + bh / 2 - cy) ** 2))
    return next(((x, y) for x, y in cands if clear(x, y)), None)


def _label_layout(h: int, w: int, text: str, avoid: FaceBox | None):
    """Where and how large the label goes: (x, y, box w, box h, scale, thickness, padding, text height), or None."""
    import cv2

    scale = max(0.35, min(h, w) / 900.0)
    margin = max(4, round(min(h, w) * 0.015))
    while True:
        thick = max(1, round(scale * 2))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        pad = max(2, round(6 * scale))
        bw, bh = tw + 2 * pad, th + base + 2 * pad
        pos = _label_position(h, w, bw, bh, margin, avoid)
        if pos is not None or scale <= 0.25:
            break
        scale = max(0.25, scale * 0.8)
        margin = max(2, margin // 2)
    if pos is None:
        return None
    return pos[0], pos[1], bw, bh, scale, thick, pad, th


def label_box(shape, text: str = "AI-generated", avoid: FaceBox | None = None) -> tuple[int, int, int, int] | None:
    """The rectangle (x, y, width, height) :func:`draw_label` covers in a frame of ``shape``, or None."""
    layout = _label_layout(int(shape[0]), int(shape[1]), text, avoid)
    return None if layout is None else layout[:4]


def draw_label(image_rgb: np.ndarray, text: str = "AI-generated", avoid: FaceBox | None = None) -> np.ndarray:
    """A copy of ``image_rgb`` with a small visible label that never covers the face.

    The label goes in a corner clear of the face box (bottom-left first); when
    every corner overlaps the face (a tight crop), it goes along the edge
    farthest from the face, and shrinks (down to a small but legible size) until
    it fits beside the face. If the face fills the whole frame the label is left
    out (the MP4's metadata still says the video is AI-generated). It is drawn
    once on the still image, so it costs nothing per frame.
    """
    import cv2

    h, w = image_rgb.shape[:2]
    layout = _label_layout(h, w, text, avoid)
    if layout is None:
        log.warning("no room for the visible label beside the face; only the metadata tag marks this video")
        return image_rgb.copy()
    x, y, bw, bh, scale, thick, pad, th = layout
    out = image_rgb.copy()
    region = out[y : y + bh, x : x + bw]
    region[:] = (region.astype(np.float32) * 0.45).astype(np.uint8)  # darkened backdrop
    cv2.putText(out, text, (x + pad, y + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out
