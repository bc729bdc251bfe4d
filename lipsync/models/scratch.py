"""Deterministic random-weight Wav2Lip checkpoints, for tests and benchmarks only.

The published ``wav2lip_gan.pth`` cannot be downloaded everywhere, so the model
contract is pinned with random weights drawn by a fixed recipe: one
``torch.Generator`` seeded with ``seed`` draws, in the checkpoint's key order,
a standard normal tensor for every float entry, shaped into

* ``running_var``: ``1 + 0.1 |noise|``;
* ``running_mean`` and ``.bias``: ``0.05 noise``;
* other 1-D tensors (batch-norm scale): ``1 + 0.05 noise``;
* 4-D kernels: ``noise * sqrt(1 / fan_in)`` with ``fan_in = shape[1] * shape[2] * shape[3]``;

while integer entries (``num_batches_tracked``) are zeros and draw nothing.
Seed 1234 gives the weights the reference outputs in ``tests/data/reference``
were computed with. Nothing in the library uses this file unless asked to:
these weights make a face mumble noise, never a usable video.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .wav2lip import Wav2Lip

__all__ = ["scratch_state_dict", "write_scratch_checkpoint"]


def scratch_state_dict(seed: int = 1234, layout: list[tuple[str, tuple[int, ...], torch.dtype]] | None = None):
    """The random state dict for ``seed`` (keys without the ``module.`` prefix).

    Args:
        seed: the generator's seed.
        layout: ``[(key, shape, dtype)]`` in draw order; default: :class:`Wav2Lip`'s
            own state dict, whose keys and order equal the published checkpoint's.
    """
    if layout is None:
        layout = [(k, tuple(v.shape), v.dtype) for k, v in Wav2Lip().state_dict().items()]
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for key, shape, dtype in layout:
        if dtype == torch.int64:
            out[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        noise = torch.randn(shape, generator=gen)
        if key.endswith("running_var"):
            value = 1.0 + 0.1 * noise.abs()
        elif key.endswith("running_mean") or key.endswith(".bias"):
            value = 0.05 * noise
        elif len(shape) == 1:
            value = 1.0 + 0.05 * noise
        elif len(shape) == 4:
            value = noise * math.sqrt(1.0 / (shape[1] * shape[2] * shape[3]))
        else:
            raise ValueError(f"no rule for {key} of shape {shape}")
        out[key] = value.float()
    return out


def write_scratch_checkpoint(out: str | Path, seed: int = 1234, state_dict: dict | None = None) -> Path:
    """Save a checkpoint in the published file's layout (``module.`` keys, optimizer, steps)."""
    sd = scratch_state_dict(seed) if state_dict is None else state_dict
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": {"module." + k: v for k, v in sd.items()}, "optimizer": {}, "global_step": 0, "global_epoch": 0}
    torch.save(payload, out)
    return out
