"""Int8 inference on the CPU: OpenVINO, quantized with NNCF, checked against float32 per checkpoint.

What runs in int8 is the per-frame part of the fast path,
:class:`~lipsync.models.still.StillFaceGraph` (audio encoder and decoder, with the
face's contributions as inputs), and, for a driving video, whose every frame
brings a face of its own, the face side too
(:class:`~lipsync.models.still.FaceSideGraph`: the face encoder and the face half
of the skip convolutions, which cost a video frame three times its decoder in
float). A photo's face side runs once per clip, in float32 (the maps' batch is 1,
broadcast over the frames, or one per frame for a video).

For each checkpoint, on first use (:func:`load`):

1. the graph is converted to OpenVINO and quantized with NNCF's post-training
   quantization: int8 weights (per output channel) and int8 convolution inputs
   (per tensor), ranges calibrated on 80 representative frames
   (:mod:`lipsync.runtime.calibration`). Additions stay in float. Measured on the
   seed-1234 weights (``benchmarks/int8_layers.py`` repeats it for any checkpoint):
   quantizing every addition too is 1.26x as fast but 8x the error (mean
   1.34/255, over the bound below); quantizing the residual additions only,
   with the face-map additions in float, is 1.16x as fast for 20 % more error
   (max 1.60/255, mean 0.19/255 against 1.36 and 0.16). Quantizing one
   convolution at a time showed no outlier layer: the error grows smoothly
   towards the output, and keeping the whole 96x96 stage in float halves it
   but costs 30 % of the speed. So every convolution is int8 and every
   addition float, which leaves the most headroom under the bound for real
   weights, whose activations these random ones cannot stand for;
2. the int8 network is compared with float32 on 32 held-out frames (other
   faces, other speech). It is used only when, over the rows the blender pastes
   into the video (:data:`CHECK_ROWS`), the mean absolute difference is at
   most :data:`BOUND_MEAN` and the largest at most :data:`BOUND_MAX`. The face
   side is calibrated the same way on 64 faces of its own and checked end to
   end, int8 face side and int8 decoder together against float32 on 32
   held-out faces, each with its own speech, against the same bounds; a face
   side that fails its check leaves a video's faces in float32 and the decoder
   in int8;
3. the outcome is cached under ``$LIPSYNC_CACHE/int8/`` (default
   ``~/.cache/lipsync/int8/``) by the sha256 of the checkpoint's weights: the
   quantized model and a manifest with the checksums of its files and the
   check's numbers. A refused checkpoint is remembered too, so neither is
   calibrated twice. Entries are written to a temporary folder and renamed into
   place under a lock file, so concurrent processes never see half an entry; an
   entry whose files do not match its manifest is removed and rebuilt.

OpenVINO and NNCF are imported here only when int8 is used.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BackendError

__all__ = [
    "BOUND_MAX",
    "BOUND_MEAN",
    "CHECK_ROWS",
    "RECIPE",
    "CacheUnwritable",
    "Check",
    "Compiled",
    "Int8FaceSide",
    "Int8Network",
    "cache_root",
    "load",
    "no_telemetry",
    "unavailable_reason",
    "weights_sha256",
]

from ..memory import release_memory

log = logging.getLogger("lipsync")

#: Names the cache entries: change it when the graph, the calibration data or the
#: quantization settings change, and old entries are no longer read.
# 2: the face maps take a batch (a face per frame); 3: the face side in int8 too; 4: the decoder computes the
# mouth's rows only (StillFaceGraph.mouth); 5: the face maps come cut to the rows the graph reads, and the rows a
# convolution's padding gets wrong are cut once per stage, not after every convolution
RECIPE = "ov-nncf-5"
#: Rows of the 96x96 output that reach the video: the blender's feather mask is
#: zero above 0.42 of the face box's height (row 40), i.e. the mouth and chin.
CHECK_ROWS = slice(40, 96)
#: Largest accepted mean |int8 - float32| over :data:`CHECK_ROWS`, in [0, 1] units:
#: one 8-bit level. The output is rounded to 8 bits before it is pasted, so a
#: mean below one level leaves most pasted values as they were.
BOUND_MEAN = 1.0 / 255
#: Largest accepted single-pixel |int8 - float32| over :data:`CHECK_ROWS`: eight
#: 8-bit levels (3 %). For scale: encoding the example portrait with a moving mouth
#: at the default x264 settings (crf 20, veryfast, yuv420p) changes the pasted
#: region by 3.2 levels on average, 13 at the 99th percentile and 60 at most; a
#: broken quantization range costs tens of levels everywhere (36 max, 8.9 mean on
#: the test suite's outlier-channel checkpoint). On the seed-1234 weights int8
#: stays at about 1.4 max and 0.16 mean.
BOUND_MAX = 8.0 / 255

_PACKAGES = ("openvino", "nncf")
_INSTALL = "pip install openvino nncf"


def unavailable_reason() -> str | None:
    """None when the int8 backend's packages can be imported, else what to install."""
    missing = [p for p in _PACKAGES if importlib.util.find_spec(p) is None]
    if not missing:
        return None
    return (
        f"--precision int8 needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
        f"not installed. Install {'it' if len(missing) == 1 else 'them'} with `{_INSTALL}` "
        "(or `pip install -r requirements.txt`), or choose --precision fp32 or bf16."
    )


