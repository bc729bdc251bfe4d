"""GFPGAN v1.4's network ("clean" variant, no compiled ops), written for this project.

GFPGAN (Wang et al., CVPR 2021; TencentARC, Apache-2.0) restores a 512x512
face: a U-Net encoder reads the degraded face and yields one style latent per
decoder layer plus, at every resolution, a spatial scale and shift; a
StyleGAN2 decoder draws the face from the latents and applies the scale and
shift to half of its channels at each resolution (channel-split SFT).

Module and parameter names equal the published checkpoint's (``GFPGANv1.4.pth``,
its ``params_ema`` entry) so it loads with ``strict=True``; the equality of
outputs with the original code on random weights is pinned in
``tests/test_restorer.py``. Only inference is here: no training switches, no
intermediate RGB outputs. The decoder's noise is the checkpoint's stored noise
(deterministic, so a still face does not flicker), where the original draws new
noise on every call by default.

Input and output: (N, 3, S, S) RGB in [-1, 1], S = ``out_size``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GFPGAN", "gfpgan_v14"]

_LEAK = 0.2


def _channels(base: float, multiplier: int) -> dict[int, int]:
    """Feature channels per resolution (4 .. 1024) for ``base`` = 512 * narrow."""
    out = {r: int(base) for r in (4, 8, 16, 32)}
    for r, c in ((64, 256), (128, 128), (256, 64), (512, 32), (1024, 16)):
        out[r] = int(c * multiplier * base / 512)
    return out


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class ResampleBlock(nn.Module):
    """Two 3x3 convolutions with a bilinear 2x resample between them, plus a resampled 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, factor: float):
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._resample(F.leaky_relu(self.conv1(x), _LEAK))
        y = F.leaky_relu(self.conv2(y), _LEAK)
        return y + self.skip(self._resample(x))


