"""The Wav2Lip generator network (Prajwal et al., 2020) as a plain ``nn.Module``.

Only tensors go in and out: no paths, devices or pre-processing here. The
attribute names reproduce the published checkpoint's ``state_dict`` keys so that
``wav2lip_gan.pth`` loads with ``strict=True``.

Shapes:
    mel:   (B, 1, 80, 16) float  -- one 16-column window of the normalised mel spectrogram
    faces: (B, 6, 96, 96) float  -- [masked crop, reference crop], BGR, in [0, 1]
    out:   (B, 3, 96, 96) float  -- BGR in [0, 1]
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Wav2Lip", "ConvBN", "ConvTransposeBN"]


class ConvBN(nn.Module):
    """Convolution, batch norm, optional identity shortcut, then ReLU."""

    def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class ConvTransposeBN(nn.Module):
    """Transposed convolution, batch norm, then ReLU."""

    def __init__(self, cin, cout, kernel_size, stride, padding, output_padding=0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(c: int) -> ConvBN:
    return ConvBN(c, c, 3, 1, 1, residual=True)


class Wav2Lip(nn.Module):
    """Audio encoder + face encoder (U-Net skip features) + face decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBN(6, 16, 7, 1, 3)),  # 96
                nn.Sequential(ConvBN(16, 32, 3, 2, 1), _res(32), _res(32)),  # 48
                nn.Sequential(ConvBN(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),  # 24
                nn.Sequential(ConvBN(64, 128, 3, 2, 1), _res(128), _res(128)),  # 12
                nn.Sequential(ConvBN(128, 256, 3, 2, 1), _res(256), _res(256)),  # 6
                nn.Sequential(ConvBN(256, 512, 3, 2, 1), _res(512)),  # 3
                nn.Sequential(ConvBN(512, 512, 3, 1, 0), ConvBN(512, 512, 1, 1, 0)),  # 1
            ]
        )
        self.audio_encoder = nn.Sequential(
            ConvBN(1, 32, 3, 1, 1), _res(32), _res(32),
            ConvBN(32, 64, 3, (3, 1), 1), _res(64), _res(64),
            ConvBN(64, 128, 3, 3, 1), _res(128), _res(128),
            ConvBN(128, 256, 3, (3, 2), 1), _res(256),
            ConvBN(256, 512, 3, 1, 0), ConvBN(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBN(512, 512, 1, 1, 0)),  # 1
                nn.Sequential(ConvTransposeBN(1024, 512, 3, 1, 0), _res(512)),  # 3
                nn.Sequential(ConvTransposeBN(1024, 512, 3, 2, 1, 1), _res(512), _res(512)),  # 6
                nn.Sequential(ConvTransposeBN(768, 384, 3, 2, 1, 1), _res(384), _res(384)),  # 12
                nn.Sequential(ConvTransposeBN(512, 256, 3, 2, 1, 1), _res(256), _res(256)),  # 24
                nn.Sequential(ConvTransposeBN(320, 128, 3, 2, 1, 1), _res(128), _res(128)),  # 48
                nn.Sequential(ConvTransposeBN(160, 64, 3, 2, 1, 1), _res(64), _res(64)),  # 96
            ]
        )
        self.output_block = nn.Sequential(
            ConvBN(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, 1, 1, 0),
            nn.Sigmoid(),
        )

    def encode_face(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """Face-encoder skip features, shallowest first: a list of 7 tensors."""
        feats = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 16) -> (B, 512, 1, 1)."""
        return self.audio_encoder(mel)

    def decode(self, audio_embedding: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """Run the decoder from an audio embedding and face features.

        ``feats`` may have batch size 1 (one still face for every frame): it is
        broadcast to the audio batch, which is what lets a still portrait's
        face encoder run once per clip.
        """
        b = audio_embedding.shape[0]
        x = audio_embedding
        for block, skip in zip(self.face_decoder_blocks, reversed(feats)):
            x = block(x)
            if skip.shape[0] != b:
                skip = skip.expand(b, -1, -1, -1)
            x = torch.cat((x, skip), dim=1)
        return self.output_block(x)

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode_audio(mel), self.encode_face(faces))
