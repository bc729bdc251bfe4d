#!/usr/bin/env python3
"""Speed and memory of lipsync, against the reference inference path, in one process.

    python benchmarks/bench.py            # full run (ten minutes or more on 2 CPU cores)
    python benchmarks/bench.py --quick    # about two minutes
    python benchmarks/bench.py --json     # one JSON object instead of the table

Measured on the same inputs and the same deterministic checkpoint
(:func:`lipsync.models.scratch.write_scratch_checkpoint` seed 1234, or ``--checkpoint``),
for every path this machine has:

* ``reference fp32``: the plain float32 module, batch 128, one full forward per
  frame, as the original Wav2Lip inference;
* ``fast fp32`` / ``fast bf16`` (CPUs with native bf16) / ``fast fp16`` (CUDA): the
  project's fast path (folded batch norm, channels-last, face encoder once per clip);
* ``int8``: the fast path's per-frame graph in int8 with OpenVINO (CPU, when
  installed); its first-use calibration is timed in a fresh process with an empty
  cache, and the clips then run with that cache warm;
* ``<path> video``: each of those paths (but the reference) with a face per frame,
  as a driving video runs it (the face side on every frame), and its cost per frame
  against the same path's photo frame;
* with ``--other-backends`` (default in a full run), backends that were tried and not
  chosen, on the same graph: OpenVINO float32 and ONNX Runtime float32 / int8 (static
  QDQ quantization on the same calibration data), where installed. They get the face
  maps computed beforehand, so each round spares them one face-encoder pass.

(a) network: frames/s through ``Generator.predict`` (or the raw graph for the other
    backends), measured in short rounds that take the paths in rotating order so that
    load from other processes falls on all of them alike (median of the rounds), the ratio to fast
    fp32, and the max / mean abs difference from float32 on the reference inputs
    (every row the path computes, and the mouth rows the blender pastes);
(b) end to end through the public API, each clip in its own process so peak RSS is
    the clip's own: the example portrait speaking espeak-ng text for 10 s, 30 s and
    60 s (and the default path again with --frame-step 2); wall time per stage,
    real-time factor (video s / wall s), frames/s, peak RSS while generating (sampled
    every 10 ms) and the process's peak. Model loading is timed separately and excluded.

No timing is asserted anywhere; this script only measures and prints. The machine's
load average is printed beside the numbers: compare ratios, not absolute rates, on a
busy machine.
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


def library_paths(device, only: list[str] | None = None) -> list[tuple[str, dict]]:
    """(name, Generator keyword arguments) of the paths this machine can run."""
    from lipsync.runtime import int8
    from lipsync.runtime.generator import cpu_has_fast_bf16

    paths = [("reference fp32", {"precision": "fp32", "fast": False, "batch_size": 128})]
    if device.type == "cuda":
        paths.append(("fast fp16", {"precision": "fp16"}))
    else:
        paths.append(("fast fp32", {"precision": "fp32"}))
        if cpu_has_fast_bf16():
            paths.append(("fast bf16", {"precision": "bf16"}))
        if int8.unavailable_reason() is None:
            paths.append(("int8", {"precision": "int8"}))
    return [p for p in paths if not only or p[0] in only]


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class VideoPath:
    """A library path with a face per frame (a driving video): the face side runs on every frame."""

    def __init__(self, gen):
        self.gen, self.batch_size = gen, gen.batch_size

    def predict(self, face, mels):
        return self.gen.predict(lambda i: face, mels)

    def rows_from(self) -> int:
        return self.gen.rows_from()


class GraphPath:
    """Another backend on the fast path's per-frame graph: callable(mels (B,80,16)) -> (B,96,96,3)."""

    def __init__(self, run, maps, batch_size: int = 8):
        self.run, self.maps, self.batch_size = run, maps, batch_size

    def rows_from(self) -> int:
        return 0  # the whole graph

    def predict(self, face, mels):
        import numpy as np

        for i in range(0, len(mels), self.batch_size):
            out = self.run(np.ascontiguousarray(mels[i : i + self.batch_size, None]), self.maps)
            yield np.transpose(out, (0, 2, 3, 1))


