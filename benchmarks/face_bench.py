#!/usr/bin/env python3
"""Which offline face detector to use: hit rate on the face corpus and time per image.

    python benchmarks/face_bench.py [--repeat 10] [--misses]

Runs ``find_face(..., face_index=0)`` of each offline detector (no S3FD weights)
over the corpus of tests/face_corpus.py and prints, per category, how many
faces it found (IoU >= 0.4 with the hand-marked box of the largest face) and
how many face-free pictures it correctly left alone (NoFaceError). Then the
best and median milliseconds per detection on the 512x512 example portrait and
on a 1920x1080 frame (a 105 px face on a dark background) as given and as the
pipeline sees it (scaled to 1280x720 by load_image), with the ratio to the old
detector (``opencv-haar``: one cascade pass after global equalisation).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _ms(fn, repeat: int, clock) -> tuple[float, float]:
    """Best and median milliseconds of ``repeat`` calls (best: least disturbed by other load)."""
    fn()  # warm-up (first-call allocations)
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times) * 1000.0, statistics.median(times) * 1000.0


def main(argv=None) -> int:
    import numpy as np

    from face_corpus import _small, astronaut, build_corpus, evaluate
    from lipsync.face import HaarDetector, MTCNNDetector, MultiHaarDetector
    from lipsync.media.images import load_image

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10, help="timed runs per picture (median reported)")
    ap.add_argument("--misses", action="store_true", help="list each detector's misses")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OpenCV threads while timing (default 1: CPU milliseconds, steady on a shared machine; "
        "0: OpenCV's default, wall milliseconds)",
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    detectors = [HaarDetector(), MultiHaarDetector(), MTCNNDetector()]
    with tempfile.TemporaryDirectory() as tmp:
        cases = build_corpus(Path(tmp))
    categories = list(dict.fromkeys(c.category for c in cases))
    results = {d.name: evaluate(d, cases) for d in detectors}

    width = max(len(c) for c in categories) + 2
    print(f"{len(cases)} pictures ({sum(c.truth is not None for c in cases)} with a face); hit = IoU >= 0.4\n")
    print("category".ljust(width) + "".join(d.name.rjust(20) for d in detectors))
    for cat in categories + ["all faces"]:
        line = cat.ljust(width)
        for d in detectors:
            rows = [
                r for r in results[d.name] if (r[0].truth is not None if cat == "all faces" else r[0].category == cat)
            ]
            hits = sum(r[1] for r in rows)
            line += f"{hits}/{len(rows)} ({100 * hits / len(rows):.0f}%)".rjust(20)
        print(line)
    if a.misses:
        for d in detectors:
            missed = [
                f"{c.name} ({b if isinstance(b, str) else f'IoU {v:.2f}'})"
                for c, hit, v, b in results[d.name]
                if not hit
            ]
            print(f"\n{d.name} misses: {', '.join(missed) or 'none'}")

    portrait = load_image(ROOT / "assets" / "astronaut.jpg")
    frame, _ = _small(astronaut(), 105, (1920, 1080), "dark", (0.3, 0.4))  # not scaled down: 1920x1080 as given
    frame = np.ascontiguousarray(frame)
    import cv2

    if a.threads > 0:
        cv2.setNumThreads(a.threads)  # this script only: the library never changes OpenCV's settings
        clock, what = time.process_time, f"CPU ms on {a.threads} thread(s)"
    else:
        clock, what = time.perf_counter, f"wall ms, {cv2.getNumThreads()} OpenCV threads"
    print(f"\n{what} per detection, best / median of {a.repeat} (ratio of the best to {detectors[0].name}'s)")
    print("picture".ljust(14) + "".join(d.name.rjust(28) for d in detectors))
    for label, img in (("512x512", portrait), ("1280x720", load_image(frame)), ("1920x1080", frame)):
        base = None
        line = label.ljust(14)
        for d in detectors:
            best, median = _ms(lambda d=d, img=img: d.detect(img), a.repeat, clock)
            base = base or best
            line += f"{best:6.1f} / {median:6.1f} (x{best / base:4.1f})".rjust(28)
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
