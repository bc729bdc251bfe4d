"""Regenerate ``gfpgan_tiny.npz`` and ``gfpgan_v14_state_dict.tsv`` from the ORIGINAL GFPGAN code.

Not run by the tests (they read the stored files). To rerun, offline once the wheels are here::

    pip download --no-deps gfpgan==1.3.8 -d /tmp/gfp && unzip -o /tmp/gfp/gfpgan-1.3.8-py3-none-any.whl -d /tmp/gfp/src
    python tests/data/restorer/make_reference.py /tmp/gfp/src

Only the two architecture files are imported (``gfpgan/archs/gfpganv1_clean_arch.py`` and
``stylegan2_clean_arch.py``); basicsr's registry and init helper are replaced by small
stand-ins, because importing basicsr wholesale fails on current torchvision.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TINY = dict(out_size=64, num_style_feat=16, channel_multiplier=2, num_mlp=2, narrow=1 / 32)
V14 = dict(out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8, narrow=1)
SEED = 2024


def load_original(src: Path):
    registry = types.ModuleType("basicsr.utils.registry")
    registry.ARCH_REGISTRY = types.SimpleNamespace(register=lambda: (lambda cls: cls))
    arch_util = types.ModuleType("basicsr.archs.arch_util")
    arch_util.default_init_weights = lambda *a, **k: None  # init only; the weights are replaced
    for name in ("basicsr", "basicsr.utils", "basicsr.archs"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["basicsr.utils.registry"] = registry
    sys.modules["basicsr.archs.arch_util"] = arch_util
    pkg = types.ModuleType("gfparchs")
    pkg.__path__ = [str(src / "gfpgan" / "archs")]
    sys.modules["gfparchs"] = pkg
    for mod in ("stylegan2_clean_arch", "gfpganv1_clean_arch"):
        spec = importlib.util.spec_from_file_location(f"gfparchs.{mod}", src / "gfpgan" / "archs" / f"{mod}.py")
        m = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = m
        spec.loader.exec_module(m)
    return sys.modules["gfparchs.gfpganv1_clean_arch"].GFPGANv1Clean


def build(cls, cfg):
    # the configuration GFPGANer uses for v1.4 (arch="clean")
    return cls(decoder_load_path=None, fix_decoder=False, input_is_latent=True, different_w=True, sft_half=True,
               **cfg)


def random_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights drawn in state-dict order: kernels/matrices scaled by fan-in, modulation biases near 1."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        n = torch.randn(v.shape, generator=gen)
        if k.endswith("modulated_conv.weight"):
            out[k] = n / math.sqrt(math.prod(v.shape[2:]))
        elif k.endswith("modulation.bias"):
            out[k] = 1.0 + 0.1 * n
        elif ".noises." in k:
            out[k] = n
        elif k.endswith("constant_input.weight"):
            out[k] = n
        elif v.ndim >= 2 and not k.endswith(".bias"):
            out[k] = n / math.sqrt(math.prod(v.shape[1:]))
        else:  # biases and the noise strengths
            out[k] = 0.1 * n
    return out


def main(src: str) -> None:
    cls = load_original(Path(src))
    with torch.device("meta"):
        full = build(cls, V14)
    lines = [f"{k}\t{','.join(map(str, v.shape))}" for k, v in full.state_dict().items()]
    (HERE / "gfpgan_v14_state_dict.tsv").write_text("\n".join(lines) + "\n")

    model = build(cls, TINY).eval()
    state = random_state(model, SEED)
    model.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, TINY["out_size"], TINY["out_size"], generator=torch.Generator().manual_seed(SEED + 1)) * 2 - 1
    with torch.no_grad():
        y, _ = model(x, return_rgb=False, randomize_noise=False)
    arrays = {f"w/{k}": v.numpy() for k, v in state.items()}
    np.savez_compressed(HERE / "gfpgan_tiny.npz", input=x.numpy(), output=y.numpy(), **arrays)
    print("output", tuple(y.shape), float(y.abs().mean()), "params", sum(v.numel() for v in state.values()))


if __name__ == "__main__":
    main(sys.argv[1])
