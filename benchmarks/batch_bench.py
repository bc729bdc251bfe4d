#!/usr/bin/env python3
"""Jobs per minute of ``lipsync batch``: local workers and a local Ray instance, same jobs.

    python benchmarks/batch_bench.py                 # 20 jobs; 1 and 2 local workers, Ray (2 x 1 CPU)
    python benchmarks/batch_bench.py --jobs 6 --quick
    python benchmarks/batch_bench.py --json

Each job: the example portrait (long side scaled to --max-side), 3 s of espeak-ng
speech (``length`` 3, so every video is exactly 75 frames at 25 fps). Weights:
the deterministic scratch checkpoint (seed 1234); the network costs the same as
with the published weights. Offline: S3FD is not downloaded, the Haar detector is used.

Two rates per run:
  * end to end: jobs / the whole run's wall time (workers' start-up and model load included);
  * steady: (jobs - 1) / the time from the first finished job to the last.

No number is asserted; this only measures and prints. Timing on a shared machine
is noisy: the load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "assets" / "astronaut.jpg"
TEXTS = [
    "Hello and welcome, this is your personal video message.",
    "Thank you for your order, it is on its way to you now.",
    "Good morning, here is a short update about your account.",
    "We are glad you joined us, and we hope to see you soon.",
]


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover - not Linux
        return "n/a"


def make_jobs(folder: Path, n: int, max_side: int) -> Path:
    shutil.copy(EXAMPLE, folder / "face.jpg")
    path = folder / "jobs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "text", "voice", "length", "max_side", "fps"])
        for i in range(n):
            w.writerow([f"job{i:03d}", "face.jpg", TEXTS[i % len(TEXTS)], "espeak:en-us", 3, max_side, 25])
    return path


def run(label: str, jobs: Path, out: Path, checkpoint: Path, **kw) -> dict:
    from lipsync.batch import EngineSettings, run_batch

    finished: list[float] = []

    def progress(done, total, ok, failed):
        if done:
            finished.append(time.perf_counter())

    t0 = time.perf_counter()
    s = run_batch(jobs, out, settings=EngineSettings(checkpoint=str(checkpoint), device="cpu"), progress=progress, **kw)
    wall = time.perf_counter() - t0
    if not s.success:
        raise SystemExit(f"{label}: {s.failed} job(s) failed; see {s.results}")
    steady = (len(finished) - 1) / (finished[-1] - finished[0]) * 60 if len(finished) > 1 else 0.0
    return {
        "run": label, "jobs": s.ran, "wall_s": round(wall, 1), "first_result_s": round(finished[0] - t0, 1),
        "jobs_per_min": round(60 * s.ran / wall, 1), "steady_jobs_per_min": round(steady, 1), "load": load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--max-side", type=int, default=320)
    ap.add_argument("--checkpoint", type=Path, help="default: the scratch checkpoint (seed 1234)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--quick", action="store_true", help="only 2 local workers and Ray")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("LIPSYNC_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="lipsync-batch-bench-"))
    try:
        checkpoint = a.checkpoint
        if checkpoint is None:
            from lipsync.models.scratch import write_scratch_checkpoint

            checkpoint = write_scratch_checkpoint(work / "wav2lip_seed1234.pth", 1234)
        jobs = make_jobs(work, a.jobs, a.max_side)
        rows = []
        if not a.quick:
            rows.append(run("local, 1 worker", jobs, work / "w1", checkpoint, workers=1))
        rows.append(run("local, 2 workers", jobs, work / "w2", checkpoint, workers=2))
        if not a.no_ray:
            rows.append(run("Ray local, 2 actors x 1 CPU", jobs, work / "r2", checkpoint, ray=True, cpus_per_worker=1))
            if not a.quick:
                rows.append(run("Ray local, 1 actor x 2 CPUs", jobs, work / "r1", checkpoint, ray=True,
                                cpus_per_worker=2))
        if a.json:
            print(json.dumps({"cpus": os.cpu_count(), "max_side": a.max_side, "runs": rows}, indent=2))
            return
        print(f"{a.jobs} jobs: 3 s of espeak-ng text each, example portrait at {a.max_side} px, 25 fps, "
              f"{os.cpu_count()} CPUs")
        print(f"{'run':30} {'wall s':>7} {'1st job s':>9} {'jobs/min':>9} {'steady':>7}  load (1/5/15 min)")
        for r in rows:
            print(f"{r['run']:30} {r['wall_s']:7.1f} {r['first_result_s']:9.1f} {r['jobs_per_min']:9.1f} "
                  f"{r['steady_jobs_per_min']:7.1f}  {r['load']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
