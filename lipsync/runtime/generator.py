"""Batched Wav2Lip inference: device and precision resolved once, OOM back-off.

The fast path (default) folds batch norm into the convolutions, keeps tensors
channels-last, runs the still face through the face encoder once per clip and
skips the network on silent frames. ``fast=False`` is the reference path: the
plain float32 module, one full forward per frame, as the original inference.

``precision="int8"`` (and ``auto`` on a CPU where the backend is installed) runs
the audio encoder and the decoder in int8 with OpenVINO
(:mod:`lipsync.runtime.int8`), for a photo and for a video alike: the face
encoder runs once per clip for a photo (in float32) and once per frame for a
video (in int8 too, where its own check passed), and its features enter the
int8 network as inputs. A checkpoint whose
int8 network fails its check against float32 runs on the torch fast path
instead, and :attr:`Generator.description` says why; so does ``auto`` when the
int8 cache has no entry for the checkpoint and cannot be written.

:meth:`Generator.predict` is the one entry point, over a *face source*: a still
face (one crop) or a face per frame (``face_at(i)``); which frames the network
runs on is planned by :mod:`lipsync.runtime.frames`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from ..errors import BackendError, ResourceError
from ..face import model_input
from ..models import Wav2Lip
from ..models.still import MOUTH_FROM, FaceDecoder, StillFaceGraph
from ..proc import cpu_count
from .frames import KeyFrames
from .scheduler import WARM_MAX, WARM_SIZES, Capacity, LiveTiming, Scheduler

__all__ = ["FaceSource", "Generator", "resolve_device", "resolve_precision", "PRECISIONS"]

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

    Int8 convolutions are fastest with VNNI (AVX-512 VNNI, AVX-VNNI or AMX: about 3x
    float32); on plain AVX2 they gain little (1.03-1.12x on a Zen 2, 2026-12-07), but
    still do not lose.
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


#: how torch words running out of memory: CUDA, and the CPU allocator (Linux, Windows)
_OOM_WORDS = ("out of memory", "can't allocate memory", "not enough memory")


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and any(w in str(e).lower() for w in _OOM_WORDS)


@dataclass
class _Prepared:
    """The face side of a forward: one still face (broadcast over the batch) or one face per frame."""

    faces: torch.Tensor  # (1 or B, 6, 96, 96)
    decoder: FaceDecoder | None  # the decoder specialised to this face or these faces (torch fast path)
    maps: list[np.ndarray] | None = None  # this face's (or these faces') inputs to the int8 network


@dataclass
class _Batch:
    size: int  # frames per forward for one predict() call


#: A face source for :meth:`Generator.predict`: one still face crop, or ``face_at(i)``
#: giving frame ``i``'s crop (a driving video).
FaceSource = Union[np.ndarray, Callable[[int], Optional[np.ndarray]]]


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
        self._stacked = None  # (faces, windows per face, them stacked): the last batch's, for _forward_many
        self._graph: StillFaceGraph | None = None
        self._x_weights: list[torch.Tensor] | None = None  # the torch decoders' face-free weights, shared
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
        #: the one way into the network: live frames batched across sessions, clips in the gaps
        threads = torch.get_num_threads()  # the network thread computes with the count the engine was made with
        cores = cpu_count() if self.device.type == "cpu" else None  # the sessions' picture work shares them
        self.scheduler = Scheduler(self._forward_many, inherit=lambda: lambda: torch.set_num_threads(threads),
                                   cores=cores)

    def _load_int8(self, model: Wav2Lip, digest: str, *, explicit: bool) -> None:
        """The int8 network, or the torch fast path with :attr:`note` saying why not."""
        from . import int8

        graph = StillFaceGraph(model).eval()
        fallback = "fp32" if explicit else _torch_auto(self.device)
        try:
            net, check = int8.load(model, digest, graph, uncached=explicit)
        except int8.CacheUnwritable as e:  # auto only: no calibration in every process
            log.warning("int8 is not used (%s); using %s", e, fallback)
            net, self.note = None, f"int8 not used: {e}"
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
        self._int8, self._graph = net, graph.mouth(net.rows_from)  # face maps from the rows the network reads

    @property
    def description(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        precision = self.precision
        if self._int8 is not None:
            c, f = self._int8.check, self._int8.face_check
            face = ""
            if f is not None:
                face = f"; video faces int8, max {f.max_255:.1f}/255" if f.passed else "; video faces float32"
            precision = f"int8 (OpenVINO; checked: mouth max {c.max_255:.1f}/255, mean {c.mean_255:.2f}/255{face})"
        note = f" ({self.note})" if self.note else ""
        return f"{name}, {precision}{', fast path' if self.fast else ''}{note}"

    def rows_from(self) -> int:
        """The first row of the 96-row mouth crops this generator's network computes; the rows above
        are the face's own pixels (they never reach the video: see ``MOUTH_FROM``)."""
        if self._int8 is not None:
            return self._int8.rows_from
        return MOUTH_FROM if self.fast else 0

    # -- tensors ---------------------------------------------------------------
    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True)
        t = t.half() if self.precision == "fp16" else t.float()
        return t.contiguous(memory_format=torch.channels_last) if self.fast else t

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)


    def _prepare(self, crops: np.ndarray, *, still: bool) -> _Prepared:
        """(1 or B, 6, 96, 96) model inputs -> the face side of a forward.

        The face encoder runs here: once per clip for a still face (``still``), once per
        batch for a face per frame. For int8 its features become the int8 network's face
        maps: for a photo in float (once per clip), for a video's frames in int8 where
        the int8 face side passed its check. On the torch fast path they become the
        face's decoder (the mouth's rows only), for one face or a batch of them.
        """
        if self._int8 is not None and not still and self._int8.face is not None:
            # a video's frames: the face side in int8 too (the crops stay as they are, never copied)
            return _Prepared(torch.from_numpy(crops), None, self._int8.face(crops))
        faces = self._tensor(crops)
        if self._int8 is not None:
            with torch.inference_mode():
                maps = self._graph.face_maps(self.model.encode_face(faces))
            return _Prepared(faces, None, [m.numpy() for m in maps])
        if self.fast:  # the mouth's rows only (as int8 computes them)
            with torch.inference_mode(), self._autocast():
                decoder = FaceDecoder(self.model, self.model.encode_face(faces), MOUTH_FROM, self._x_weights)
            self._x_weights = decoder.weights
            return _Prepared(faces, decoder)
        return _Prepared(faces, None)

    def _forward(self, prep: _Prepared, mel: np.ndarray, live: bool = False) -> torch.Tensor:
        """(B, 80, 16) mel windows -> (B, 3, 96, 96) float32 on the CPU. ``live``: the live sessions'
        shared batch, which int8 runs the way found quicker on this machine (see ``int8.Compiled``).

        int8 and the torch fast path compute the rows from :meth:`rows_from` down; the rows above,
        which the blender's mask leaves out, are the face's own (the top of its model input)."""
        if prep.maps is not None:
            out = torch.from_numpy(self._int8.rows(mel[:, None], prep.maps, adaptive=live))
        else:
            m = self._tensor(mel[:, None])
            with torch.inference_mode(), self._autocast():
                if prep.decoder is not None:
                    out = prep.decoder(self.model.encode_audio(m))
                else:
                    faces = prep.faces if len(prep.faces) == len(m) else prep.faces.expand(len(m), -1, -1, -1)
                    out = self.model(m, faces)
        out = out.float().cpu()
        top = 96 - out.shape[2]
        if not top:
            return out
        face = prep.faces[:, :3, :top].float().cpu()
        return torch.cat([face if len(face) == len(out) else face.expand(len(out), -1, -1, -1), out], dim=2)

    # -- public ------------------------------------------------------------------
    def prepare_face(self, face_bgr: np.ndarray, *, still: bool = True) -> _Prepared:
        """A face, (96, 96, 3) uint8 BGR, made ready for :meth:`forward` (a live session).

        The face encoder runs here (into the int8 network's face maps for int8). ``still``:
        the face is used for many forwards (a photo), so ``fast`` also keeps its decoder
        features; ``still=False``: one frame of a video, used once.
        """
        return self._prepare(model_input(face_bgr), still=still)

    def forward(self, face: _Prepared, mels: np.ndarray) -> np.ndarray:
        """One batch on a face from :meth:`prepare_face`: (B, 80, 16) mel windows ->
        (B, 96, 96, 3) float32 BGR mouth crops in [0, 1]. For callers that pace their own
        batches (a live session; see :meth:`forward_live`); a clip goes through :meth:`predict`."""
        return self.forward_live(face, mels)[0]

    def forward_live(self, face: _Prepared, mels: np.ndarray, due: float | None = None
                     ) -> tuple[np.ndarray, LiveTiming]:
        """:meth:`forward` for a live frame shown at ``due`` (``time.monotonic()``): it runs in one
        batch with the frames other sessions on this generator wait for (:mod:`.scheduler`).
        Returns the mouths and how the call went (its wall time, its share of the batch)."""
        return self.scheduler.live(face, mels, due)

    def submit_live(self, face: _Prepared, mels: np.ndarray, due: float | None = None, ticket=None):
        """:meth:`forward_live` without waiting: returns a :class:`~lipsync.runtime.scheduler.Pending`
        whose ``result()`` gives (mouths, timing) (a session starts its next frame's batch early).
        ``ticket``: the session's place on the scheduler (:meth:`~lipsync.runtime.scheduler.Scheduler.join`)."""
        return self.scheduler.submit(face, mels, due, ticket)

    def forward_many(self, items: list[tuple[_Prepared, np.ndarray]]) -> list[np.ndarray]:
        """Several faces' forwards as one batch: ``[(face, (B_i, 80, 16) mels), ...]`` ->
        ``[(B_i, 96, 96, 3) float32, ...]``, in order.

        The faces are stacked along the batch: the int8 network's face maps, the fast
        path's per-face decoder features, or the faces themselves; a face of one crop is
        repeated for each of its windows. Out of memory, the batch is split in two.
        """
        return self._forward_many(items)

    def _forward_many(self, items: list[tuple[_Prepared, np.ndarray]]) -> list[np.ndarray]:
        if len(items) == 1:
            prep, mels = items[0]
            return [self._forward(prep, mels).permute(0, 2, 3, 1).numpy()]
        kinds = {(p.maps is not None, p.decoder is not None) for p, _ in items}
        if len(kinds) > 1:  # a photo's decoder beside a video's faces (torch): one batch per kind
            out: list[np.ndarray | None] = [None] * len(items)
            for kind in kinds:
                idx = [i for i, (p, _) in enumerate(items) if (p.maps is not None, p.decoder is not None) == kind]
                for i, y in zip(idx, self._forward_many([items[i] for i in idx])):
                    out[i] = y
            return out
        # the same faces in the same order as the last batch (the live sessions of one engine, tick after tick)
        # reuse its stack: no copy of their maps, and the int8 requests keep them bound
        order = sorted(range(len(items)), key=lambda i: id(items[i][0]))
        items = [items[i] for i in order]
        counts = [len(m) for _, m in items]
        mels = np.concatenate([m for _, m in items])
        preps = [p for p, _ in items]
        last = self._stacked
        if last is not None and last[1] == counts and len(last[0]) == len(preps) and all(
                a is b for a, b in zip(last[0], preps)):
            stacked = last[2]
        else:
            stacked = _stack(preps, counts)
            self._stacked = (preps, counts, stacked)
        try:
            y = self._forward(stacked, mels, live=True)
        except Exception as e:  # noqa: BLE001 - only OOM is handled
            if not _is_oom(e):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._stacked = None
            half = len(items) // 2
            ys = self._forward_many(items[:half]) + self._forward_many(items[half:])
        else:
            ys = np.split(y.permute(0, 2, 3, 1).numpy(), np.cumsum(counts)[:-1])
        out: list[np.ndarray | None] = [None] * len(items)
        for j, i in enumerate(order):
            out[i] = ys[j]
        return out

    def measure_capacity(self, fps: float = 25.0, batch: int = 4) -> Capacity:
        """Measure the batched rate now (about half a second on stand-in faces, after any live
        frames), and return how many live sessions this network holds at ``fps``. With int8, the
        live batch sizes up to one more than that are run too (:meth:`warm_live`)."""
        self.scheduler.measure(self._stand_ins, batch=batch)
        cap = self.scheduler.capacity(fps)
        self.warm_live(max(WARM_SIZES, cap.sessions + 1))
        return cap

    def warm_live(self, sizes: int | None = None) -> float:
        """With the int8 network, run the live batch sizes 1 to ``sizes`` (default
        :data:`~.scheduler.WARM_SIZES`, at most :data:`~.scheduler.WARM_MAX`) not run yet, on stand-in
        faces: its first batch of a size is several times slower than the next (OpenVINO prepares its
        kernels for the new shape), and one first seen live made every open session's frame late. A live
        session's opening calls it: the first one on an engine waits for it (about 0.6 s on 2 cores).
        Returns the seconds it took (0 where nothing was left to run, or on torch, whose first batch of a
        size costs about 15 % more than the next, not several times)."""
        if self._int8 is None:
            return 0.0
        n = min(WARM_MAX, WARM_SIZES if sizes is None else max(1, sizes))
        took = self.scheduler.warm(self._stand_ins, range(1, n + 1))
        if took > 0.05:
            log.info("live: ran the network's live batch sizes 1-%d, twice each, in %.2f s (its first batch of a size "
                     "is slow)", n, took)
        return took

    def _stand_ins(self, n: int) -> list:
        """``n`` live frames on stand-in faces (noise), one mel window each: a batch for measuring or warming."""
        rng = np.random.default_rng(n)
        faces = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        mels = rng.uniform(-4, 4, (1, 80, 16)).astype(np.float32)
        return [(self.prepare_face(f), mels) for f in faces]

    def predict(
        self,
        face: FaceSource,
        mels: np.ndarray,
        *,
        weights: np.ndarray | None = None,
        step: int = 1,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Mouth crops for every frame, block by block, in frame order.

        Args:
            face: the face source. A (96, 96, 3) uint8 BGR crop is a *still face* (a photo):
                the face encoder runs once for the clip. A callable ``face_at(i)`` gives
                frame ``i``'s crop (a driving video): the face encoder runs on every frame
                the network runs on; it is called only for those frames, in increasing order.
            mels: (N, 80, 16) float32 mel windows, one per frame.
            weights: optional (N,) speech weight per frame in [0, 1].
                For a still face, 0 skips the network and shows the face at rest (the
                prediction for silence) and values between mix the two (a cross-fade at
                pause edges). For a face per frame, 0 skips the frame (no face, or a
                pause: the compositor keeps the video's own mouth; its entry is zeros)
                and any other weight gets the network's mouth (the compositor fades it).
            step: run the network on every ``step``-th frame (of each run of frames that
                get a mouth, and the run's last) only and blend the frames between
                linearly: ``step`` times less work, softer fast mouth movements. 1 is exact.
            batch_size: frames per forward for this call (default: the generator's);
                halved for the rest of the call if memory runs out. The generator's
                own setting never changes, so one request cannot slow the next.
            progress: called with (frames done, total).

        Yields:
            (B, 96, 96, 3) float32 BGR in [0, 1], B <= 32, covering frames 0..N-1 in order.

        Raises:
            ResourceError: out of memory even at batch size 1.
            ValueError: ``weights`` of the wrong length, or ``face_at`` gave no crop for a
                frame that gets a mouth.
        """
        n = len(mels)
        if weights is not None:
            weights = np.asarray(weights, np.float32)
            if weights.shape != (n,):
                raise ValueError(f"weights must have one entry per mel window ({n}), got {weights.shape}")
        batch = _Batch(int(batch_size or self.batch_size))
        if callable(face):
            active = np.ones(n, bool) if weights is None else weights > 0
            run = _PerFrame(self, face, mels)
        else:
            active = np.ones(n, bool)
            run = _Still(self, face, mels, weights, batch)
        plan = KeyFrames(active, step)
        keys = plan.keys
        j = 0
        while j < len(keys):
            idx = keys[j : j + batch.size]  # the batch size may shrink on OOM
            j += len(idx)
            yield from plan.add(idx, run(idx, batch))
            if progress:
                progress(int(idx[-1]) + 1, n)
        yield from plan.rest()
        if progress and (not len(keys) or keys[-1] < n - 1):
            progress(n, n)

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
            try:
                with self.scheduler.clip(min(batch.size, n - i)) as b:  # live frames first
                    y = forward(i, b)
            except Exception as e:  # noqa: BLE001 - only OOM is handled
                if not _is_oom(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if b <= 1:
                    raise ResourceError(_oom_message(self.device)) from None
                batch.size = max(1, b // 2)
                log.warning("out of memory on %s at batch %d; retrying with %d", self.device, b, batch.size)
                continue
            outs.append(y.permute(0, 2, 3, 1).numpy())
            i += b
        return np.concatenate(outs) if len(outs) > 1 else outs[0]


def _stack(preps: list[_Prepared], counts: list[int]) -> _Prepared:
    """Several prepared faces as one, face ``i`` covering ``counts[i]`` windows (all of one kind)."""

    def rows(x, n):  # a face of one row is repeated for its n windows
        if x.shape[0] == n:
            return x
        return np.broadcast_to(x, (n, *x.shape[1:])) if isinstance(x, np.ndarray) else x.expand(n, *x.shape[1:])

    first = preps[0]
    faces = torch.cat([rows(p.faces, n) for p, n in zip(preps, counts)])
    if first.maps is not None:
        maps = [np.concatenate([rows(p.maps[k], n) for p, n in zip(preps, counts)]) for k in range(len(first.maps))]
        return _Prepared(faces, None, maps)
    if first.decoder is not None:
        return _Prepared(faces, FaceDecoder.stacked([(p.decoder, n) for p, n in zip(preps, counts)]))
    return _Prepared(faces, None)


def _oom_message(device: torch.device) -> str:
    """What to do when even one frame does not fit, for the device that ran out."""
    if device.type == "cuda":
        return (
            f"The GPU ({device}) ran out of memory even one frame at a time. Close other programs "
            "using it, or run on the CPU with --device cpu."
        )
    return (
        f"The computer ran out of memory ({device.type}) even one frame at a time. Close other "
        "programs, or use a smaller picture or video (--max-side)."
    )


class _Still:
    """A still face: the face encoder once per clip; pauses show the face at rest."""

    def __init__(self, gen: Generator, face_bgr: np.ndarray, mels, weights, batch: _Batch):
        self.gen, self.mels, self.weights = gen, mels, weights
        self.prep = gen._prepare(model_input(face_bgr), still=True)
        self.rest = None
        if weights is not None and np.any(weights < 1.0):
            silent = np.full((1, *mels.shape[1:]), SILENT_MEL, np.float32)
            self.rest = self._forward(silent, batch)[0]

    def _forward(self, mels: np.ndarray, batch: _Batch) -> np.ndarray:
        return self.gen.chunked(len(mels), lambda i, b: self.gen._forward(self.prep, mels[i : i + b]), batch)

    def __call__(self, idx: np.ndarray, batch: _Batch) -> np.ndarray:
        """Outputs for frames ``idx``: the network where they speak, the rest face in pauses."""
        w = None if self.weights is None else self.weights[idx]
        out = np.empty((len(idx), 96, 96, 3), np.float32)
        need = np.arange(len(idx)) if w is None else np.flatnonzero(w > 0)
        if len(need):
            out[need] = self._forward(self.mels[idx[need]], batch)
        if w is not None:
            out[w <= 0] = self.rest
            part = (w > 0) & (w < 1)
            if np.any(part):
                k = w[part][:, None, None, None]
                out[part] = k * out[part] + (1.0 - k) * self.rest
        return out


class _PerFrame:
    """A face per frame: each forward takes a batch of different crops with their mel windows."""

    def __init__(self, gen: Generator, face_at: Callable[[int], np.ndarray | None], mels):
        self.gen, self.face_at, self.mels = gen, face_at, mels

    def __call__(self, idx: np.ndarray, batch: _Batch) -> np.ndarray:
        crops = []
        for i in idx:
            face = self.face_at(int(i))
            if face is None:
                raise ValueError(f"frame {i} gets a mouth but has no face crop")
            crops.append(model_input(face))
        faces, mels, gen = np.concatenate(crops), self.mels[idx], self.gen

        def forward(i: int, b: int) -> torch.Tensor:
            return gen._forward(gen._prepare(faces[i : i + b], still=False), mels[i : i + b])

        return gen.chunked(len(idx), forward, batch)

