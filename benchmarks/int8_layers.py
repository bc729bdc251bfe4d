#!/usr/bin/env python3
"""Which layers of the int8 network cost accuracy: the measurements behind lipsync.runtime.int8's recipe.

    python benchmarks/int8_layers.py                       # seed-1234 random weights
    python benchmarks/int8_layers.py --checkpoint wav2lip_gan.pth
    python benchmarks/int8_layers.py --per-layer           # also one convolution at a time (slow: ~35 quantizations)

On the same calibration and held-out data as the library (lipsync.runtime.calibration),
each variant is quantized with NNCF and compared with float32 over the rows the blender
pastes (the numbers lipsync's check uses), and its speed is measured against all-int8 in
alternating rounds:

* ``adds int8``: additions quantized too (NNCF's default);
* ``recipe``: the library's choice, every convolution int8, additions in float;
* ``output conv float`` / ``96px stage float``: the last convolution, or every
  convolution at 96x96, kept in float as well;
* with ``--per-layer``: only one convolution int8 at a time, everything else float,
  which ranks the layers by the error each one brings alone.

It prints; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="Wav2Lip checkpoint (default: the deterministic seed-1234 one)")
    ap.add_argument("--per-layer", action="store_true", help="also quantize one convolution at a time")
    ap.add_argument("--rounds", type=int, default=15, help="speed rounds (default 15)")
    args = ap.parse_args(argv)

    import nncf
    import numpy as np
    import openvino as ov
    import torch

    from lipsync.models import load_wav2lip
    from lipsync.models.loading import fold_batchnorm
    from lipsync.models.scratch import write_scratch_checkpoint
    from lipsync.models.still import StillFaceGraph
    from lipsync.runtime import int8
    from lipsync.runtime.calibration import calibration_batches, heldout_batches

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or write_scratch_checkpoint(Path(tmp) / "seed1234.pth", 1234)
        model = fold_batchnorm(load_wav2lip(ckpt))
    graph = StillFaceGraph(model).eval()
    calib = int8._inputs(model, graph, calibration_batches())
    held = int8._inputs(model, graph, heldout_batches())
    refs = [int8._float32(graph, x) for x in held]
    shapes = [ov.PartialShape([-1, 1, 80, 16])] + [ov.PartialShape(list(m.shape)) for m in calib[0][1:]]
    with int8._quiet(), torch.inference_mode():
        ov_model = ov.convert_model(graph, example_input=tuple(torch.from_numpy(x) for x in calib[0]), input=shapes)
    convs = [op.get_friendly_name() for op in ov_model.get_ordered_ops()
             if op.get_type_name() in ("Convolution", "ConvolutionBackpropData")]

    def build(ignored: nncf.IgnoredScope | None):
        with int8._quiet():
            q = nncf.quantize(ov_model, nncf.Dataset(calib), subset_size=len(calib), ignored_scope=ignored)
        net = int8.Int8Network(int8.Compiled(q), None)
        diff = np.concatenate([np.abs(net(x[0], x[1:]) - r) for x, r in zip(held, refs)])
        return net, int8.judge(diff)

    def scope(names=()):
        return nncf.IgnoredScope(types=["Add"], names=list(names), validate=False)

    at96 = ("output.0", "x_convs.6", "x_convs.5", "rests.5.")
    variants = {
        "adds int8": None,
        "map adds float": nncf.IgnoredScope(patterns=[r"^aten::add/Add(_\d+)?$"], validate=False),
        "recipe": scope(),
        "output conv float": scope(c for c in convs if "output.0" in c),
        "96px stage float": scope(c for c in convs if any(k in c for k in at96)),
    }
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    nets = {}
    for name, ignored in variants.items():
        nets[name], check = build(ignored)
        print(f"  {name:<18} mouth |diff| max {check.max_255:6.2f}/255 mean {check.mean_255:.3f}/255", flush=True)
    mel = held[0][0]
    times = {k: [] for k in nets}
    order = list(nets)
    for r in range(args.rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            t = time.perf_counter()
            nets[name](mel, held[0][1:])
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["recipe"])
    print("  speed relative to the recipe: "
          + ", ".join(f"{k} {base / statistics.median(v):.2f}" for k, v in times.items()))
    if args.per_layer:
        print("one convolution int8 at a time (everything else float):")
        for c in convs:
            _, check = build(scope(x for x in convs if x != c))
            print(f"  {c:<64} max {check.max_255:6.2f}/255 mean {check.mean_255:.3f}/255", flush=True)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
