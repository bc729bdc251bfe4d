#!/usr/bin/env python3
"""Draw docs/motion_strip.png: the example portrait's head over time, still and with head motion.

    python scripts/motion_strip.py [--out docs/motion_strip.png] [--text "..."]

Rows: motion 0 (the still output), 0.5 (the default) and 1 (the most); columns: moments of one
spoken sentence (espeak-ng), the speech's loudness under each. Each tile is the head region of the
512x512 frame; thin lines mark where the still face's eyes and centre are, so a few pixels of
movement can be seen. The mouth is left as in the photo (the strip shows the head motion alone;
no network weights are needed to draw it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT = "Hello from orbit! The view up here is breathtaking, and every ninety minutes the sun rises again."
AMOUNTS = (0.0, 0.5, 1.0)
COLUMNS = 6
TILE_W = 140


def main(argv: list[str] | None = None) -> int:
    import cv2
    from PIL import Image

    from lipsync import synthesize
    from lipsync.face import HaarDetector, find_face
    from lipsync.media.images import load_image
    from lipsync.motion import HeadWarp, head_motion
    from lipsync.speech.activity import activity_envelope

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "motion_strip.png"))
    p.add_argument("--text", default=TEXT)
    p.add_argument("--fps", type=float, default=25.0)
    a = p.parse_args(argv)

    img = load_image(ROOT / "assets" / "astronaut.jpg")
    box = find_face(img, HaarDetector())
    speech = synthesize(a.text, "espeak:en-us")
    n = int(speech.duration_s * a.fps)
    loud = activity_envelope(speech.samples, speech.sample_rate, n, a.fps)
    frames = np.linspace(0.08 * n, 0.92 * n, COLUMNS).astype(int)

    # the tile: the head and some background around it
    cx = (box.x1 + box.x2) // 2
    half_w = int(1.1 * box.width)
    y0, y1 = max(0, box.y1 - int(0.7 * box.height)), min(img.shape[0], box.y2 + int(0.5 * box.height))
    x0, x1 = max(0, cx - half_w), min(img.shape[1], cx + half_w)
    scale = TILE_W / (x1 - x0)
    tile_h = int(round((y1 - y0) * scale))
    eye_y = box.y1 + int(0.38 * box.height)

    rows = []
    label_w = 120
    for amount in AMOUNTS:
        track = head_motion(speech.samples, speech.sample_rate, n, a.fps, box.height, amount)
        warp = HeadWarp(img.shape, box)
        tiles = []
        for i in frames:
            frame = warp.apply(img.copy(), *track.pose(int(i)))
            t = cv2.resize(frame[y0:y1, x0:x1], (TILE_W, tile_h), interpolation=cv2.INTER_AREA)
            guide = t.copy()
            ey, gx = int((eye_y - y0) * scale), int((cx - x0) * scale)
            cv2.line(guide, (0, ey), (TILE_W - 1, ey), (255, 230, 0), 1, cv2.LINE_AA)
            cv2.line(guide, (gx, 0), (gx, tile_h - 1), (255, 230, 0), 1, cv2.LINE_AA)
            t = cv2.addWeighted(guide, 0.6, t, 0.4, 0)
            pose = track.pose(int(i))
            cv2.putText(t, f"{pose[0]:+.1f}deg {pose[1]:+.1f},{pose[2]:+.1f}px", (3, tile_h - 5),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255))
        label = np.full((tile_h + 4, label_w, 3), 255, np.uint8)
        name = "still" if amount == 0 else ("default" if amount == 0.5 else "most")
        cv2.putText(label, f"motion {amount:g}", (6, tile_h // 2 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(label, f"({name})", (6, tile_h // 2 + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
        rows.append(np.hstack([label, *tiles]))

    # the bottom row: time and loudness of each column
    foot = np.full((34, rows[0].shape[1], 3), 255, np.uint8)
    cv2.putText(foot, "speech", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
    for k, i in enumerate(frames):
        x = label_w + k * (TILE_W + 4) + 4
        bar = int(round(float(loud[i]) * (TILE_W - 60)))
        cv2.rectangle(foot, (x, 8), (x + bar, 16), (60, 120, 220), -1)
        cv2.putText(foot, f"t={i / a.fps:.1f}s", (x, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    strip = np.vstack([*rows, foot])

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({strip.shape[1]}x{strip.shape[0]}, {out.stat().st_size / 1e3:.0f} kB); "
          f"{len(speech.samples) / speech.sample_rate:.1f} s of speech, frames {frames.tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
