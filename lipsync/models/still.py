"""Wav2Lip's decoder specialised to a face: its share computed once, the mouth's rows only.

Every decoder stage concatenates its output with a face-encoder feature map
and feeds the result to a convolution. A convolution is linear in its input
channels, so ``conv(cat(x, f)) = conv_x(x) + conv_f(f)``; for a still portrait
``f`` is the same for every frame, so ``conv_f(f)`` (with the bias) is
computed once here and each frame only pays for ``conv_x(x)``. That skips the
face channels' share of those convolutions (about 6 % of the network's
multiply-adds) and the concatenation copies, with the same result up to float
rounding. A video's frames take the same split with a face per window.

Only the rows that reach the video are computed (:data:`MOUTH_FROM` on): the
blender's mask is zero above them, and the decoder's last, largest stages are
most of its work.

Expects batch norm already folded (see :func:`lipsync.models.loading.fold_batchnorm`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .wav2lip import ConvBN, ConvTransposeBN, Wav2Lip

__all__ = ["FaceSideGraph", "FaceDecoder", "StillFaceGraph", "MOUTH_FROM"]

#: The first row of the 96x96 output that :meth:`StillFaceGraph.mouth` computes. The blender's feather
#: mask is zero above 0.42 of the face's height (row 40); 8 rows more cover the few rows above it that a
#: resize to the face box reads (2 rows bilinear, 4 bicubic, 8 Lanczos, a small box's area average).
MOUTH_FROM = 32


def _split_apply(layer: nn.Module, face: torch.Tensor, w_x: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight for the decoded channels, bias map = conv of the face channels + bias). ``w_x``: that
    weight from an earlier split of the same layer (it does not depend on the face): not copied again."""
    conv = layer.conv_block[0]
    c_face = face.shape[1]
    if isinstance(conv, nn.ConvTranspose2d):  # weight (in, out, k, k)
        c_x = conv.weight.shape[0] - c_face
        x_part, w_f = conv.weight[:c_x], conv.weight[c_x:]
        fmap = F.conv_transpose2d(face, w_f, conv.bias, conv.stride, conv.padding, conv.output_padding)
    else:  # weight (out, in, k, k)
        c_x = conv.weight.shape[1] - c_face
        x_part, w_f = conv.weight[:, :c_x], conv.weight[:, c_x:]
        fmap = F.conv2d(face, w_f, conv.bias, conv.stride, conv.padding)
    if w_x is None:
        fmt = torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last) else None
        w_x = x_part.contiguous(memory_format=fmt) if fmt is not None else x_part.contiguous()
    return w_x, fmap