def cache_root() -> Path:
    return Path(os.environ.get("LIPSYNC_CACHE", Path.home() / ".cache" / "lipsync")) / "int8"


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of a module's weights: names, dtypes, shapes and bytes, in state-dict order.

    It identifies the checkpoint that is served whatever its file is called or
    holds besides (optimizer state), and costs a fraction of a second.
    """
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


@dataclass(frozen=True)
class Check:
    """How the int8 network compared with float32 on the held-out frames."""

    passed: bool
    max_255: float  #: largest |difference| over CHECK_ROWS, in 8-bit levels
    mean_255: float  #: mean |difference| over CHECK_ROWS, in 8-bit levels
    frames: int

    def summary(self) -> str:
        return (
            f"mouth-region difference from float32 on {self.frames} held-out frames: "
            f"max {self.max_255:.2f}/255, mean {self.mean_255:.2f}/255 "
            f"(bound: max {BOUND_MAX * 255:.0f}/255, mean {BOUND_MEAN * 255:.0f}/255)"
        )


def judge(diff: np.ndarray) -> Check:
    """``diff``: (N, 3, 96, 96) or (N, 96, 96, 3) |int8 - float32| in [0, 1] units."""
    rows = diff[:, :, CHECK_ROWS] if diff.shape[1] == 3 else diff[:, CHECK_ROWS]
    mx, mean = float(rows.max()), float(rows.mean())
    ok = bool(np.isfinite(mx) and mx <= BOUND_MAX and mean <= BOUND_MEAN)
    return Check(ok, round(mx * 255, 4), round(mean * 255, 4), int(diff.shape[0]))


#: :class:`Compiled` compares the two ways to run a batch on the median of this many recent batches of each
SPLIT_SAMPLES = 5
#: ...and runs one batch of every this many of a size the other way, to notice when the machine changes
SPLIT_RETRY = 16


class _Slot:
    """One infer request and the steady inputs it has bound (read in place, kept alive here)."""

    def __init__(self, request):
        self.request = request
        self.steady: list[np.ndarray] | None = None  #: the list whose arrays are bound (kept alive)
        self.row: int | None = None  #: the one row of them bound, for inputs with a row per frame
        self.held: list[np.ndarray] = []


class Compiled:
    """A model compiled for the CPU twice, run on whole batches, one call at a time.

    OpenVINO runs one request on all of the process's threads (``LATENCY``), or several
    requests at once, each on a share of the threads (``THROUGHPUT``: on 2 cores, 2
    streams of 1 thread). A batch of at least one frame per stream can go either way:
    one frame per request, the streams taking the next request as they finish one, or
    whole on the one request; a smaller batch (on 2 cores: one live session's single
    frame) always runs on the one request, which is quicker for it.

    Which way is quicker depends on the CPU. A clip's batches split (the same numbers
    every run: the two ways round a last bit differently). The live sessions' shared
    batches (``run(..., adaptive=True)``) are timed (:attr:`choose`): each batch size
    tries both ways, then takes the one whose recent batches were quicker (the median of
    the last :data:`SPLIT_SAMPLES`), trying the other again every :data:`SPLIT_RETRY`
    batches of that size, as a machine's speed changes.
    Measured on 2 cores (docs/speed.md, "int8 on two streams"): on an Intel CPU with AMX,
    one frame per request made 1.2-1.8x the frames per second at batches of 2 to 16 (a
    batch of 3 in 16 ms against 29 ms whole); on an AMD EPYC with AVX-512, where one
    request already keeps both cores busy, it made 0.88-1.1x (a batch of 3 in 40 ms
    against 36 ms whole). :attr:`parallel` False runs every batch whole (the baseline);
    :attr:`choose` False splits live batches too.
    """

    def __init__(self, model):
        import openvino as ov

        core = ov.Core()
        self.whole = core.compile_model(model, "CPU", _config("LATENCY"))
        many = core.compile_model(model, "CPU", _config("THROUGHPUT"))
        self.streams = max(1, int(many.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._whole = _Slot(self.whole.create_infer_request())
        # two requests per stream: each stream has its next frame waiting when one ends
        self._parts = [_Slot(many.create_infer_request()) for _ in range(2 * self.streams)] if self.streams > 1 else []
        self.parallel = True
        self.choose = True
        self._lock = threading.Lock()
        # per batch size (:func:`_size_key`), per way (split or not): seconds per frame of recent batches
        self._times: dict[tuple[int, bool], collections.deque] = {}
        self._runs: collections.Counter = collections.Counter()  # batches run, per batch size

    def _split(self, b: int, adaptive: bool) -> bool:
        """Whether a batch of ``b`` frames goes one frame per request (lock held)."""
        # fewer frames than streams would leave threads idle that the one request uses (a CPU of many cores)
        if not (self.parallel and self._parts and b >= self.streams):
            return False
        if not (adaptive and self.choose):
            return True
        key = _size_key(b)
        n = self._runs[key]
        self._runs[key] += 1
        split, whole = (self._times.get((key, way), ()) for way in (True, False))
        if min(len(split), len(whole)) <= SPLIT_SAMPLES // 2:  # a median of each needs most of its samples
            return n % 2 == 0  # trying both ways, in turn
        better = float(np.median(split)) <= float(np.median(whole))
        return not better if n % SPLIT_RETRY == 0 else better

    @property
    def outputs(self):
        return self.whole.outputs

    def run(self, changing: list[np.ndarray], steady: list[np.ndarray] | None, outputs: list[np.ndarray],
            adaptive: bool = False) -> None:
        """Run one batch of B frames, writing into ``outputs`` (B rows each); ``adaptive``: the
        way found quicker on this machine for B frames (live batches), else the fixed way.

        ``changing``: inputs new on every call, then ``steady``: inputs bound once and read
        in place while the same list object comes back (a photo's face maps). An input of
        one row beside a batch of B is read whole for every frame (the network broadcasts it).
        """
        b = outputs[0].shape[0]
        with self._lock:
            self._run(b, changing, steady, outputs, adaptive)

    def _run(self, b: int, changing, steady, outputs, adaptive: bool) -> None:
        import openvino as ov

        split = self._split(b, adaptive)
        t = time.perf_counter()
        plan = [(self._parts[i % len(self._parts)], slice(i, i + 1)) for i in range(b)] if split else [
            (self._whole, slice(0, b))]
        per_row = steady is not None and split and any(m.shape[0] == b for m in steady)

        def part(x: np.ndarray, rows: slice) -> np.ndarray:
            return x[rows] if split and x.shape[0] == b else x

        def start(slot: _Slot, rows: slice) -> None:
            row = rows.start if per_row else None
            if steady is not None and (slot.steady is not steady or slot.row != row):
                slot.held = [np.ascontiguousarray(m, dtype=np.float32) for m in steady]
                for i, m in enumerate(slot.held, start=len(changing)):
                    slot.request.set_input_tensor(i, ov.Tensor(part(m, rows), shared_memory=True))
                slot.steady, slot.row = steady, row
            for i, x in enumerate(changing):
                slot.request.set_input_tensor(i, ov.Tensor(part(x, rows), shared_memory=True))
            for i, o in enumerate(outputs):
                slot.request.set_output_tensor(i, ov.Tensor(part(o, rows), shared_memory=True))
            slot.request.start_async()

        for k, (slot, rows) in enumerate(plan):
            if k >= len(self._parts) and split:
                slot.request.wait()  # its previous frame
            start(slot, rows)
        for slot in {id(s): s for s, _ in plan}.values():
            slot.request.wait()
        if adaptive and b >= self.streams and self._parts:
            key = (_size_key(b), split)
            self._times.setdefault(key, collections.deque(maxlen=SPLIT_SAMPLES)).append((time.perf_counter() - t) / b)


def _size_key(b: int) -> int:
    """Batch sizes that share a measurement of which way is quicker: each up to 8, then by powers of two."""
    return b if b <= 8 else 1 << (b - 1).bit_length()


class Int8Network:
    """A compiled int8 :class:`~lipsync.models.still.StillFaceGraph`.

    ``net.rows(mel, maps)``: mel (B, 1, 80, 16) float32 and the seven face maps (numpy, from
    ``StillFaceGraph.mouth().face_maps`` or :attr:`face`: from the rows the graph reads) ->
    (B, 3, 96 - rows_from, 96) float32: the graph computes the rows from :attr:`rows_from` down
    (``StillFaceGraph.mouth``), those the blender pastes. ``net(mel, maps)``: the same as a whole
    crop, zero above them, to compare with the whole float32 graph. One inference at a time
    (:class:`Compiled`). :attr:`face` is the int8 face side for a video's frames, or None where it
    failed its check (:attr:`face_check` says how it went).
    """

    def __init__(self, compiled: "Compiled", check: Check, face: "Int8FaceSide | None" = None,
                 face_check: Check | None = None):
        self.check = check
        self.face = face
        self.face_check = face_check
        self.compiled = compiled
        self.rows_from = 96 - compiled.outputs[0].get_partial_shape()[2].get_length()

    def rows(self, mel: np.ndarray, maps: list[np.ndarray], adaptive: bool = False) -> np.ndarray:
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        rows = np.empty((mel.shape[0], 3, 96 - self.rows_from, 96), np.float32)
        # a photo's maps are bound once, not every batch: read in place (a video's maps are
        # tens of MB a batch), kept alive meanwhile
        self.compiled.run([mel], maps, [rows], adaptive)
        return rows

    def __call__(self, mel: np.ndarray, maps: list[np.ndarray], adaptive: bool = False) -> np.ndarray:
        rows = self.rows(mel, maps, adaptive)
        if not self.rows_from:
            return rows
        out = np.zeros((len(rows), 3, 96, 96), np.float32)
        out[:, :, self.rows_from :] = rows
        return out


class Int8FaceSide:
    """A compiled int8 :class:`~lipsync.models.still.FaceSideGraph`.

    ``face_side(faces)``: (B, 6, 96, 96) float32 model inputs -> the seven maps, numpy
    arrays of their own (the network writes into them). One inference at a time.
    """

    def __init__(self, compiled: "Compiled", check: Check):
        self.check = check
        self.compiled = compiled
        # each map's (C, H, W); the batch is free
        self._shapes = [[o.get_partial_shape()[k].get_length() for k in (1, 2, 3)] for o in compiled.outputs]

    def __call__(self, faces: np.ndarray) -> list[np.ndarray]:
        faces = np.ascontiguousarray(faces, dtype=np.float32)
        outs = [np.empty((faces.shape[0], *shape), np.float32) for shape in self._shapes]
        self.compiled.run([faces], None, outs)
        return outs


# -- building -------------------------------------------------------------------------

_telemetry_lock = threading.Lock()
_telemetry_off = False


def no_telemetry() -> None:
    """Send no usage events from OpenVINO's converter or NNCF, unless the user opted in.

    Both report to Google Analytics unless the user has run OpenVINO's
    ``opt_in_out --opt_out``: a forked copy of this process per event, which on a
    server without internet hangs until it is killed (a public app would report
    its visitors' runs). Here consent is what the user said with ``opt_in_out``:
    ``--opt_in`` still sends; no answer, or an opt-out, sends nothing.
    """
    global _telemetry_off
    with _telemetry_lock:
        if _telemetry_off:
            return
        _telemetry_off = True
        try:
            from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
        except Exception:  # noqa: BLE001 - not installed, or another layout: nothing to quiet
            return
        asked = OptInChecker.check

        def check(self, enable_opt_in_dialog=False, disable_in_ci=False):
            said = asked(self, False, disable_in_ci)  # never a dialog on a server's terminal
            return said if said == ConsentCheckResult.ACCEPTED else ConsentCheckResult.DECLINED

        OptInChecker.check = check


def _config(hint: str = "LATENCY") -> dict:
    # this process's torch thread count, as one stream (LATENCY) or several (THROUGHPUT);
    # float32 where not quantized
    return {
        "PERFORMANCE_HINT": hint,
        "INFERENCE_NUM_THREADS": max(1, torch.get_num_threads()),
        "INFERENCE_PRECISION_HINT": "f32",
    }


def _inputs(model, graph, batches) -> list[list[np.ndarray]]:
    """Calibration batches -> the graph's inputs for each: mel (B, 1, 80, 16) and the face's seven maps.

    The faces go through the face encoder together, as one batch.
    """
    from ..face import model_input

    faces = torch.from_numpy(np.concatenate([model_input(b.face_bgr) for b in batches]))
    with torch.inference_mode():
        maps = graph.face_maps(model.encode_face(faces))
    return [
        [np.ascontiguousarray(b.mels[:, None], dtype=np.float32)] + [m[i : i + 1].numpy() for m in maps]
        for i, b in enumerate(batches)
    ]


def _traced(module: torch.nn.Module, example: tuple) -> torch.jit.ScriptModule:
    """``module`` traced once for the converter. The converter's own trace runs the module a second time
    to check the trace (about 1 s a graph on 2 cores); the graphs have no branch on their inputs, and the
    int8 network is checked against float32 anyway."""
    return torch.jit.trace(module.eval(), example, check_trace=False, strict=False)


def _float32(graph, inputs: list[np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return graph(*(torch.from_numpy(x) for x in inputs)).numpy()


@contextlib.contextmanager
def _quiet():
    """Keep the converter's and NNCF's chatter out of the user's terminal (into the lipsync
    log at DEBUG): NNCF logs every skipped quantizer at INFO and draws progress bars on
    stdout; OpenVINO's converter imports ``nncf.torch``, whose import makes torch warn
    that there is no CUDA toolkit. Levels are restored afterwards."""
    no_telemetry()
    import nncf

    torch_ext = logging.getLogger("torch.utils.cpp_extension")
    levels = logging.getLogger("nncf").level, torch_ext.level
    nncf.set_log_level(logging.WARNING)
    torch_ext.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        nncf.set_log_level(levels[0])
        torch_ext.setLevel(levels[1])
        if buf.getvalue().strip():
            log.debug("nncf: %s", buf.getvalue().strip()[-2000:])


@dataclass
class _Built:
    """What a calibration makes: the quantized models (to cache), compiled, and their checks."""

    quantized: object
    compiled: object
    check: Check
    face_quantized: object | None
    face_compiled: object | None
    face_check: Check | None
    seconds: float

    def network(self) -> Int8Network | None:
        if not self.check.passed:
            return None
        face = Int8FaceSide(self.face_compiled, self.face_check) if self.face_check and self.face_check.passed else None
        return Int8Network(self.compiled, self.check, face, self.face_check)


#: Faces the face side is calibrated on, and checked on (with held-out speech): seeds of their own.
FACE_CALIBRATION = 64
FACE_HELDOUT = 32


def _faces(n: int, seed: int) -> np.ndarray:
    """``n`` augmented crops of the calibration face as model inputs, (n, 6, 96, 96) float32."""
    from ..face import model_input
    from .calibration import augmented_face

    rng = np.random.default_rng(seed)
    return np.concatenate([model_input(augmented_face(rng)) for _ in range(n)])


def _quantize(model, graph):
    """A :class:`_Built` for a folded float32 model: the decoder, then the face side."""
    import nncf
    import openvino as ov

    from .calibration import calibration_batches, heldout_batches

    t0 = time.perf_counter()
    # the mouth's rows only, from the maps' rows it reads; checked below against the whole float32 graph, on the
    # rows that reach the video
    mouth = graph.mouth()
    calib = [[x[0], *mouth.crop(x[1:])] for x in _inputs(model, graph, calibration_batches())]
    held = _inputs(model, graph, heldout_batches())
    # the maps' batch is free too: 1 for a still face (broadcast over the frames), B for a face per frame
    shapes = [ov.PartialShape([-1, 1, 80, 16])] + [ov.PartialShape([-1, *m.shape[1:]]) for m in calib[0][1:]]
    with _quiet(), torch.inference_mode():
        example = tuple(torch.from_numpy(x) for x in calib[0])
        ov_model = ov.convert_model(_traced(mouth, example), input=shapes)
        del example
        release_memory()
        quantized = nncf.quantize(
            ov_model,
            nncf.Dataset(calib),
            subset_size=len(calib),
            ignored_scope=nncf.IgnoredScope(types=["Add"]),
        )
    del ov_model, calib
    release_memory()
    compiled = Compiled(quantized)
    net = Int8Network(compiled, Check(False, 0, 0, 0))
    diffs = []
    for inputs in held:
        ref = _float32(graph, inputs)
        diffs.append(np.abs(net(inputs[0], mouth.crop(inputs[1:])) - ref))
    check = judge(np.concatenate(diffs))
    built = _Built(quantized, compiled, check, None, None, None, 0.0)
    if check.passed:
        built.face_quantized, built.face_compiled, built.face_check = _quantize_face(model, graph, mouth, net, held)
    built.seconds = time.perf_counter() - t0
    return built


def _quantize_face(model, graph, mouth, net: Int8Network, held: list[list[np.ndarray]]):
    """The face side in int8 (the maps ``mouth``, the graph ``net`` was made from, reads), checked end to
    end with the int8 decoder ``net`` against the whole float32 ``graph``: (quantized, compiled, Check)."""
    import nncf
    import openvino as ov

    from ..models.still import FaceSideGraph

    side = FaceSideGraph(model, mouth).eval()
    calib = [f[None] for f in _faces(FACE_CALIBRATION, seed=2)]
    with _quiet(), torch.inference_mode():
        ov_model = ov.convert_model(_traced(side, (torch.from_numpy(calib[0]),)),
                                    input=[ov.PartialShape([-1, 6, 96, 96])])
        quantized = nncf.quantize(
            ov_model,
            nncf.Dataset(calib),
            subset_size=len(calib),
            ignored_scope=nncf.IgnoredScope(types=["Add"]),
        )
    del ov_model
    compiled = Compiled(quantized)
    face = Int8FaceSide(compiled, Check(False, 0, 0, 0))
    # held-out faces, each speaking one held-out window: a face per frame, as in a video
    faces = _faces(FACE_HELDOUT, seed=3)
    mels = np.concatenate([inputs[0] for inputs in held])[: len(faces)]
    diffs = []
    for i in range(0, len(faces), 8):
        f, m = faces[i : i + 8], mels[i : i + 8]
        with torch.inference_mode():
            ref = graph(torch.from_numpy(m), *graph.face_maps(model.encode_face(torch.from_numpy(f)))).numpy()
        diffs.append(np.abs(net(m, face(f)) - ref))
    return quantized, compiled, judge(np.concatenate(diffs))


# -- the cache --------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class _Corrupt(Exception):
    pass


def _read(entry: Path, digest: str):
    """(Int8Network | None, Check) from a cache entry; None if there is none.

    Raises:
        _Corrupt: the entry exists but its manifest or files cannot be trusted.
    """
    manifest_path = entry / "manifest.json"
    if not entry.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("recipe") != RECIPE or manifest.get("weights_sha256") != digest:
            raise _Corrupt("its manifest is for other weights or another recipe")
        check = Check(**manifest["check"])
        if not check.passed:
            return None, check
        face_check = Check(**manifest["face_check"]) if manifest.get("face_check") else None
        for name, want in manifest["files"].items():
            if _sha256_file(entry / name) != want:
                raise _Corrupt(f"{name} does not match its checksum")
        import openvino as ov

        core = ov.Core()

        def compiled(stem: str):
            return Compiled(core.read_model(entry / f"{stem}.xml", entry / f"{stem}.bin"))

        face = Int8FaceSide(compiled("face"), face_check) if face_check and face_check.passed else None
        return Int8Network(compiled("model"), check, face, face_check), check
    except _Corrupt:
        raise
    except Exception as e:  # noqa: BLE001 - anything unreadable is rebuilt, never trusted
        raise _Corrupt(f"{type(e).__name__}: {str(e).strip()[:200]}") from None


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock file (POSIX); elsewhere only the atomic rename protects entries."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove(entry: Path) -> None:
    trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}-{secrets.token_hex(4)}")
    with contextlib.suppress(OSError):
        os.rename(entry, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _write(entry: Path, digest: str, built: _Built) -> None:
    """Write the entry into a temporary folder beside it, then rename it into place."""
    import nncf
    import openvino as ov

    tmp = entry.with_name(f".tmp-{entry.name}-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    try:
        files = {}
        models = {"model": built.quantized if built.check.passed else None,
                  "face": built.face_quantized if built.face_check and built.face_check.passed else None}
        for stem, quantized in models.items():
            if quantized is not None:
                ov.save_model(quantized, tmp / f"{stem}.xml", compress_to_fp16=False)
                files.update({n: _sha256_file(tmp / n) for n in (f"{stem}.xml", f"{stem}.bin")})
        manifest = {
            "recipe": RECIPE,
            "weights_sha256": digest,
            "check": asdict(built.check),
            "face_check": asdict(built.face_check) if built.face_check else None,
            "files": files,
            "calibration_s": round(built.seconds, 2),
            "openvino": ov.__version__,
            "nncf": nncf.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if entry.exists():
            _remove(entry)
        os.rename(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class CacheUnwritable(BackendError):
    """The int8 cache holds no entry for these weights and none can be written."""


def load(
    model: torch.nn.Module, digest: str, graph=None, *, uncached: bool = True
) -> tuple[Int8Network | None, Check]:
    """The int8 network for a folded float32 Wav2Lip, from the cache or calibrated now.

    Args:
        model: the :class:`~lipsync.models.Wav2Lip` with batch norm folded, float32 on the CPU.
        digest: :func:`weights_sha256` of the checkpoint's weights (the cache key).
        graph: its :class:`~lipsync.models.still.StillFaceGraph` (made if not given).
        uncached: when the cache has no entry and cannot be written (a read-only mount,
            a full disk), calibrate anyway without caching; False raises
            :class:`CacheUnwritable` instead (``auto`` falls back to float then, rather
            than pay a calibration in every process).

    Returns:
        (the network, or None where the checkpoint failed its check; the check).

    Raises:
        BackendError: OpenVINO or NNCF is missing, or quantization itself failed.
        CacheUnwritable: (a BackendError) no usable entry, none can be written, and not ``uncached``.
    """
    no_telemetry()
    reason = unavailable_reason()
    if reason:
        raise BackendError(reason)
    if graph is None:
        from ..models.still import StillFaceGraph

        graph = StillFaceGraph(model).eval()
    root = cache_root()
    entry = root / f"{digest[:32]}-{RECIPE}"
    try:
        got = _read(entry, digest)
        if got is not None:
            log.info("int8 network for weights %s from the cache (%s)", digest[:12], got[1].summary())
            return got
    except _Corrupt as e:
        log.warning("the int8 cache entry %s is not usable (%s); it will be rebuilt", entry, e)
    with contextlib.ExitStack() as stack:
        try:  # the lock file is opened here, so an unwritable cache is seen here
            root.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_locked(root / f"{entry.name}.lock"))
        except OSError as e:
            if not uncached:
                raise CacheUnwritable(
                    f"the int8 cache {root} is not writable ({e.strerror or e}), so int8 would be "
                    "calibrated again in every process"
                ) from None
            log.warning("the int8 cache %s is not writable (%s); calibrating without caching", root, e)
        try:  # another process may have built it while this one waited for the lock
            got = _read(entry, digest)
            if got is not None:
                return got
        except _Corrupt:
            _remove(entry)
        log.info("calibrating the int8 network for weights %s (once per checkpoint)", digest[:12])
        try:
            built = _build(model, graph)
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001 - report any converter/quantizer failure plainly
            raise BackendError(
                f"Quantizing this checkpoint to int8 failed ({type(e).__name__}: {str(e).strip()[:300]}). "
                "Use --precision fp32 or bf16."
            ) from e
        log.info("int8 calibration took %.1f s; %s", built.seconds, built.check.summary())
        if built.face_check is not None:
            log.info("int8 face side (a video's faces): %s", built.face_check.summary())
        try:
            _write(entry, digest, built)
        except OSError as e:
            log.warning("could not cache the int8 network in %s (%s)", root, e)
    return built.network(), built.check


def _build(model, graph):
    """Calibrate and check (a seam: tests count how often it runs)."""
    return _quantize(model, graph)
