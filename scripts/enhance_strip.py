"""docs/enhance_strip.png: the mouth region of two real faces, original / plain paste / enhance=fast.

Wav2Lip's resolution is simulated as in benchmarks/restore.py (the 96 px crop,
a little blur, a 3-level shift and 1.5 levels of noise as a network adds);
"off" stretches it back bilinearly (the plain paste), "fast" is
lipsync.enhance's detail transfer.

    .venv/bin/python scripts/enhance_strip.py [OUT.png]
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
from lipsync.enhance.detail import DetailTransfer  # noqa: E402
from lipsync.face.detect import find_face, offline_detector  # noqa: E402

CELL = 300


def network_crop(region: np.ndarray) -> np.ndarray:
    small = cv2.resize(region, (96, 96)).astype(np.float32)
    small = cv2.GaussianBlur(small, (0, 0), 0.7) + 3.0
    small += np.random.default_rng(1).normal(0, 1.5, small.shape).astype(np.float32)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "docs" / "enhance_strip.png"
    rows = []
    for p in (astronaut(), hopper()):
        box = find_face(p.rgb, offline_detector())
        region = np.ascontiguousarray(p.rgb[box.y1 : box.y2, box.x1 : box.x2])
        h, w = region.shape[:2]
        small = network_crop(region)
        plain = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        fast = DetailTransfer()(small, region)
        cells = []
        for label, img in (("original", region), ("off (plain paste)", plain), ("fast", fast)):
            mouth = img[int(0.55 * h) : int(0.95 * h), int(0.2 * w) : int(0.8 * w)]
            cell = cv2.resize(mouth, (CELL, round(CELL * mouth.shape[0] / mouth.shape[1])),
                              interpolation=cv2.INTER_NEAREST)
            cv2.putText(cell, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2, cv2.LINE_AA)
            cells.append(cell)
        rows.append(np.concatenate(cells, axis=1))
    w = min(r.shape[1] for r in rows)
    strip = np.concatenate([rows[0][:, :w], np.full((6, w, 3), 255, np.uint8), rows[1][:, :w]], axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), strip[:, :, ::-1])
    print(f"wrote {out} ({strip.shape[1]}x{strip.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
