"""Batched Wav2Lip inference: device and precision resolved once, OOM back-off.

The fast path (default) folds batch norm into the convolutions, keeps tensors
channels-last, runs the still face through the face encoder once per clip and
skips the network on silent frames. ``fast=False`` is the reference path: the
plain float32 module, one full forward per frame, as the original inference.

``precision="int8"`` (and ``auto`` on a CPU where the backend is installed) runs
the per-frame part of the fast path in int8 with OpenVINO
(:mod:`lipsync.runtime.int8`); the face encoder still runs once per clip in
float32 and everything around the network is the same. A checkpoint whose int8
network fails its check against float32 runs on the torch fast path instead,
and :attr:`Generator.description` says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import BackendError, ResourceError
from ..face import model_input
from ..models import Wav2Lip
from ..models.still import StillFaceDecoder, StillFaceGraph

__all__ = ["Generator", "resolve_device", "resolve_precision", "PRECISIONS"]

log = logging.getLogger("lipsync")

from ..options import PRECISIONS  # the one home of the names
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SILENT_MEL = -4.0  # the normalised mel floor: digital silence


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. ``cuda`` without a GPU is an error."""
    from ..errors import InputError

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA GPU is available here. Use --device cpu.")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


def cpu_runs_int8() -> bool:
    """True where the int8 backend is installed and the CPU has at least AVX2.

    Int8 convolutions are fastest with VNNI (AVX-512 VNNI, AVX-VNNI or AMX); on
    plain AVX2 they still beat float32, by less.
    """
    from .int8 import unavailable_reason

    try:
        simd = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - older torch
        return False
    return simd.upper().startswith(("AVX2", "AVX512")) and unavailable_reason() is None