def other_backends(ckpt: Path, face) -> dict:
    """OpenVINO fp32 and ONNX Runtime fp32/int8 on the same graph and calibration data."""
    import io

    import torch

    from lipsync.face import model_input
    from lipsync.models import load_wav2lip
    from lipsync.models.loading import fold_batchnorm
    from lipsync.models.still import StillFaceGraph
    from lipsync.runtime import int8
    from lipsync.runtime.calibration import calibration_batches

    model = fold_batchnorm(load_wav2lip(ckpt))
    graph = StillFaceGraph(model).eval()
    with torch.inference_mode():
        maps = [m.numpy() for m in graph.face_maps(model.encode_face(torch.from_numpy(model_input(face))))]
    calib = int8._inputs(model, graph, calibration_batches())
    example = tuple(torch.from_numpy(x) for x in calib[0])
    out: dict = {}
    try:
        import openvino as ov

        shapes = [ov.PartialShape([-1, 1, 80, 16])] + [ov.PartialShape(list(m.shape)) for m in maps]
        with int8._quiet(), torch.inference_mode():
            compiled = int8.Compiled(ov.convert_model(graph, example_input=example, input=shapes))
        out["openvino fp32"] = GraphPath(int8.Int8Network(compiled, None), maps)
    except ImportError:
        pass
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        return out
    names = ["mel"] + [f"map{i}" for i in range(len(maps))]
    buf = io.BytesIO()
    with torch.inference_mode():
        torch.onnx.export(graph, example, buf, input_names=names, output_names=["out"],
                          dynamic_axes={"mel": {0: "batch"}, "out": {0: "batch"}}, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()

    def session(model_bytes):
        s = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        return lambda mel, m: s.run(None, dict(zip(names, [mel, *m])))[0]

    out["onnxruntime fp32"] = GraphPath(session(buf.getvalue()), maps)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calib)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else dict(zip(names, item))

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "g.onnx", Path(tmp) / "g8.onnx"
        src.write_bytes(buf.getvalue())
        t = time.perf_counter()
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "ConvTranspose"])
        out["_onnxruntime_int8_calibration_s"] = time.perf_counter() - t
        out["onnxruntime int8"] = GraphPath(session(dst.read_bytes()), maps)
    return out


def calibrate_child(ckpt: str) -> dict:
    """First use of int8 in a fresh process (the run's cache is still empty): calibration, check, caching."""
    from lipsync.models import load_wav2lip
    from lipsync.runtime.generator import Generator

    t = time.perf_counter()
    model = load_wav2lip(ckpt)
    t_model = time.perf_counter() - t
    t = time.perf_counter()
    gen = Generator(model, device="cpu", precision="int8")
    first = time.perf_counter() - t
    return {"first_use_s": first, "read_checkpoint_s": t_model, "peak_rss_mb": peak_rss_mb(),
            "description": gen.description}


