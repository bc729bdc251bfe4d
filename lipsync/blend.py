"""Paste generated mouth crops back into the portrait through a feathered mask.

Pure numpy/cv2. Only the lower part of the face box changes; the weight falls
smoothly to zero towards the box's sides, its bottom edge and the nose line, so
no rectangle seam shows. Pixels outside the box are the source's, bit for bit.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .face import FaceBox

__all__ = ["feather_mask", "Blender", "draw_label"]


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


class Blender:
    """Pastes 96x96 BGR predictions into copies of one RGB portrait."""

    def __init__(self, image_rgb: np.ndarray, box: FaceBox):
        self.image = image_rgb
        self.box = box
        self._mask = feather_mask(box.height, box.width)
        self._region = image_rgb[box.y1 : box.y2, box.x1 : box.x2].astype(np.float32)

    def paste(self, pred_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One frame: (96, 96, 3) uint8 or [0,1] float BGR -> (H, W, 3) uint8 RGB."""
        import cv2

        b = self.box
        if pred_bgr.dtype != np.uint8:
            pred_bgr = np.clip(pred_bgr * 255.0 + 0.5, 0, 255).astype(np.uint8)
        mouth = cv2.resize(pred_bgr[:, :, ::-1], (b.width, b.height), interpolation=cv2.INTER_LINEAR)
        if out is None:
            out = self.image.copy()
        else:
            np.copyto(out, self.image)
        mixed = self._region + self._mask * (mouth.astype(np.float32) - self._region)
        out[b.y1 : b.y2, b.x1 : b.x2] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
        return out


def draw_label(image_rgb: np.ndarray, text: str = "AI-generated", avoid: FaceBox | None = None) -> np.ndarray:
    """A copy of ``image_rgb`` with a small visible label in a corner.

    The label goes in the bottom-left corner, or another corner when that one
    would cover the face box; it is drawn once on the still image, so it costs
    nothing per frame.
    """
    import cv2

    h, w = image_rgb.shape[:2]
    scale = max(0.35, min(h, w) / 900.0)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(3, round(6 * scale))
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    margin = max(4, round(min(h, w) * 0.015))
    corners = [
        (margin, h - margin - bh),  # bottom-left
        (w - margin - bw, h - margin - bh),  # bottom-right
        (margin, margin),  # top-left
        (w - margin - bw, margin),  # top-right
    ]

    def overlaps(x, y):
        if avoid is None:
            return False
        return not (x + bw <= avoid.x1 or x >= avoid.x2 or y + bh <= avoid.y1 or y >= avoid.y2)

    x, y = next(((cx, cy) for cx, cy in corners if not overlaps(cx, cy)), corners[0])
    x, y = max(0, x), max(0, y)
    out = image_rgb.copy()
    region = out[y : y + bh, x : x + bw]
    region[:] = (region.astype(np.float32) * 0.45).astype(np.uint8)  # darkened backdrop
    cv2.putText(out, text, (x + pad, y + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out