def _row_plan(stages: list[tuple[nn.Module, int]], rows_from: int) -> tuple[list[int], list[int]]:
    """Per decoder stage after the first (its first convolution, how many residual 3x3 convolutions follow
    it): the first row of the stage's input to keep so that the output's rows from ``rows_from`` on come out
    exact, planned from the output back (see :meth:`StillFaceGraph.mouth`); and the first row of each skip
    convolution's output (the stages', then the output block's): where the face's maps start."""
    need = rows_from - 1  # the output block's 3x3 convolution reads one row above
    starts = []
    for conv, residuals in reversed(stages):
        need -= residuals  # each residual 3x3 convolution, one row above
        # a stride-1 stage (3 -> 3 rows, padding 0) and any stage needing all of its rows keep them all
        starts.append(max(0, need // 2) if conv.stride[0] == 2 and conv.padding[0] == 1 else 0)
        need = starts[-1]
    starts.reverse()
    a, map_rows = 0, []
    for (conv, _), start in zip(stages, starts):
        a = max(a, start)
        a *= 2 if conv.stride[0] == 2 else 1  # rows from a -> rows from 2a, exactly
        map_rows.append(a)
    return starts, map_rows + [a]


def _decode(x: torch.Tensor, stages: list[Callable], starts: list[int], map_rows: list[int], output: Callable,
            rows_from: int) -> torch.Tensor:
    """The decoder's walk down the rows, shared by :class:`FaceDecoder` and :class:`StillFaceGraph`.

    ``x``: the first block's output (all of its rows); ``stages``: per later stage, the stage (its skip
    convolution plus the face's map, then its residual convolutions); ``starts``, ``map_rows``: the plan
    (:func:`_row_plan`): where each stage's input is cut, and the first row of each stage's output;
    ``output(x)``: the output block.

    A stage's input is cut once, to the row its plan starts at. Each 3x3 convolution of rows that start below
    the top reads padding instead of the row above, so its first row is wrong; those rows are carried to the
    next cut rather than dropped after every convolution (which cost a copy each: about a tenth of the int8
    network's time). The plan keeps them out of every row that is returned.
    """
    a = 0  # x holds the rows from a on
    for stage, start, row in zip(stages, starts, map_rows):
        if start > a:
            x = x[:, :, start - a :]
        x, a = stage(x), row
    return output(x)[:, :, rows_from - a :]


def _check_folded(model: Wav2Lip) -> None:
    """ValueError unless batch norm is folded into the convolutions (the split weights assume it)."""
    for m in model.modules():
        if isinstance(m, (ConvBN, ConvTransposeBN)) and not isinstance(m.conv_block[1], nn.Identity):
            raise ValueError("fold batch norm into the convolutions first")


class FaceDecoder(nn.Module):
    """``decode(audio_embedding)`` for one face: (B, 512, 1, 1) -> (B, 3, 96 - rows_from, 96).

    With ``rows_from`` (:data:`MOUTH_FROM`, as :meth:`StillFaceGraph.mouth`), only the output's
    rows from there down are computed: the rows above never reach the video (the generator puts
    the face's own pixels there). 0: the whole crop.

    The face may also be a batch of B faces, one per window (a driving video's frames: ``feats``
    of batch B). ``weights``: :attr:`weights` of an earlier decoder of the same model
    (the decoded channels' share of each skip convolution), so that they are not copied again.
    """

    def __init__(self, model: Wav2Lip, feats: list[torch.Tensor], rows_from: int = 0,
                 weights: list[torch.Tensor] | None = None):
        super().__init__()
        if weights is None:  # (weights come from a decoder of this model that passed this check)
            _check_folded(model)
        self.model = model
        blocks = model.face_decoder_blocks
        self.rows_from = rows_from
        self._starts, self._map_rows = _row_plan([(b[0].conv_block[0], len(b) - 1) for b in blocks[1:]], rows_from)
        # block i (i >= 1) reads cat(x, feats[7 - i]); the output block reads cat(x, feats[0])
        self._weights: list[torch.Tensor] = []
        self._maps: list[torch.Tensor] = []  # from the row its stage starts at (a view)
        skips = [(blocks[i][0], feats[len(feats) - i]) for i in range(1, len(blocks))]
        skips.append((model.output_block[0], feats[0]))
        for k, ((layer, feat), row) in enumerate(zip(skips, self._map_rows)):
            w, fmap = _split_apply(layer, feat, None if weights is None else weights[k])
            self._weights.append(w)
            self._maps.append(fmap[:, :, row:])

    @property
    def weights(self) -> list[torch.Tensor]:
        """The decoded channels' weights, the same for every face (see ``weights`` above)."""
        return self._weights

    @classmethod
    def stacked(cls, parts: list[tuple["FaceDecoder", int]]) -> "FaceDecoder":
        """One decoder for several faces of one model, face ``i`` for ``n_i`` windows in a row:
        ``decode`` of the stacked embeddings gives each face's mouths in order (live sessions
        batched together)."""
        first = parts[0][0]
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        out.model, out._weights = first.model, first._weights
        out.rows_from, out._starts, out._map_rows = first.rows_from, first._starts, first._map_rows
        out._maps = [
            torch.cat([d._maps[k].expand(n, *d._maps[k].shape[1:]) for d, n in parts])
            for k in range(len(first._maps))
        ]
        return out

    def _first(self, layer: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
        """A skip convolution's decoded channels on ``x`` plus the face's map."""
        conv = layer.conv_block[0]
        w = self._weights[k]
        if x.dtype != w.dtype:  # autocast: match the input
            w = w.to(x.dtype)
        if isinstance(conv, nn.ConvTranspose2d):
            y = F.conv_transpose2d(x, w, None, conv.stride, conv.padding, conv.output_padding)
        else:
            y = F.conv2d(x, w, None, conv.stride, conv.padding)
        return torch.relu(y + self._maps[k].to(y.dtype))

    def forward(self, audio_embedding: torch.Tensor) -> torch.Tensor:
        blocks, out = self.model.face_decoder_blocks, self.model.output_block

        def stage(i: int) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda x: blocks[i][1:](self._first(blocks[i][0], x, i - 1))

        stages = [stage(i) for i in range(1, len(blocks))]
        return _decode(blocks[0](audio_embedding), stages, self._starts, self._map_rows,
                       lambda x: out[2](out[1](self._first(out[0], x, len(blocks) - 1))), self.rows_from)


class StillFaceGraph(nn.Module):
    """The per-frame part of the fast path as one graph, with the face as inputs.

    The same computation as ``FaceDecoder(model, feats)(model.encode_audio(mel))``,
    but the face's contributions (:meth:`face_maps`: the face channels of each
    skip convolution, plus its bias) are ``forward`` arguments instead of stored
    tensors. So the graph can be exported and quantized once per checkpoint
    while the face encoder still runs once per clip, outside it.

    ``forward(mel, *maps)``: mel (B, 1, 80, 16) and the seven maps, each
    (1, C, H, W) and broadcast over B -> (B, 3, 96, 96).

    Expects batch norm already folded. The skip convolutions are bias-free
    copies restricted to the decoded channels; every other layer is the model's own.
    """

    def __init__(self, model: Wav2Lip):
        super().__init__()
        _check_folded(model)
        blocks = model.face_decoder_blocks
        self.audio_encoder = model.audio_encoder
        self.first = blocks[0]
        # block i (i >= 1) reads cat(x, feats[7 - i]); the output block reads cat(x, feats[0])
        skips = [(blocks[i][0], blocks[i - 1][-1], len(blocks) - i) for i in range(1, len(blocks))]
        skips.append((model.output_block[0], blocks[-1][-1], 0))
        self.x_convs = nn.ModuleList()
        self._face: list[tuple[nn.Module, torch.Tensor, int]] = []  # (conv, face weight, feature index)
        for layer, before, feat in skips:
            conv = layer.conv_block[0]
            c_x = before.conv_block[0].out_channels
            transposed = isinstance(conv, nn.ConvTranspose2d)
            w = conv.weight.detach()
            w_x, w_f = (w[:c_x], w[c_x:]) if transposed else (w[:, :c_x], w[:, c_x:])
            if transposed:
                x_conv = nn.ConvTranspose2d(c_x, conv.out_channels, conv.kernel_size, conv.stride,
                                            conv.padding, conv.output_padding, bias=False)
            else:
                x_conv = nn.Conv2d(c_x, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
            x_conv.weight = nn.Parameter(w_x.contiguous(), requires_grad=False)
            self.x_convs.append(x_conv)
            self._face.append((conv, w_f.contiguous(), feat))
        self.rests = nn.ModuleList(nn.Sequential(*blocks[i][1:]) for i in range(1, len(blocks)))
        self.output = nn.Sequential(model.output_block[1], model.output_block[2])
        self.rows_from = 0  #: the first output row computed (:meth:`mouth`); 0: all of them
        self._starts = [0] * len(self.rests)  #: per decoder stage, the first row of its input kept (:meth:`mouth`)
        self.map_rows = [0] * len(self.x_convs)  #: per face map, the first row the graph reads (:meth:`crop`)

    def mouth(self, rows_from: int = MOUTH_FROM) -> "StillFaceGraph":
        """The same graph (the same weights, shared) computing only the output rows from ``rows_from``
        down: ``forward`` gives (B, 3, 96 - rows_from, 96), exactly those rows of the whole output,
        from the face maps cut to the rows it reads (:meth:`face_maps`, :meth:`crop`).

        The rows above reach the video only through the blender's mask, which is zero there, yet the
        decoder's last stages, at 24, 48 and 96 rows, are most of its work: it skips a share of them
        (about a fifth of the multiply-adds at row 32). Each 3x3 convolution of rows below the top gets
        its first row wrong (its padding stands in for the row above, cut off); a transposed convolution
        (stride 2) makes rows ``2a`` on exactly from rows ``a`` on; so each stage starts where the next
        needs it (:attr:`_starts`, planned from the output back), and the wrong rows are cut there.
        """
        out = copy.copy(self)
        out.rows_from = rows_from
        out._starts, out.map_rows = _row_plan(
            [(conv, len(rest)) for conv, rest in zip(self.x_convs[:-1], self.rests)], rows_from)
        return out

    def crop(self, maps: list) -> list:
        """The whole graph's face maps (torch or numpy) cut to the rows this one reads, contiguous."""
        out = []
        for m, row in zip(maps, self.map_rows):
            m = m[:, :, row:]
            out.append(m.contiguous() if isinstance(m, torch.Tensor) else np.ascontiguousarray(m))
        return out

    @torch.no_grad()
    def face_maps(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Face-encoder features (:meth:`Wav2Lip.encode_face`, batch 1) -> the seven maps, from the rows
        this graph reads."""
        maps = []
        for conv, w_f, k in self._face:
            f = feats[k].float()
            if isinstance(conv, nn.ConvTranspose2d):
                m = F.conv_transpose2d(f, w_f, conv.bias, conv.stride, conv.padding, conv.output_padding)
            else:
                m = F.conv2d(f, w_f, conv.bias, conv.stride, conv.padding)
            maps.append(m)
        return self.crop(maps)

    def forward(self, mel: torch.Tensor, *maps: torch.Tensor) -> torch.Tensor:
        def stage(conv, rest, fmap):
            return lambda x: rest(torch.relu(conv(x) + fmap))

        stages = [stage(conv, rest, fmap) for conv, rest, fmap in zip(self.x_convs[:-1], self.rests, maps)]
        return _decode(self.first(self.audio_encoder(mel)), stages, self._starts, self.map_rows,
                       lambda x: self.output(torch.relu(self.x_convs[-1](x) + maps[-1])), self.rows_from)


class FaceSideGraph(nn.Module):
    """The face side of a frame as one graph: model inputs -> :class:`StillFaceGraph`'s seven maps.

    ``forward(faces)``: (B, 6, 96, 96) -> the seven maps, each (B, C, H, W) from the
    rows ``graph`` reads: the face encoder, then the face channels of each skip
    convolution (with its bias). The same computation as ``graph.face_maps(model.encode_face(faces))``,
    as a module that can be exported and quantized on its own: a driving video
    pays it for every frame, a photo once.
    """

    def __init__(self, model: Wav2Lip, graph: StillFaceGraph):
        super().__init__()
        self.encoder = model.face_encoder_blocks
        self.convs = nn.ModuleList()
        self._feature: list[int] = []
        self._rows = list(graph.map_rows)
        for conv, w_f, k in graph._face:
            if isinstance(conv, nn.ConvTranspose2d):
                c = nn.ConvTranspose2d(w_f.shape[0], conv.out_channels, conv.kernel_size, conv.stride,
                                       conv.padding, conv.output_padding, bias=conv.bias is not None)
            else:
                c = nn.Conv2d(w_f.shape[1], conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              bias=conv.bias is not None)
            c.weight = nn.Parameter(w_f.detach().float().contiguous(), requires_grad=False)
            if conv.bias is not None:
                c.bias = nn.Parameter(conv.bias.detach().float().clone(), requires_grad=False)
            self.convs.append(c)
            self._feature.append(k)

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = []
        x = faces
        for block in self.encoder:
            x = block(x)
            feats.append(x)
        return tuple(conv(feats[k])[:, :, row:] for conv, k, row in zip(self.convs, self._feature, self._rows))