def network_bench(args, ckpt: Path) -> dict:
    import statistics

    import numpy as np

    from lipsync.models import load_wav2lip
    from lipsync.runtime import int8
    from lipsync.runtime.generator import Generator, resolve_device

    oracle = np.load(REFERENCE / "oracle_a.npz")
    starts = oracle["chunk_starts"]
    all_mels = np.stack([oracle["mel"][:, s : s + 16] for s in starts]).astype(np.float32)
    n = args.frames
    mels = np.concatenate([all_mels] * (n // len(all_mels) + 1))[:n]
    face = oracle["face_crop_bgr"]
    fi = oracle["frame_index"]
    sub = np.stack([oracle["mel"][:, s : s + 16] for s in starts[fi]]).astype(np.float32)
    device = resolve_device(args.device)
    res: dict = {"device": device_name(device), "frames": n, "load_before": load_avg(), "paths": {}}

    calibration = None
    paths = library_paths(device, args.paths)
    if any(name == "int8" for name, _ in paths):  # first use in a fresh process, empty cache
        cmd = [sys.executable, __file__, "--child-calibrate", "--checkpoint", str(ckpt)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        calibration = json.loads(done.stdout.strip().splitlines()[-1])
    res["int8_first_use"] = calibration

    gens = {}
    for name, kw in paths:
        kw = dict(kw)
        if args.batch_size and name != "reference fp32":
            kw["batch_size"] = args.batch_size
        t = time.perf_counter()
        gens[name] = Generator(load_wav2lip(ckpt), device=device, **kw)
        res["paths"][name] = {"precision": gens[name].precision, "batch_size": gens[name].batch_size,
                              "load_s": time.perf_counter() - t, "description": gens[name].description}
        net = getattr(gens[name], "_int8", None)
        if net is not None and net.compiled.streams > 1:  # the baseline for splitting a batch over streams
            whole = Generator(load_wav2lip(ckpt), device=device, **kw)
            for compiled in (whole._int8.compiled, whole._int8.face and whole._int8.face.compiled):
                if compiled:
                    compiled.parallel = False
            gens[f"{name} 1 stream"] = whole
            res["paths"][f"{name} 1 stream"] = {
                "precision": whole.precision, "batch_size": whole.batch_size, "load_s": None,
                "description": f"{whole.description}; every batch whole on one request, not split over "
                               f"{net.compiled.streams} streams"}
    for name in [n for n in gens if n != "reference fp32"]:  # the same paths driven by a video
        gens[f"{name} video"] = VideoPath(gens[name])
        res["paths"][f"{name} video"] = dict(res["paths"][name], load_s=None,
                                             description=f"{name}, a face per frame (a driving video)")
    if args.other_backends and device.type == "cpu":
        others = other_backends(ckpt, face)
        res["onnxruntime_int8_calibration_s"] = others.pop("_onnxruntime_int8_calibration_s", None)
        for name, path in others.items():
            gens[name] = path
            res["paths"][name] = {"precision": name.split()[-1], "batch_size": path.batch_size, "load_s": None,
                                  "description": name}

    for name, gen in gens.items():  # accuracy on the reference inputs, and a warm-up
        pred = np.concatenate(list(gen.predict(face, sub)))
        # the rows the path computes: the fast paths compute the mouth's rows only, and give the face's own above
        whole = np.abs(pred - oracle["prediction_bgr"])
        diff, mouth = whole[:, gen.rows_from():], whole[:, int8.CHECK_ROWS]
        res["paths"][name].update(
            max_255=float(diff.max() * 255),
            mean_255=float(diff.mean() * 255),
            mouth_max_255=float(mouth.max() * 255),
            mouth_mean_255=float(mouth.mean() * 255),
        )
    times: dict[str, list[float]] = {k: [] for k in gens}
    order = list(gens)
    for r in range(args.repeats):  # short rounds, the paths in rotating order: load from elsewhere falls on all alike
        for name in order[r % len(order) :] + order[: r % len(order)]:
            gen = gens[name]
            if device.type == "cuda":
                import torch

                torch.cuda.synchronize()
            t = time.perf_counter()
            count = sum(len(b) for b in gen.predict(face, mels))
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t) / count)
    base = "fast fp32" if "fast fp32" in gens else next(k for k in gens if k.startswith("fast"))
    for name in gens:
        res["paths"][name]["fps"] = 1.0 / statistics.median(times[name])
    for name in gens:
        res["paths"][name]["ratio"] = res["paths"][name]["fps"] / res["paths"][base]["fps"]
    res["baseline"] = base
    res["video_cost"] = {  # a video frame's cost in photo frames, same path, same process
        name: res["paths"][name]["fps"] / res["paths"][f"{name} video"]["fps"]
        for name in gens if f"{name} video" in gens
    }
    res["load_after"] = load_avg()
    return res


def e2e_child(seconds: float, ckpt: str, device: str, precision: str, frame_step: int = 1, fast: bool = True) -> dict:
    """One clip end to end in this (fresh) process; prints a JSON line."""
    from lipsync import GenerateOptions, LipSync
    from lipsync.face import HaarDetector

    t = time.perf_counter()
    engine = LipSync(ckpt, device=device, precision=precision, detector=HaarDetector(), fast=fast).load()
    load_s = time.perf_counter() - t
    rss_loaded = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with RssSampler() as rss:
            r = engine.generate(
                EXAMPLE, out=Path(tmp) / "clip.mp4", options=GenerateOptions(frame_step=frame_step),
                text=TEXT, voice="espeak:en-us", length_s=seconds, loop=True,
            )
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
    from lipsync.runtime.generator import resolve_device

    rows = []
    paths = [(name, kw) for name, kw in library_paths(resolve_device(args.device), args.paths)]
    runs = [(name, kw, s, 1) for name, kw in paths for s in args.clips]
    if args.frame_step > 1:  # the default path again, drawing every n-th frame
        default = "int8" if any(n == "int8" for n, _ in paths) else paths[-1][0]
        runs += [(name, kw, s, args.frame_step) for name, kw in paths if name == default for s in args.clips]
    for name, kw, seconds, step in runs:
        cmd = [sys.executable, __file__, "--child-e2e", str(seconds), "--checkpoint", str(ckpt),
               "--device", args.device, "--precision", kw["precision"], "--frame-step", str(step)]
        if not kw.get("fast", True):
            cmd.append("--child-reference")
        env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        row = json.loads(out.strip().splitlines()[-1])
        row["path"], row["load"] = name, load_avg()
        rows.append(row)
    return rows


def table(res: dict) -> str:
    net = res["network"]
    lines = [
        f"device: {net['device']}",
        f"load average (1, 5, 15 min): {net['load_before']} before, {net['load_after']} after the network runs",
        "",
        f"network, same inputs and checkpoint ({net['frames']} frames per round; ratio to {net['baseline']})",
        f"  {'path':<20} {'batch':>5} {'frames/s':>9} {'ratio':>6}  {'|diff| from float32, /255: max':>30} "
        f"{'mean':>6} {'mouth max':>9} {'mean':>6}",
    ]
    for name, p in net["paths"].items():
        lines.append(
            f"  {name:<20} {p['batch_size']:>5} {p['fps']:>9.1f} {p['ratio']:>6.2f}  {p['max_255']:>30.2f} "
            f"{p['mean_255']:>6.3f} {p['mouth_max_255']:>9.2f} {p['mouth_mean_255']:>6.3f}"
        )
    for name, p in net["paths"].items():
        if p["description"] != name:
            lines.append(f"  {name}: {p['description']}")
    for name, ratio in net.get("video_cost", {}).items():
        lines.append(f"  {name}: a video frame costs {ratio:.2f}x a photo frame")
    cal = net.get("int8_first_use")
    if cal:
        lines.append(
            f"  int8 first use (fresh process, empty cache): {cal['first_use_s']:.1f} s to calibrate, check "
            f"and cache; process peak RSS {cal['peak_rss_mb']:.0f} MB"
        )
    if "int8" in net["paths"] and net["paths"]["int8"]["load_s"] is not None:
        load_s = net["paths"]["int8"]["load_s"]
        lines.append(f"  int8 load with a warm cache (hash weights, verify, compile): {load_s:.2f} s")
    if net.get("onnxruntime_int8_calibration_s"):
        lines.append(f"  onnxruntime int8 static quantization: {net['onnxruntime_int8_calibration_s']:.1f} s")
    if res.get("e2e"):
        lines += ["", "end to end (example portrait, espeak:en-us, one process per clip, cache warm)"]
        lines.append(
            f"  {'path':<15} {'clip':>5} {'step':>4} {'frames':>6} {'spoken':>6} {'wall s':>7} {'RTF':>5} {'fps':>6} "
            f"{'load s':>6} {'RSS MB':>6} {'peak':>6}  {'load avg':<15} stages (s)"
        )
        for r in res["e2e"]:
            st = " ".join(f"{k}={v:.2f}" for k, v in r["stages"].items() if k != "inference_busy")
            lines.append(
                f"  {r['path']:<15} {r['seconds']:>4.0f}s {r['frame_step']:>4} {r['frames']:>6} "
                f"{r['speaking_frames']:>6} "
                f"{r['wall_s']:>7.2f} {r['rtf']:>5.2f} {r['fps']:>6.1f} {r['model_load_s']:>6.2f} "
                f"{r['peak_rss_generate_mb']:>6.0f} {r['peak_rss_mb']:>6.0f}  {r['load']:<15} {st}"
            )
        for path in dict.fromkeys(r["path"] for r in res["e2e"]):
            by = {r["seconds"]: r for r in res["e2e"] if r["frame_step"] == 1 and r["path"] == path}
            if 10 in by and 60 in by:
                lines.append(
                    f"  {path}: peak RSS while generating, 60 s / 10 s: "
                    f"{by[60]['peak_rss_generate_mb'] / by[10]['peak_rss_generate_mb']:.3f}"
                )
            if 30 in by:
                lines.append(f"  {path}: 30 s clip, every frame drawn: {by[30]['wall_s']:.1f} s ({by[30]['device']})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer frames, one short clip, no other backends: about 2 min")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--checkpoint", help="Wav2Lip checkpoint (default: the deterministic seed-1234 one)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--paths", nargs="*", help="only these paths (names as in the table, e.g. 'fast fp32' int8)")
    ap.add_argument("--batch-size", type=int, help="fast path batch size (default: the project's)")
    ap.add_argument("--frames", type=int, help="frames per network measurement round")
    ap.add_argument("--repeats", type=int, help="network measurement rounds (default 12, --quick 4)")
    ap.add_argument("--clips", type=float, nargs="*", help="end-to-end clip lengths in seconds")
    ap.add_argument("--frame-step", type=int, default=2,
                    help="also run the default path's clips with this --frame-step (1 = skip; default 2)")
    ap.add_argument("--other-backends", action=argparse.BooleanOptionalAction, default=None,
                    help="also measure OpenVINO fp32, ONNX Runtime fp32/int8 (default on; off with --quick)")
    ap.add_argument("--child-e2e", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--child-reference", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-calibrate", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help=argparse.SUPPRESS)  # for the children
    args = ap.parse_args(argv)
    if args.child_calibrate:
        print(json.dumps(calibrate_child(args.checkpoint)))
        return 0
    if args.child_e2e is not None:
        row = e2e_child(args.child_e2e, args.checkpoint, args.device, args.precision, args.frame_step,
                        fast=not args.child_reference)
        print(json.dumps(row))
        return 0
    args.frames = args.frames or (24 if args.quick else 48)
    args.repeats = args.repeats or (4 if args.quick else 12)
    if args.other_backends is None:
        args.other_backends = not args.quick
    if args.clips is None:
        args.clips = [4.0] if args.quick else [10.0, 30.0, 60.0]
    with tempfile.TemporaryDirectory() as tmp:
        # an empty cache of this run's own: int8 calibrates once, timed in a fresh process,
        # and every later process of the run finds it warm
        os.environ["LIPSYNC_CACHE"] = str(Path(tmp) / "cache")
        ckpt = get_checkpoint(args.checkpoint, Path(tmp))
        res = {"network": network_bench(args, ckpt)}
        res["e2e"] = e2e_bench(args, ckpt) if args.clips else []
    print(json.dumps(res, indent=1) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