class ModulatedConv(nn.Module):
    """StyleGAN2's modulated convolution (per-sample weights, optionally demodulated), no bias."""

    def __init__(self, cin: int, cout: int, k: int, style_dim: int, demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.cin, self.cout, self.k = cin, cout, k
        self.demodulate = demodulate
        self.upsample = upsample
        self.modulation = nn.Linear(style_dim, cin)
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k) / math.sqrt(cin * k * k))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        w = self.weight * self.modulation(style).view(n, 1, self.cin, 1, 1)
        if self.demodulate:
            w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4)) + 1e-8).view(n, self.cout, 1, 1, 1)
        if self.upsample:
            x = _up(x)
        h, wd = x.shape[2:]
        y = F.conv2d(x.reshape(1, n * self.cin, h, wd), w.reshape(n * self.cout, self.cin, self.k, self.k),
                     padding=self.k // 2, groups=n)
        return y.view(n, self.cout, *y.shape[2:])


class StyleLayer(nn.Module):
    """Modulated 3x3 conv, scaled noise, bias, leaky ReLU (x sqrt 2)."""

    def __init__(self, cin: int, cout: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.modulated_conv = ModulatedConv(cin, cout, 3, style_dim, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        y = self.modulated_conv(x, style) * math.sqrt(2.0) + self.weight * noise + self.bias
        return F.leaky_relu(y, _LEAK)


class RGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB (not demodulated) plus bias, added to the upsampled previous RGB."""

    def __init__(self, cin: int, style_dim: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv(cin, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        y = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            y = y + (_up(skip) if self.upsample else skip)
        return y


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))


class Decoder(nn.Module):
    """StyleGAN2 synthesis network with channel-split SFT; the mapping MLP is kept for the checkpoint only.

    GFPGAN v1.4 feeds latents directly (one per layer), so ``style_mlp`` is never
    run; it exists because the published weights carry it.
    """

    def __init__(self, out_size: int, style_dim: int, n_mlp: int, multiplier: int, narrow: float):
        super().__init__()
        ch = _channels(512 * narrow, multiplier)
        mlp: list[nn.Module] = [nn.Identity()]  # index 0: the original's parameter-free normalisation
        for _ in range(n_mlp):
            mlp += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(_LEAK)]
        self.style_mlp = nn.Sequential(*mlp)
        self.log_size = int(math.log2(out_size))
        self.constant_input = ConstantInput(ch[4])
        self.style_conv1 = StyleLayer(ch[4], ch[4], style_dim)
        self.to_rgb1 = RGBLayer(ch[4], style_dim, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        n_layers = 2 * (self.log_size - 2) + 1
        for i in range(n_layers):
            side = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, side, side))
        cin = ch[4]
        for level in range(3, self.log_size + 1):
            cout = ch[2**level]
            self.style_convs.append(StyleLayer(cin, cout, style_dim, upsample=True))
            self.style_convs.append(StyleLayer(cout, cout, style_dim))
            self.to_rgbs.append(RGBLayer(cout, style_dim))
            cin = cout
        self.n_layers = n_layers

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        """``latent``: (N, 2 log2(S) - 2, D); ``conditions``: [scale, shift] per resolution from 8 px up."""
        noise = [getattr(self.noises, f"noise{i}") for i in range(self.n_layers)]
        x = self.constant_input.weight.expand(latent.shape[0], -1, -1, -1)
        x = self.style_conv1(x, latent[:, 0], noise[0])
        rgb = self.to_rgb1(x, latent[:, 1])
        j = 1
        for level, to_rgb in enumerate(self.to_rgbs):
            x = self.style_convs[2 * level](x, latent[:, j], noise[j])
            if 2 * level + 1 < len(conditions):
                keep, tune = x.chunk(2, dim=1)
                x = torch.cat([keep, tune * conditions[2 * level] + conditions[2 * level + 1]], dim=1)
            x = self.style_convs[2 * level + 1](x, latent[:, j + 1], noise[j + 1])
            rgb = to_rgb(x, latent[:, j + 2], rgb)
            j += 2
        return rgb


def _sft_branch(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(_LEAK), nn.Conv2d(c, c, 3, padding=1))


class GFPGAN(nn.Module):
    """GFPGAN v1.4 ("clean" architecture, half-channel SFT, one latent per layer).

    Args:
        out_size: the face side in pixels (512 for the published weights; a power of two).
        style_dim: latent width (512).
        multiplier: channel multiplier of the large resolutions (2).
        n_mlp: layers of the (unused) mapping network kept for the checkpoint (8).
        narrow: channel scale (1); tests use a small value for a tiny network.
    """

    def __init__(self, out_size: int = 512, style_dim: int = 512, multiplier: int = 2, n_mlp: int = 8,
                 narrow: float = 1.0):
        super().__init__()
        if out_size < 8 or out_size & (out_size - 1):
            raise ValueError(f"out_size must be a power of two >= 8, got {out_size}")
        self.out_size = out_size
        self.style_dim = style_dim
        self.log_size = int(math.log2(out_size))
        ch = _channels(512 * narrow * 0.5, multiplier)  # the encoder has half the decoder's channels
        self.conv_body_first = nn.Conv2d(3, ch[out_size], 1)
        self.conv_body_down = nn.ModuleList()
        cin = ch[out_size]
        for level in range(self.log_size, 2, -1):
            self.conv_body_down.append(ResampleBlock(cin, ch[2 ** (level - 1)], 0.5))
            cin = ch[2 ** (level - 1)]
        self.final_conv = nn.Conv2d(cin, ch[4], 3, padding=1)
        self.conv_body_up = nn.ModuleList()
        self.toRGB = nn.ModuleList()  # in the checkpoint; the intermediate RGBs are not computed here
        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        cin = ch[4]
        for level in range(3, self.log_size + 1):
            c = ch[2**level]
            self.conv_body_up.append(ResampleBlock(cin, c, 2))
            self.toRGB.append(nn.Conv2d(c, 3, 1))
            self.condition_scale.append(_sft_branch(c))
            self.condition_shift.append(_sft_branch(c))
            cin = c
        self.n_latent = 2 * self.log_size - 2
        self.final_linear = nn.Linear(ch[4] * 16, self.n_latent * style_dim)
        self.stylegan_decoder = Decoder(out_size, style_dim, n_mlp, multiplier, narrow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.leaky_relu(self.conv_body_first(x), _LEAK)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), _LEAK)
        latent = self.final_linear(feat.flatten(1)).view(x.shape[0], self.n_latent, self.style_dim)
        conditions: list[torch.Tensor] = []
        for up, scale, shift, skip in zip(self.conv_body_up, self.condition_scale, self.condition_shift,
                                          reversed(skips)):
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
        return self.stylegan_decoder(latent, conditions)


def gfpgan_v14() -> GFPGAN:
    """The network with the published ``GFPGANv1.4.pth`` layout (512 px)."""
    return GFPGAN(out_size=512, style_dim=512, multiplier=2, n_mlp=8, narrow=1.0)
