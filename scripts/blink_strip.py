"""docs/blink_strip.png: a blink on four faces, one row each: open, closing, closed, opening.

The faces are those of scripts/blink_judge.py: the astronaut; Grace Hopper, with glasses; the astronaut with
heavy clear-glasses rims drawn round the eyes (the corpus's "clear_glasses" case); the astronaut as an 80 px
face in a 1600x1200 photo brought to the working size (1280x960). Frames of one blink at 25 fps, from
lipsync.blink's schedule and drawing on the face-mesh eyelids; each cell is the band of both eyes, scaled
up. The picture is stored with a 256-colour palette to stay small. Needs the landmark model
(pip install --no-deps -r requirements-landmarks.txt).

    .venv/bin/python scripts/blink_strip.py [OUT.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from blink_judge import faces  # noqa: E402
from lipsync.blink import Blinks, blink_schedule  # noqa: E402
from lipsync.face.detect import find_face, offline_detector  # noqa: E402
from lipsync.face.landmarks import FaceMesh  # noqa: E402

FPS = 25.0
COLUMNS = (("open", -4), ("closing", -1), ("closed", 0), ("opening", 2))
CELL_W = 360
CELL_H = 134
GAP = 4


def eye_band(frame: np.ndarray, lm) -> np.ndarray:
    """Both eyes, CELL_W x CELL_H."""
    pts = np.r_[lm.right.upper, lm.right.lower, lm.left.upper, lm.left.lower]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    half_w = 0.7 * (x1 - x0)
    half_h = half_w * CELL_H / CELL_W
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = frame[int(cy - half_h) : int(cy + half_h), int(cx - half_w) : int(cx + half_w)]
    return cv2.resize(crop, (CELL_W, CELL_H), interpolation=cv2.INTER_CUBIC)


def label(cell: np.ndarray, text: str, y: int) -> None:
    for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(cell, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, width, cv2.LINE_AA)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "docs" / "blink_strip.png"
    mesh = FaceMesh()
    rows = []
    for name, photo, _ in faces():
        box = find_face(photo, offline_detector())
        lm = mesh(photo, box)
        closure, mids = blink_schedule(int(10 * FPS), FPS)
        blinks = Blinks(lm.right, lm.left, closure, photo.shape, mids)
        m = int(mids[0])
        cells = []
        for phase, dt in COLUMNS:
            cell = eye_band(blinks.apply(photo.copy(), m + dt), lm)
            label(cell, f"{phase} ({closure[m + dt]:.2f})", 16)
            if phase == "open":
                label(cell, name, CELL_H - 8)
            cells.append(cell)
        gap = np.full((CELL_H, GAP, 3), 255, np.uint8)
        rows.append(np.concatenate([x for c in cells for x in (c, gap)][:-1], axis=1))
    sep = np.full((GAP, rows[0].shape[1], 3), 255, np.uint8)
    strip = np.concatenate([x for r in rows for x in (r, sep)][:-1], axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({strip.shape[1]}x{strip.shape[0]}, {out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