def _torch_auto(device: torch.device) -> str:
    if device.type == "cuda":
        return "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA; on a CPU int8 where its backend is installed (it still
    has to pass its check per checkpoint), else bf16 with native bf16, else fp32.

    Raises:
        InputError: an unknown precision.
        BackendError: ``int8`` on a CPU without OpenVINO/NNCF installed.
    """
    from ..errors import InputError

    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        if device.type == "cpu" and cpu_runs_int8():
            return "int8"
        return _torch_auto(device)
    if precision == "fp16" and device.type == "cpu":
        log.warning("fp16 is not supported on the CPU; using fp32")
        return "fp32"
    if precision == "int8":
        if device.type != "cpu":
            log.warning("int8 runs on the CPU only; using fp16 on the GPU")
            return "fp16"
        from .int8 import unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise BackendError(reason)
    return precision


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


@dataclass
class _Prepared:
    faces: torch.Tensor  # (1, 6, 96, 96)
    decoder: StillFaceDecoder | None  # the decoder specialised to this face (fast path)
    maps: list[np.ndarray] | None = None  # this face's inputs to the int8 network


@dataclass
class _Batch:
    size: int  # frames per forward for one predict() call


class Generator:
    """Owns the network, its device and precision.

    Args:
        model: a loaded :class:`Wav2Lip` (float32, eval mode).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        precision: ``auto``, ``fp32``, ``bf16``, ``fp16`` or ``int8`` (CPU; OpenVINO).
        fast: fold batch norm, channels-last, reuse the face encoder, skip silence.
        batch_size: frames per forward; default 128 on CUDA, 8 on CPU (measured: larger batches
            spill the 96x96 activations out of cache and run slower on 2 cores).

    Raises:
        InputError: int8 with ``fast=False`` (int8 is a fast-path backend).
        BackendError: ``int8`` asked for explicitly and its packages are missing or
            quantization failed (``auto`` falls back to torch instead).
    """

    def __init__(
        self,
        model: Wav2Lip,
        device: str | torch.device = "auto",
        precision: str = "auto",
        *,
        fast: bool = True,
        batch_size: int | None = None,
    ):
        from ..errors import InputError

        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device) if fast or precision != "auto" else "fp32"
        self.fast = fast
        self.batch_size = batch_size or (128 if self.device.type == "cuda" else 8)
        self.note = ""  #: why the precision is not the one asked for (int8 refused), else ""
        self._int8 = None
        self._graph: StillFaceGraph | None = None
        if self.precision == "int8" and not fast:
            raise InputError("int8 runs on the fast path only; leave fast on or choose fp32.")
        digest = None
        if self.precision == "int8":
            from .int8 import weights_sha256

            digest = weights_sha256(model)  # of the checkpoint as given, before folding
        if fast:
            from ..models.loading import fold_batchnorm

            fold_batchnorm(model)
        if self.precision == "int8":
            self._load_int8(model.float(), digest, explicit=precision == "int8")
        model = model.to(self.device)
        if self.precision == "fp16":
            model = model.half()
        if fast:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval().requires_grad_(False)

    def _load_int8(self, model: Wav2Lip, digest: str, *, explicit: bool) -> None:
        """The int8 network, or the torch fast path with :attr:`note` saying why not."""
        from . import int8

        graph = StillFaceGraph(model).eval()
        fallback = "fp32" if explicit else _torch_auto(self.device)
        try:
            net, check = int8.load(model, digest, graph)
        except BackendError as e:
            if explicit:
                raise
            log.warning("int8 is not available (%s); using %s", e, fallback)
            net, self.note = None, "int8 not available here"
        else:
            if net is None:
                self.note = f"int8 refused for this checkpoint: {check.summary()}"
                log.warning("%s; using %s", self.note, fallback)
        if net is None:
            self.precision = fallback
            return
        self._int8, self._graph = net, graph

    @property
    def description(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        precision = self.precision
        if self._int8 is not None:
            c = self._int8.check
            precision = f"int8 (OpenVINO; checked: mouth max {c.max_255:.1f}/255, mean {c.mean_255:.2f}/255)"
        note = f" ({self.note})" if self.note else ""
        return f"{name}, {precision}{', fast path' if self.fast else ''}{note}"

    # -- tensors ---------------------------------------------------------------
    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True)
        t = t.half() if self.precision == "fp16" else t.float()
        return t.contiguous(memory_format=torch.channels_last) if self.fast else t

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    def prepare(self, face_bgr: np.ndarray) -> _Prepared:
        """Face input for a clip; with ``fast`` the face encoder runs here, once."""
        faces = self._tensor(model_input(face_bgr))
        decoder = None
        if self._int8 is not None:
            with torch.inference_mode():
                maps = self._graph.face_maps(self.model.encode_face(faces))
            return _Prepared(faces, None, [m.numpy() for m in maps])
        if self.fast:
            with torch.inference_mode(), self._autocast():
                decoder = StillFaceDecoder(self.model, self.model.encode_face(faces))
        return _Prepared(faces, decoder)

    def _forward(self, prep: _Prepared, mel: np.ndarray) -> torch.Tensor:
        """(B, 80, 16) mel windows -> (B, 3, 96, 96) float32 on the CPU."""
        if prep.maps is not None:
            return torch.from_numpy(self._int8(mel[:, None], prep.maps))
        m = self._tensor(mel[:, None])
        with torch.inference_mode(), self._autocast():
            if prep.decoder is not None:
                out = prep.decoder(self.model.encode_audio(m))
            else:
                out = self.model(m, prep.faces.expand(m.shape[0], -1, -1, -1))
        return out.float().cpu()

    # -- public ------------------------------------------------------------------
    def predict(
        self,
        face_bgr: np.ndarray,
        mels: np.ndarray,
        *,
        weights: np.ndarray | None = None,
        step: int = 1,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Mouth crops for every frame, batch by batch.

        Args:
            face_bgr: (96, 96, 3) uint8 BGR crop of the still face.
            mels: (N, 80, 16) float32 mel windows, one per frame.
            weights: optional (N,) speech weight per frame in [0, 1]. 0 skips the
                network and shows the face at rest (the prediction for silence);
                between 0 and 1 mixes the two (a cross-fade at pause edges).
            step: run the network on every ``step``-th frame (and the last) only and
                blend the frames between linearly: ``step`` times less work, softer
                fast mouth movements. 1 (every frame) is exact.
            batch_size: frames per forward for this call (default: the generator's);
                halved for the rest of the call if memory runs out. The generator's
                own setting never changes, so one request cannot slow the next.
            progress: called with (frames done, total).

        Yields:
            (B, 96, 96, 3) float32 BGR in [0, 1], in frame order.

        Raises:
            ResourceError: out of memory even at batch size 1.
        """
        n = len(mels)
        step = max(1, int(step))
        batch = _Batch(int(batch_size or self.batch_size))
        prep = self.prepare(face_bgr)
        rest = None
        if weights is not None and np.any(weights < 1.0):
            rest = self._run(prep, np.full((1, *mels.shape[1:]), SILENT_MEL, np.float32), batch)[0]
        keys = np.unique(np.r_[np.arange(0, n, step), n - 1])
        prev_i, prev_out = None, None
        j = 0
        while j < len(keys):
            idx = keys[j : j + batch.size]  # the batch size may shrink on OOM
            j += len(idx)
            key_out = self._frames(prep, mels, idx, weights, rest, batch)
            if prev_i is None:
                anchors_i, anchors = idx, key_out
            else:
                anchors_i = np.r_[prev_i, idx]
                anchors = np.concatenate([prev_out[None], key_out])
            first = anchors_i[0] if prev_i is None else prev_i + 1
            out = np.empty((idx[-1] - first + 1, 96, 96, 3), np.float32)
            for a in range(len(anchors_i)):
                if a > 0 and anchors_i[a] - anchors_i[a - 1] > 1:  # blend the frames in between
                    i0, i1 = anchors_i[a - 1], anchors_i[a]
                    t = ((np.arange(i0 + 1, i1) - i0) / (i1 - i0)).astype(np.float32)[:, None, None, None]
                    out[i0 + 1 - first : i1 - first] = (1.0 - t) * anchors[a - 1] + t * anchors[a]
                if anchors_i[a] >= first:
                    out[anchors_i[a] - first] = anchors[a]
            prev_i, prev_out = idx[-1], key_out[-1]
            if progress:
                progress(int(idx[-1]) + 1, n)
            yield out

    def predict_frames(
        self,
        face_at: Callable[[int], np.ndarray | None],
        mels: np.ndarray,
        active: np.ndarray,
        *,
        step: int = 1,
        batch_size: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Mouth crops for a moving face (a driving video): a new face crop per frame.

        See :func:`lipsync.runtime.frames.predict_frames`; the face encoder runs on
        every frame the network runs on, and inactive frames (no face, or a pause)
        skip it.
        """
        from .frames import predict_frames

        return predict_frames(self, face_at, mels, active, step=step, batch_size=batch_size)

    def _frames(self, prep, mels, idx, weights, rest, batch: "_Batch") -> np.ndarray:
        """Outputs for frames ``idx``: the network where they speak, the rest face in pauses."""
        w = None if weights is None else np.asarray(weights[idx], np.float32)
        out = np.empty((len(idx), 96, 96, 3), np.float32)
        need = np.arange(len(idx)) if w is None else np.flatnonzero(w > 0)
        if len(need):
            out[need] = self._run(prep, mels[idx[need]], batch)
        if w is not None:
            out[w <= 0] = rest
            part = (w > 0) & (w < 1)
            if np.any(part):
                k = w[part][:, None, None, None]
                out[part] = k * out[part] + (1.0 - k) * rest
        return out

    def _run(self, prep: _Prepared, mels: np.ndarray, batch: "_Batch") -> np.ndarray:
        """Forward ``mels`` in chunks of the call's batch size, halving it on OOM."""
        return self.chunked(len(mels), lambda i, b: self._forward(prep, mels[i : i + b]), batch)

    def chunked(self, n: int, forward: Callable[[int, int], torch.Tensor], batch: "_Batch") -> np.ndarray:
        """``forward(start, count)`` over ``n`` frames in chunks of ``batch.size``, halving it on OOM.

        Returns:
            (n, 96, 96, 3) float32 BGR.

        Raises:
            ResourceError: out of memory even one frame at a time.
        """
        outs = []
        i = 0
        while i < n:
            b = min(batch.size, n - i)
            try:
                y = forward(i, b)
            except Exception as e:  # noqa: BLE001 - only OOM is handled
                if not _is_oom(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if b <= 1:
                    raise ResourceError(
                        "The GPU ran out of memory even one frame at a time. Close other programs "
                        "using it, or run on the CPU with --device cpu."
                    ) from None
                batch.size = max(1, b // 2)
                log.warning("out of memory at batch %d; retrying with %d", b, batch.size)
                continue
            outs.append(y.permute(0, 2, 3, 1).numpy())
            i += b
        return np.concatenate(outs) if len(outs) > 1 else outs[0]
