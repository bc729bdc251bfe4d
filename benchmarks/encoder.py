#!/usr/bin/env python3
"""Which x264 preset and thread count to use: CPU seconds and size per preset.

    python benchmarks/encoder.py [--frames 500]

Streams the same frames (the example portrait with a moving mouth region) through
lipsync's VideoWriter with each setting and prints wall seconds, the encoder's CPU
seconds (what it takes away from inference on a small machine) and the file size.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> int:
    import numpy as np

    from lipsync.media.encode import VideoWriter
    from lipsync.media.images import load_image

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=500)
    a = ap.parse_args(argv)
    img = load_image(ROOT / "assets" / "astronaut.jpg")
    rng = np.random.default_rng(0)
    frames = []
    for i in range(25):  # a repeating second of frames whose lower face changes
        f = img.copy()
        f[120:180, 190:260] = np.clip(f[120:180, 190:260].astype(int) + rng.integers(-30, 30, (60, 70, 3)), 0, 255)
        frames.append(f)
    print(f"{a.frames} frames of {img.shape[1]}x{img.shape[0]}")
    print(f"{'preset':<10} {'threads':>7} {'wall s':>7} {'cpu s':>6} {'KB':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("ultrafast", "superfast", "veryfast", "faster"):
            for threads in (0, 1, 2):
                out = Path(tmp) / f"{preset}-{threads}.mp4"
                c0, t0 = child_cpu(), time.perf_counter()
                with VideoWriter(out, img.shape[1], img.shape[0], 25.0, preset=preset, threads=threads) as w:
                    for i in range(a.frames):
                        w.write(frames[i % 25])
                wall, cpu = time.perf_counter() - t0, child_cpu() - c0
                print(f"{preset:<10} {threads:>7} {wall:>7.2f} {cpu:>6.2f} {out.stat().st_size / 1024:>6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
