#!/usr/bin/env python3
"""Live sessions on one GPU: how many keep time at once (network and paste; WebRTC encoding apart).

    python benchmarks/gpu_live.py                       # 25, 50, 100, 150 and 200 sessions, 10 s each
    python benchmarks/gpu_live.py --at-once 50,100 --seconds 8 --json out.json
    python benchmarks/gpu_live.py --device cpu --stand-in 4,0.03 --at-once 10,20,30   # no GPU here

``--stand-in BASE_MS,PER_FRAME_MS`` replaces the network by a wait that holds no lock (BASE_MS +
PER_FRAME_MS a frame per batch: 4 and 0.03 are the H200's measured fp16 batch times) and
hands back a fixed mouth: it measures what the GPU cannot take off the host, each session's
own work (mel windows, pacing, paste, enhancement, head motion, blinks) and the scheduler's,
on whatever machine runs it. Its figures are the host side's ceiling, not a GPU's.

One engine (fp16 on CUDA, the deterministic scratch checkpoint: the same network and cost
as the published one), then for each N: N sessions on threads of this one process, each
fed its own speech-like signal at real-time pace (16 kHz in, 16 kHz out: no resampling),
the example portrait at 512 px with the ``fast`` mouth enhancement. Per N: the sessions'
frames on time (handed out within one slot), repeated pictures, frame steps, the network's
batch sizes and GPU time per batch, and the process's CPU-seconds and the GPU-milliseconds
per session-second. The batched network alone is timed first (frames per second at batch
1, 32 and 128, stacked faces).

The face box is given (the device image's OpenCV has no Haar cascades): the example
portrait's box as the CPU's Haar detector finds it at 512 px. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
EXAMPLE = ROOT / "assets" / "astronaut.jpg"
RATE = 16000


class GivenBox:
    """A detector that answers the example portrait's face box (found by the Haar detector at 512 px)."""

    name = "given box"

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        s = w / 512.0
        return [(int(177 * s), int(67 * s), int(270 * s), int(169 * s), 6.6)]


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def network_rate(gen, sizes=(1, 32, 128), seconds=1.5) -> dict:
    rng = np.random.default_rng(0)
    faces = [gen.prepare_face(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for _ in range(max(sizes))]
    mel = rng.uniform(-4, 2, (1, 80, 16)).astype(np.float32)
    out = {}
    for b in sizes:
        items = [(faces[i], mel) for i in range(b)]
        gen.forward_many(items)
        sync()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            gen.forward_many(items)
            n += b
        sync()
        out[b] = round(n / (time.perf_counter() - t), 1)
    return out


def stand_in(gen, base_ms: float, per_frame_ms: float) -> None:
    """Replace ``gen``'s network by a lock-free wait shaped like a GPU's batch time (see the docstring)."""
    mouth = np.random.default_rng(0).uniform(0, 1, (96, 96, 3)).astype(np.float32)

    def network(items):
        time.sleep((base_ms + per_frame_ms * sum(len(m) for _, m in items)) / 1000)
        return [np.repeat(mouth[None], len(m), 0) for _, m in items]

    gen.scheduler._run_many = network


def at_once(engine, n: int, seconds: float) -> dict:
    from live import voiced  # benchmarks/live.py's speech-like signal

    sched = engine.generator.scheduler
    batch_ms: list[tuple[int, float]] = []
    real = sched._run_many

    def timed(items):
        t = time.perf_counter()
        out = real(items)
        sync()
        batch_ms.append((sum(len(m) for _, m in items), 1000 * (time.perf_counter() - t)))
        return out

    sched._run_many = timed
    speech = [voiced(seconds + 1.5, seed=k) for k in range(min(n, 16))]
    results: list[dict] = [{} for _ in range(n)]
    sessions = []
    for k in range(n):
        sessions.append(engine.live(image=EXAMPLE, max_side=512, sample_rate=RATE, blink=False, seed=k + 1))
    started = threading.Event()
    stop = threading.Event()
    tickets = [None] * n  # each session's place on the scheduler: its own work per frame, as admission reads it

    def push() -> None:  # one thread feeds every session its 20 ms chunks at real-time pace
        step = int(0.02 * RATE)
        started.wait()
        time.sleep(1.2)
        t0 = time.monotonic()
        for j, i in enumerate(range(0, int(seconds * RATE), step)):
            delay = t0 + j * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for k, s in enumerate(sessions):
                if not s.closed:
                    s.push(speech[k % len(speech)][i : i + step], RATE)
        stop.set()

    def run(k: int) -> None:
        s = sessions[k]
        started.set()
        for f in s:
            if tickets[k] is None:
                tickets[k] = s._ticket
            if stop.is_set() and s.queued_s == 0:
                break
        st = s.stats
        results[k] = {"frames": st.frames, "late": st.late_frames, "repeated": st.repeated_frames,
                      "step": s.mode.step, "first_ms": 1000 * (st.first_speech.get("frame", 0) - st.first_speech.get("push", 0))}
        s.close()

    cpu0 = time.process_time()
    wall0 = time.monotonic()
    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + 60)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    sched._run_many = real
    cap = sched.capacity(25.0)
    on_time = [100 * (1 - r["late"] / max(1, r["frames"])) for r in results]
    repeated = [100 * r["repeated"] / max(1, r["frames"]) for r in results]
    sizes = [b for b, _ in batch_ms]
    gpu_ms = sum(ms for _, ms in batch_ms)
    return {
        "sessions": n, "wall_s": round(wall, 1),
        "on_time_pct_min": round(min(on_time), 2), "on_time_pct_median": round(float(np.median(on_time)), 2),
        "sessions_at_99": sum(x >= 99 for x in on_time), "repeated_pct_max": round(max(repeated), 2),
        "steps": {str(s): sum(r["step"] == s for r in results) for s in (1, 2)},
        "first_speech_ms_p50": round(float(np.median([r["first_ms"] for r in results])), 1),
        "batches": len(batch_ms), "batch_frames_p50": int(np.median(sizes)) if sizes else 0,
        "batch_ms_p50": round(float(np.median([ms for _, ms in batch_ms])), 2) if batch_ms else 0,
        "gpu_ms_per_session_s": round(gpu_ms / (n * wall), 2),
        "cpu_s_per_session_s": round(cpu / (n * wall), 4), "cpus": os.cpu_count(),
        "shed": sched.stats.shed,
        # what admission (``auto``) says after the run: the network's share, one process's, and the least
        "admits": {"network": cap.network, "process": cap.process, "sessions": cap.sessions} if cap else None,
        "own_work_ms": round(1000 * max((t.work_s for t in tickets), default=0.0), 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--at-once", default="25,50,100,150,200")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--device", default="cuda", help="cuda (fp16), or cpu (int8) to try the script")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval (s): how soon a thread waiting for the GIL gets it (0: Python's 5 ms)")
    ap.add_argument("--stand-in", metavar="BASE_MS,PER_FRAME_MS",
                    help="a lock-free wait for the network (e.g. 4,0.03: the H200's batch times): the host side alone")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)
    import torch

    from lipsync import LipSync
    from lipsync.models.scratch import write_scratch_checkpoint

    tmp = tempfile.TemporaryDirectory(prefix="lipsync-gpu-")
    ckpt = write_scratch_checkpoint(Path(tmp.name) / "scratch.pth", 1234)
    engine = LipSync(ckpt, device=args.device, precision="fp16" if args.device == "cuda" else "int8",
                     detector=GivenBox()).load()
    res = {"device": engine.generator.description, "torch": torch.__version__}
    if args.stand_in:
        base, per = (float(x) for x in args.stand_in.split(","))
        stand_in(engine.generator, base, per)
        res["stand_in_ms"] = [base, per]
        res["device"] += f" (network replaced by a {base:g} ms + {per:g} ms a frame wait: the host side alone)"
    print(res, flush=True)
    if not args.stand_in:
        res["network_fps"] = network_rate(engine.generator)
        print("network frames/s by batch:", res["network_fps"], flush=True)
    res["measured_at_load"] = engine.generator.measure_capacity(25.0).frames_per_s  # as the web app does at load
    res["at_once"] = []
    for n in [int(x) for x in args.at_once.split(",")]:
        r = at_once(engine, n, args.seconds)
        res["at_once"].append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
