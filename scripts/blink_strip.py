"""docs/blink_strip.png: a blink on two real faces (the astronaut; Grace Hopper, with glasses).

Rows: open, closing, closed, opening (frames of one blink at 25 fps, from
lipsync.blink's schedule and warp on the face-mesh eyelids). Needs the
landmark model (pip install --no-deps -r requirements-landmarks.txt).

    .venv/bin/python scripts/blink_strip.py [OUT.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from face_corpus import astronaut, hopper  # noqa: E402
from lipsync.blink import Blinks, blink_schedule  # noqa: E402
from lipsync.face.detect import find_face, offline_detector  # noqa: E402
from lipsync.face.landmarks import FaceMesh  # noqa: E402

FPS = 25.0
ROWS = (("open", -4), ("closing", -1), ("closed", 0), ("opening", 2))
CELL_W = 420


def eye_band(frame: np.ndarray, lm) -> np.ndarray:
    pts = np.r_[lm.right.upper, lm.right.lower, lm.left.upper, lm.left.lower]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    w = x1 - x0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = 0.75 * w, 0.3 * w
    crop = frame[int(cy - half_h) : int(cy + half_h), int(cx - half_w) : int(cx + half_w)]
    return cv2.resize(crop, (CELL_W, round(CELL_W * crop.shape[0] / crop.shape[1])), interpolation=cv2.INTER_CUBIC)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "docs" / "blink_strip.png"
    mesh = FaceMesh()
    columns = []
    for p in (astronaut(), hopper()):
        box = find_face(p.rgb, offline_detector())
        lm = mesh(p.rgb, box)
        closure, mids = blink_schedule(int(10 * FPS), FPS)
        blinks = Blinks(lm.right, lm.left, closure, p.rgb.shape, mids)
        m = int(mids[0])
        cells = []
        for label, dt in ROWS:
            frame = blinks.apply(p.rgb.copy(), m + dt)
            cell = eye_band(frame, lm)
            cv2.putText(cell, f"{label} ({closure[m + dt]:.2f})", (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (255, 255, 255), 2, cv2.LINE_AA)
            cells.append(cell)
        h = min(c.shape[0] for c in cells)
        columns.append(np.concatenate([c[:h] for c in cells], axis=0))
    h = min(c.shape[0] for c in columns)
    gap = np.full((h, 6, 3), 255, np.uint8)
    strip = np.concatenate([columns[0][:h], gap, columns[1][:h]], axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), strip[:, :, ::-1])
    print(f"wrote {out} ({strip.shape[1]}x{strip.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
