"""Load a Wav2Lip checkpoint safely and, if asked, prepare it for fast inference."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from .wav2lip import ConvBN, ConvTransposeBN, Wav2Lip

__all__ = ["load_wav2lip", "read_state_dict", "fold_batchnorm"]

log = logging.getLogger("lipsync")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors with ``torch.load(weights_only=True)``.

    Accepts the published layout (``{"state_dict": {...}}``) or a bare state
    dict, with or without the ``module.`` prefix that DataParallel adds.

    Raises:
        WeightsError: the file is missing, is not a PyTorch weights file, or
            holds anything but tensors (arbitrary pickles are refused).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"The checkpoint file {path} does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse an untrusted file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{path} is not a usable Wav2Lip weights file ({first[:200]}). "
            "Only plain PyTorch weight files are loaded; download wav2lip_gan.pth again "
            "or point --checkpoint / LIPSYNC_CHECKPOINT at the right file."
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not contain a Wav2Lip state_dict.")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_wav2lip(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    fuse: bool = False,
    channels_last: bool = False,
) -> Wav2Lip:
    """Build :class:`Wav2Lip` and load the checkpoint at ``path`` with ``strict=True``.

    Args:
        path: a ``wav2lip.pth`` / ``wav2lip_gan.pth`` file.
        device: where the module is placed.
        dtype: parameter dtype (float32 unless you know the device handles others).
        fuse: fold every batch norm into its convolution (same function, fewer ops).
        channels_last: store 4-D weights in channels-last memory format.

    Returns:
        The module in eval mode with ``requires_grad`` off.

    Raises:
        WeightsError: unreadable file, missing/unexpected keys or wrong shapes.
    """
    state = read_state_dict(path)
    model = Wav2Lip()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} with the wrong shape (first: {wrong[0]})")
        raise WeightsError(
            f"{path} is not a Wav2Lip generator checkpoint: "
            + "; ".join(parts)
            + ". Use wav2lip_gan.pth or wav2lip.pth (not the SyncNet or discriminator file)."
        )
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    if fuse:
        fold_batchnorm(model)
    model.to(device=device, dtype=dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _fold(conv: nn.Module, bn: nn.BatchNorm2d, out_dim: int) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = [1] * conv.weight.dim()
    shape[out_dim] = -1
    conv.weight.data = conv.weight.data * scale.reshape(shape)
    bias = conv.bias.data if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm2d into the convolution before it, in place.

    Convolution weights are (out, in, k, k) and transposed convolution weights
    (in, out, k, k), so the per-channel scale goes on dim 0 or dim 1.
    """
    for m in model.modules():
        if isinstance(m, (ConvBN, ConvTransposeBN)) and isinstance(m.conv_block[1], nn.BatchNorm2d):
            conv, bn = m.conv_block[0], m.conv_block[1]
            _fold(conv, bn, out_dim=1 if isinstance(conv, nn.ConvTranspose2d) else 0)
            m.conv_block[1] = nn.Identity()
    return model
