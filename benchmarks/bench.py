#!/usr/bin/env python3
"""Speed and memory of lipsync, against the reference inference path, in one process.

    python benchmarks/bench.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/bench.py --quick    # under a minute
    python benchmarks/bench.py --json     # one JSON object instead of the table

Measured on the same inputs and the same deterministic checkpoint
(:func:`lipsync.models.scratch.write_scratch_checkpoint` seed 1234, or ``--checkpoint``):

(a) the reference path: the plain float32 module, batch 128, one full forward per
    frame, as the original Wav2Lip inference;
(b) the project's fast path (folded batch norm, channels-last, face encoder once
    per clip, bf16 on CPUs with native bf16 / fp16 on CUDA): frames/s, the ratio
    to (a), and its max / mean abs difference from float32 on the reference inputs;
(c) end to end through the public API, each clip in its own process so peak RSS is
    the clip's own: the example portrait speaking espeak-ng text for 10 s, 30 s and
    60 s (and again with --frame-step 2); wall time per stage, real-time factor
    (video s / wall s), frames/s, peak RSS while generating (sampled every 10 ms)
    and the process's peak. First-use model loading is timed separately and excluded.

No timing is asserted anywhere; this script only measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT / "tests" / "data" / "reference"
EXAMPLE = ROOT / "assets" / "astronaut.jpg"
TEXT = (
    "Good morning, and thank you for joining us today. We are going to look at how a single "
    "photograph can become a short talking video. First, the words are turned into speech. "
    "Then, for every frame, a small network paints the mouth to match the sound. "
    "Finally, the frames and the voice are put together into a video that plays anywhere. "
)


def peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM; ru_maxrss carries the parent's over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class RssSampler:
    """Highest resident set size seen while the block runs (sampled every 10 ms)."""

    def __enter__(self):
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def get_checkpoint(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    out = tmp / "wav2lip_seed1234.pth"
    from lipsync.models.scratch import write_scratch_checkpoint

    return write_scratch_checkpoint(out, 1234)


def device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def throughput(gen, face, mels, repeats: int = 1) -> float:
    """Frames/s of gen.predict over all of ``mels`` (best of ``repeats``), after a warm-up."""
    import torch

    for _ in gen.predict(face, mels[: min(len(mels), 8)]):
        pass
    best = 0.0
    for _ in range(repeats):
        if gen.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        n = sum(len(b) for b in gen.predict(face, mels))
        if gen.device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, n / (time.perf_counter() - t))
    return best


def network_bench(args, ckpt: Path) -> dict:
    import numpy as np

    from lipsync.runtime.generator import Generator, resolve_device
    from lipsync.models import load_wav2lip

    oracle = np.load(REFERENCE / "oracle_a.npz")
    starts = oracle["chunk_starts"]
    all_mels = np.stack([oracle["mel"][:, s : s + 16] for s in starts]).astype(np.float32)
    n = args.frames
    mels = np.concatenate([all_mels] * (n // len(all_mels) + 1))[:n]
    face = oracle["face_crop_bgr"]
    device = resolve_device(args.device)

    ref = Generator(load_wav2lip(ckpt), device=device, precision="fp32", fast=False, batch_size=128)
    ref_fps = throughput(ref, face, mels, args.repeats)
    del ref

    fast = Generator(load_wav2lip(ckpt), device=device, precision=args.precision, fast=True,
                     batch_size=args.batch_size)  # fmt: skip
    fast_fps = throughput(fast, face, mels, args.repeats)

    fi = oracle["frame_index"]
    sub = np.stack([oracle["mel"][:, s : s + 16] for s in starts[fi]]).astype(np.float32)
    pred = np.concatenate(list(fast.predict(face, sub)))
    diff = np.abs(pred - oracle["prediction_bgr"])
    return {
        "device": device_name(device),
        "frames": n,
        "reference": {"precision": "fp32", "batch_size": 128, "fps": ref_fps},
        "fast": {"precision": fast.precision, "batch_size": fast.batch_size, "fps": fast_fps},
        "speedup": fast_fps / ref_fps,
        "fast_max_abs_diff": float(diff.max()),
        "fast_mean_abs_diff": float(diff.mean()),
        "fast_max_abs_diff_over_255": float(diff.max() * 255),
    }


def e2e_child(seconds: float, ckpt: str, device: str, precision: str, frame_step: int = 1) -> dict:
    """One clip end to end in this (fresh) process; prints a JSON line."""
    from lipsync import GenerateOptions, LipSync
    from lipsync.face import HaarDetector

    t = time.perf_counter()
    engine = LipSync(ckpt, device=device, precision=precision, detector=HaarDetector()).load()
    load_s = time.perf_counter() - t
    rss_loaded = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with RssSampler() as rss:
            r = engine.generate(
                EXAMPLE, out=Path(tmp) / "clip.mp4", options=GenerateOptions(frame_step=frame_step),
                text=TEXT, voice="espeak:en-us", length_s=seconds, loop=True,
            )  # fmt: skip
        wall = time.perf_counter() - t
    return {
        "seconds": seconds,
        "frame_step": frame_step,
        "video_s": r.duration_s,
        "frames": r.frames,
        "speaking_frames": r.speaking_frames,
        "wall_s": wall,
        "rtf": r.duration_s / wall,
        "fps": r.frames / wall,
        "model_load_s": load_s,
        "stages": {k: round(v, 3) for k, v in r.timings.items()},
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_generate_mb": rss.peak_mb,
        "rss_after_load_mb": rss_loaded,
        "device": r.device,
    }


def e2e_bench(args, ckpt: Path) -> list[dict]:
    rows = []
    runs = [(s, 1) for s in args.clips] + [(s, args.frame_step) for s in args.clips if args.frame_step > 1]
    for seconds, step in runs:
        cmd = [sys.executable, __file__, "--child-e2e", str(seconds), "--checkpoint", str(ckpt),
               "--device", args.device, "--precision", args.precision, "--frame-step", str(step)]  # fmt: skip
        env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def table(res: dict) -> str:
    net = res["network"]
    lines = [
        f"device: {net['device']}",
        "",
        "network, same inputs and checkpoint",
        f"  {'path':<10} {'precision':<9} {'batch':>5} {'frames/s':>9} {'ratio':>6}",
        f"  {'reference':<10} {'fp32':<9} {128:>5} {net['reference']['fps']:>9.1f} {1.0:>6.2f}",
        f"  {'fast':<10} {net['fast']['precision']:<9} {net['fast']['batch_size']:>5} "
        f"{net['fast']['fps']:>9.1f} {net['speedup']:>6.2f}",
        f"  fast vs float32 on the reference inputs: max |diff| {net['fast_max_abs_diff']:.2e} "
        f"({net['fast_max_abs_diff_over_255']:.2f}/255), mean {net['fast_mean_abs_diff']:.2e}",
    ]
    if res.get("e2e"):
        lines += ["", "end to end (example portrait, espeak:en-us, one process per clip)"]
        lines.append(
            f"  {'clip':>5} {'step':>4} {'frames':>6} {'spoken':>6} {'wall s':>7} {'RTF':>5} {'fps':>6} "
            f"{'load s':>6} {'RSS MB':>6}  stages (s)"
        )
        for r in res["e2e"]:
            st = " ".join(f"{k}={v:.2f}" for k, v in r["stages"].items() if k != "inference_busy")
            lines.append(
                f"  {r['seconds']:>4.0f}s {r['frame_step']:>4} {r['frames']:>6} {r['speaking_frames']:>6} {r['wall_s']:>7.2f} "
                f"{r['rtf']:>5.2f} {r['fps']:>6.1f} {r['model_load_s']:>6.2f} {r['peak_rss_generate_mb']:>6.0f}  {st}"
            )
        by = {r["seconds"]: r for r in res["e2e"] if r["frame_step"] == 1}
        if 10 in by and 60 in by:
            lines.append(
                f"  peak RSS while generating, 60 s / 10 s: "
                f"{by[60]['peak_rss_generate_mb'] / by[10]['peak_rss_generate_mb']:.3f} "
                f"(process peak incl. loading: {by[10]['peak_rss_mb']:.0f} / {by[60]['peak_rss_mb']:.0f} MB)"
            )
        if 30 in by:
            lines.append(f"  30 s clip wall / 30 s: {by[30]['wall_s'] / 30:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer frames, one short clip: under a minute")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--checkpoint", help="Wav2Lip checkpoint (default: the deterministic seed-1234 one)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    ap.add_argument("--batch-size", type=int, help="fast path batch size (default: the project's)")
    ap.add_argument("--frames", type=int, help="frames per network measurement")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--clips", type=float, nargs="*", help="end-to-end clip lengths in seconds")
    ap.add_argument("--frame-step", type=int, default=2,
                    help="also run the clips with this --frame-step (1 = skip; default 2)")  # fmt: skip
    ap.add_argument("--child-e2e", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_e2e is not None:
        print(json.dumps(e2e_child(args.child_e2e, args.checkpoint, args.device, args.precision, args.frame_step)))
        return 0
    args.frames = args.frames or (48 if args.quick else 256)
    if args.clips is None:
        args.clips = [4.0] if args.quick else [10.0, 30.0, 60.0]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = get_checkpoint(args.checkpoint, Path(tmp))
        res = {"network": network_bench(args, ckpt)}
        res["e2e"] = e2e_bench(args, ckpt) if args.clips else []
    print(json.dumps(res, indent=1) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
