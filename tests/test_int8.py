"""The int8 backend: accuracy against float32, refusal of checkpoints it cannot carry, its cache.

Quantizing costs tens of seconds, so the seed-1234 checkpoint is calibrated
once (here, or by an earlier test in the session's cache, whose entry is then
copied into this module's own cache folder) and its build is kept: the cache
tests replay it through the real cache code instead of calibrating again.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import predict_all, reference_inputs

from lipsync.errors import BackendError
from lipsync.models import load_wav2lip
from lipsync.models.loading import fold_batchnorm
from lipsync.face import model_input
from lipsync.models.still import MOUTH_FROM, StillFaceGraph
from lipsync.runtime import int8
from lipsync.runtime.generator import Generator, _torch_auto, resolve_precision

needs_int8 = pytest.mark.skipif(
    int8.unavailable_reason() is not None, reason="the int8 runtime (openvino, nncf) is not installed"
)
CPU = torch.device("cpu")


def _entry(root):
    entries = [p for p in (root / "int8").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 1, entries
    return entries[0]


def _built_from(entry: Path) -> "int8._Built":
    """A cache entry read back as the build that wrote it (its models, compiled; its checks)."""
    import openvino as ov

    manifest = json.loads((entry / "manifest.json").read_text())
    core = ov.Core()
    model = core.read_model(entry / "model.xml", entry / "model.bin")
    face = core.read_model(entry / "face.xml", entry / "face.bin")
    return int8._Built(model, int8.Compiled(model), int8.Check(**manifest["check"]), face, int8.Compiled(face),
                       int8.Check(**manifest["face_check"]), manifest["calibration_s"])


@pytest.fixture(scope="module")
def calibrated(checkpoint, tmp_path_factory):
    """The seed-1234 checkpoint's int8 generator, in a cache of its own, and its build (kept, to replay).

    Where an earlier test of the session has calibrated this checkpoint already (the app's tests do, in the
    server), its entry is copied here and read back as the build, instead of calibrating again (about 25 s).
    """
    import os

    cache = tmp_path_factory.mktemp("int8-cache")
    name = f"{int8.weights_sha256(load_wav2lip(checkpoint))[:32]}-{int8.RECIPE}"
    earlier = Path(os.environ["LIPSYNC_CACHE"]) / "int8" / name
    if (earlier / "manifest.json").exists():
        shutil.copytree(earlier, cache / "int8" / name)
    builds = []
    real = int8._build
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNC_CACHE", str(cache))
        mp.setattr(int8, "_build", lambda *a: builds.append(real(*a)) or builds[-1])
        gen = Generator(load_wav2lip(checkpoint), device="cpu", precision="int8")
    assert len(builds) == (0 if earlier.exists() else 1)
    assert _entry(cache).name == name
    build = builds[0] if builds else _built_from(cache / "int8" / name)
    return {"gen": gen, "cache": cache, "build": build}


class Replay:
    """Stands in for ``int8._build``: hands back the kept build after ``delay`` s, counting calls."""

    def __init__(self, build):
        self.build, self.calls, self.delay = build, 0, 0.0

    def __call__(self, model, graph):
        self.calls += 1
        time.sleep(self.delay)
        return self.build


@pytest.fixture
def replay(calibrated, monkeypatch):
    fake = Replay(calibrated["build"])
    monkeypatch.setattr(int8, "_build", fake)
    return fake


def outlier_checkpoint(path, k: float = 1000.0):
    """Seed-1234 weights with one channel of the last hidden layer k times larger and the
    layer after it reading that channel k times weaker: the same function in float32
    (ReLU is positively homogeneous), but one channel swamps the per-tensor int8 range
    of the final convolution's input, and the other 31 round to nothing."""
    from lipsync.models.scratch import scratch_state_dict, write_scratch_checkpoint

    sd = scratch_state_dict(1234)
    sd["output_block.0.conv_block.1.weight"][7] *= k
    sd["output_block.0.conv_block.1.bias"][7] *= k
    sd["output_block.1.weight"][:, 7] /= k
    return write_scratch_checkpoint(path, state_dict=sd)


# -- the graph ------------------------------------------------------------------------------


def test_still_face_graph_equals_the_full_forward(checkpoint, oracle):

    face, mels = reference_inputs(oracle)
    model = fold_batchnorm(load_wav2lip(checkpoint))
    graph = StillFaceGraph(model)
    faces = torch.from_numpy(model_input(face))
    m = torch.from_numpy(mels[:, None])
    with torch.inference_mode():
        full = model(m, faces.expand(len(m), -1, -1, -1))
        split = graph(m, *graph.face_maps(model.encode_face(faces)))
    assert (full - split).abs().max().item() <= 1e-5
    with torch.inference_mode():  # the mouth's rows alone: exactly those rows of the whole graph, from any row
        feats = model.encode_face(faces)
        maps = graph.face_maps(feats)
        for rows_from in (1, MOUTH_FROM, 47, 95):
            graph_rows = graph.mouth(rows_from)
            cut = graph_rows.face_maps(feats)  # only the maps' rows it reads: the same values
            assert [c.shape[2] for c in cut] == [w.shape[2] - r for w, r in zip(maps, graph_rows.map_rows)]
            assert all(torch.equal(c, w) for c, w in zip(cut, graph_rows.crop(maps)))
            mouth = graph_rows(m, *cut)
            assert mouth.shape == (len(m), 3, 96 - rows_from, 96)
            assert (mouth - split[:, :, rows_from:]).abs().max().item() <= 1e-6
        assert sum(graph.mouth().map_rows) > 0  # the mouth's graph reads fewer rows of the maps
    with pytest.raises(ValueError, match="fold batch norm"):
        StillFaceGraph(load_wav2lip(checkpoint))


# -- accuracy and fallback ----------------------------------------------------------------------


@needs_int8
def test_int8_stays_within_its_bound_on_thereference_inputs(calibrated, oracle):
    gen = calibrated["gen"]
    assert gen.precision == "int8" and gen.note == ""
    assert "int8 (OpenVINO; checked" in gen.description
    face, mels = reference_inputs(oracle)
    out = predict_all(gen, face, mels)
    diff = np.abs(out - oracle["prediction_bgr"])  # the original code's float32 output
    mouth = diff[:, int8.CHECK_ROWS]
    assert mouth.max() <= int8.BOUND_MAX and mouth.mean() <= int8.BOUND_MEAN
    top = gen._int8.rows_from
    assert top == MOUTH_FROM <= int8.CHECK_ROWS.start  # every row that reaches the video is computed...
    assert diff[:, top:].max() <= int8.BOUND_MAX  # ...and every row computed is as close
    # the rows above are the face's own: the top of the crop the network was given
    own = model_input(face)[0, :3, :top].transpose(1, 2, 0)
    np.testing.assert_array_equal(out[:, :top], np.broadcast_to(own, out[:, :top].shape))
    assert gen._int8.check.passed and gen._int8.check.frames == 32


@needs_int8
def test_int8_keeps_silence_skipping_and_frame_step(calibrated, oracle, monkeypatch):
    gen = calibrated["gen"]
    face, mels = reference_inputs(oracle)
    full = predict_all(gen, face, mels)
    ran = []
    net = gen._int8
    rows = net.rows
    monkeypatch.setattr(net, "rows", lambda m, maps, **kw: (ran.append(len(m)), rows(m, maps, **kw))[1])
    weights = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], np.float32)
    out = predict_all(gen, face, mels, weights=weights)
    assert ran[0] == 1 and sum(ran[1:]) == 9  # the rest face once, then only the 9 speaking frames
    np.testing.assert_allclose(out[weights > 0], full[weights > 0], atol=1e-6)
    assert np.ptp(out[weights == 0], axis=0).max() == 0  # every pause shows the same rest face
    ran.clear()
    stepped = predict_all(gen, face, mels, step=2)
    assert sum(ran) == 8 and stepped.shape == full.shape
    np.testing.assert_allclose(stepped[::2], full[::2], atol=1e-6)


@needs_int8
def test_a_checkpoint_int8_cannot_carry_runs_in_float32_and_says_why(
    tmp_path, monkeypatch, oracle, example_image, caplog
):
    from lipsync import LipSync, Speech
    from lipsync.options import GenerateOptions

    from lipsync.runtime import calibration

    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path / "cache"))
    # calibrated on 3 of the 10 faces (the test's time): the flaw is in the weights, not in the sample
    real = calibration.calibration_batches
    monkeypatch.setattr(calibration, "calibration_batches", lambda faces=10, per_face=8: real(3, per_face))
    ckpt = outlier_checkpoint(tmp_path / "outlier.pth")
    face, mels = reference_inputs(oracle)
    fp32 = Generator(load_wav2lip(ckpt), device="cpu", precision="fp32")
    assert np.abs(predict_all(fp32, face, mels) - oracle["prediction_bgr"])[:, MOUTH_FROM:].max() <= 1e-4  # same
    # function in float32 (on the mouth's rows, which the fast path computes)

    with caplog.at_level(logging.WARNING, logger="lipsync"):
        engine = LipSync(ckpt, device="cpu", precision="int8")
        t = np.arange(16000) / 16000
        r = engine.generate(
            example_image, Speech((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000),
            tmp_path / "a.mp4", GenerateOptions(box=(60, 200, 160, 290)),
        )
    assert r.device.startswith("cpu, fp32, fast path (int8 refused for this checkpoint")
    assert "max " in r.device and "/255" in r.device
    assert any("int8 refused" in m for m in caplog.messages)
    gen = engine.generator
    assert gen.precision == "fp32" and gen._int8 is None
    np.testing.assert_allclose(predict_all(gen, face, mels), predict_all(fp32, face, mels), atol=1e-6)
    check = json.loads((_entry(tmp_path / "cache") / "manifest.json").read_text())["check"]
    assert not check["passed"] and check["max_255"] > int8.BOUND_MAX * 255

    # the refusal is remembered: auto on the same checkpoint does not calibrate again,
    # and falls back to the precision auto picks without int8
    monkeypatch.setattr(int8, "_build", lambda *a: pytest.fail("calibrated a refused checkpoint again"))
    auto = Generator(load_wav2lip(ckpt), device="cpu", precision="auto")
    assert auto.precision == _torch_auto(CPU) and "int8 refused" in auto.description


# -- the cache ------------------------------------------------------------------------------


@needs_int8
def test_second_load_reuses_the_cache_without_calibrating(calibrated, checkpoint, oracle, monkeypatch):
    monkeypatch.setenv("LIPSYNC_CACHE", str(calibrated["cache"]))
    monkeypatch.setattr(int8, "_build", lambda *a: pytest.fail("calibrated again"))
    gen = Generator(load_wav2lip(checkpoint), device="cpu", precision="int8")
    assert gen.precision == "int8" and gen.description == calibrated["gen"].description
    # the face side came back from the cache too, with its own check
    assert gen._int8.face is not None and gen._int8.face_check == calibrated["build"].face_check
    faces = np.stack([oracle["face_crop_bgr"]] * 3)
    from lipsync.face import model_input

    x = np.concatenate([model_input(f) for f in faces])
    for a, b in zip(gen._int8.face(x), calibrated["gen"]._int8.face(x)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    face, mels = reference_inputs(oracle)
    np.testing.assert_allclose(predict_all(gen, face, mels), predict_all(calibrated["gen"], face, mels), atol=1e-6)


def _flip_bytes(entry):
    p = entry / "model.bin"
    data = bytearray(p.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # weights silently changed
    p.write_bytes(bytes(data))


CORRUPTIONS = {
    "flipped weights": _flip_bytes,
    "truncated weights": lambda e: (e / "model.bin").write_bytes((e / "model.bin").read_bytes()[:1000]),
    "missing graph": lambda e: (e / "model.xml").unlink(),
    "missing face side": lambda e: (e / "face.bin").unlink(),
    "garbled manifest": lambda e: (e / "manifest.json").write_text('{"recipe": '),
}


@needs_int8
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_cache_entry_is_rebuilt_not_trusted(
    calibrated, replay, checkpoint, oracle, tmp_path, monkeypatch, caplog, corruption
):
    shutil.copytree(calibrated["cache"] / "int8", tmp_path / "int8")
    entry = _entry(tmp_path)
    CORRUPTIONS[corruption](entry)
    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="lipsync"):
        gen = Generator(load_wav2lip(checkpoint), device="cpu", precision="int8")
    assert replay.calls == 1  # rebuilt once
    assert any("not usable" in m and "rebuilt" in m for m in caplog.messages)
    manifest = json.loads((entry / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((entry / name).read_bytes()).hexdigest() == digest
    face, mels = reference_inputs(oracle)
    assert np.abs(predict_all(gen, face, mels) - oracle["prediction_bgr"])[:, MOUTH_FROM:].max() <= int8.BOUND_MAX
    Generator(load_wav2lip(checkpoint), device="cpu", precision="int8")  # and the rebuilt entry is read
    assert replay.calls == 1


@needs_int8
def test_a_face_side_that_fails_its_check_leaves_video_faces_in_float(calibrated, checkpoint, oracle, tmp_path, monkeypatch):
    """The decoder passed but the face side did not: a video's faces run in float32 into the
    int8 decoder, the description says so, and the cache remembers it without a face graph."""
    import dataclasses

    built = calibrated["build"]
    failed = int8.Check(False, 9.5, 0.9, built.face_check.frames)
    monkeypatch.setattr(int8, "_build", Replay(dataclasses.replace(built, face_check=failed)))
    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path))
    for _ in range(2):  # built, then read back from the cache
        gen = Generator(load_wav2lip(checkpoint), device="cpu", precision="int8")
        assert gen.precision == "int8" and gen._int8.face is None
        assert gen.description.endswith("mean %.2f/255; video faces float32), fast path" % built.check.mean_255)
    manifest = json.loads((_entry(tmp_path) / "manifest.json").read_text())
    assert manifest["face_check"]["passed"] is False and "face.bin" not in manifest["files"]
    face, mels = reference_inputs(oracle)
    faces = [face] * 4
    out = np.concatenate(list(gen.predict(lambda i: faces[i], mels[:4], batch_size=4)))
    np.testing.assert_allclose(out, predict_all(gen, face, mels[:4]), atol=2 / 255)


@needs_int8
def test_concurrent_first_loads_calibrate_once_and_leave_one_whole_entry(replay, checkpoint, tmp_path, monkeypatch):
    # flock locks belong to open file descriptions, so two threads contend as two processes would
    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path))
    replay.delay = 0.5
    digest = int8.weights_sha256(load_wav2lip(checkpoint))
    model = fold_batchnorm(load_wav2lip(checkpoint))
    results, errors = [], []

    def first_use():
        try:
            results.append(int8.load(model, digest))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and replay.calls == 1
    assert all(net is not None and check.passed for net, check in results)
    names = sorted(p.name for p in (tmp_path / "int8").iterdir())
    assert [n for n in names if not n.endswith(".lock")] == [_entry(tmp_path).name]  # no temporary leftovers


@contextlib.contextmanager
def _read_only(path):
    """``path`` made really read-only: a read-only bind mount where this process may mount
    (root, who ignores permission bits), else its permission bits."""
    import os
    import subprocess

    if os.geteuid() != 0:
        dirs = [path, *(p for p in path.rglob("*") if p.is_dir())]
        for d in dirs:
            d.chmod(0o555)
        try:
            yield path
        finally:
            for d in dirs:
                d.chmod(0o755)
        return
    ro = path.with_name(path.name + "-ro")
    ro.mkdir()
    if shutil.which("mount") is None or subprocess.run(
        ["mount", "--bind", "-o", "ro", str(path), str(ro)], capture_output=True, timeout=30
    ).returncode != 0:
        pytest.skip("running as root where a read-only bind mount is not allowed")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True, timeout=30)


@needs_int8
def test_an_unwritable_cache_makes_auto_fall_back_and_say_so(replay, checkpoint, example_image, tmp_path, monkeypatch):
    """An existing cache on a read-only mount (an image layer, a full disk) without this checkpoint's
    entry: auto runs the torch fast path and says why, explicit int8 calibrates without caching."""
    from lipsync import LipSync, Speech
    from lipsync.options import GenerateOptions
    from lipsync.runtime import generator

    cache = tmp_path / "cache"
    (cache / "int8" / "0123-another-checkpoint").mkdir(parents=True)  # the cache exists, for other weights
    monkeypatch.setattr(generator, "cpu_runs_int8", lambda: True)
    with _read_only(cache) as ro:
        monkeypatch.setenv("LIPSYNC_CACHE", str(ro))
        engine = LipSync(checkpoint, device="cpu", precision="auto")
        t = np.arange(16000) / 16000
        r = engine.generate(
            example_image, Speech((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000),
            tmp_path / "a.mp4", GenerateOptions(box=(60, 200, 160, 290)),
        )
        assert r.video.is_file() and engine.generator.precision == _torch_auto(CPU)
        assert "int8 not used: the int8 cache" in r.device and "not writable" in r.device
        assert replay.calls == 0  # auto does not calibrate in every process
        explicit = Generator(load_wav2lip(checkpoint), device="cpu", precision="int8")
        assert explicit.precision == "int8" and replay.calls == 1  # asked for: calibrated, not cached
    assert sorted(p.name for p in (cache / "int8").iterdir()) == ["0123-another-checkpoint"]


class Counting:
    """Wraps an int8 callable, noting each call's batch sizes; ``attrs`` stand beside it."""

    def __init__(self, fn, calls, **attrs):
        self.fn, self.calls = fn, calls
        self.__dict__.update(attrs)

    def __call__(self, *args, **kw):
        self.calls.append(tuple(len(a[0]) if isinstance(a, list) else len(a) for a in args))
        return self.fn(*args, **kw)


@needs_int8
def test_a_video_runs_the_int8_network_with_a_face_per_frame(calibrated, checkpoint, oracle, monkeypatch):
    """A driving video on int8 runs the int8 network (what the description says), with each
    frame's own face maps, within the same bound against float32 as a photo."""
    gen = calibrated["gen"]
    assert "int8 (OpenVINO; checked" in gen.description
    rng = np.random.default_rng(5)
    base = oracle["face_crop_bgr"].astype(np.int16)
    faces = [np.clip(base + rng.integers(-40, 40, (1, 1, 3)) + k, 0, 255).astype(np.uint8) for k in range(12)]
    mels = np.stack([oracle["mel"][:, s : s + 16] for s in oracle["chunk_starts"][:12]]).astype(np.float32)
    assert "video faces int8" in gen.description
    ran, sides, net = [], [], gen._int8
    monkeypatch.setattr(net, "face", Counting(net.face, sides))
    monkeypatch.setattr(net, "rows", Counting(net.rows, ran))
    out = np.concatenate(list(gen.predict(lambda i: faces[i], mels, batch_size=5)))
    assert [r[0] for r in ran] == [5, 5, 2] and all(b == f for b, f in ran)  # a face per frame, in int8
    assert [s[0] for s in sides] == [5, 5, 2]  # the faces' own side ran in int8 too
    plain = load_wav2lip(checkpoint).eval()
    with torch.inference_mode():
        want = plain(torch.from_numpy(mels[:, None]), torch.from_numpy(np.concatenate([model_input(f) for f in faces])))
    mouth = np.abs(out - want.permute(0, 2, 3, 1).numpy())[:, int8.CHECK_ROWS]
    assert mouth.max() <= int8.BOUND_MAX and mouth.mean() <= int8.BOUND_MEAN
    # above the mouth's rows, each frame keeps its own face
    own = np.stack([model_input(f)[0, :3, :MOUTH_FROM].transpose(1, 2, 0) for f in faces])
    np.testing.assert_array_equal(out[:, :MOUTH_FROM], own)
    # per frame and still agree for the same face (not bit for bit: OpenVINO's kernels depend on the batch)
    assert np.abs(out[3] - predict_all(gen, faces[3], mels)[3]).max() <= 2 / 255


# -- choosing int8 ----------------------------------------------------------------------------


def test_without_the_runtime_int8_is_a_clear_error_and_auto_keeps_torch(monkeypatch, checkpoint):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(BackendError, match="pip install openvino nncf"):
        resolve_precision("int8", CPU)
    assert resolve_precision("auto", CPU) == _torch_auto(CPU)
    from lipsync import LipSync

    with pytest.raises(BackendError, match="openvino"):
        LipSync(checkpoint, device="cpu", precision="int8")


def test_int8_is_for_the_cpu_the_gpu_keeps_fp16():
    assert resolve_precision("int8", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"


@needs_int8
def test_int8_needs_the_fast_path(checkpoint):
    from lipsync.errors import InputError

    with pytest.raises(InputError, match="fast path"):
        Generator(load_wav2lip(checkpoint), device="cpu", precision="int8", fast=False)


def test_the_command_line_offers_int8():
    from lipsync.cli import _parser

    args = _parser().parse_args(["generate", "--image", "a.jpg", "--text", "hi", "--out", "a.mp4",
                                 "--precision", "int8"])
    assert args.precision == "int8"


TELEMETRY_PROBE = """
import sys
from openvino_telemetry import Telemetry
if sys.argv[1] == "lipsync":
    from lipsync.runtime.int8 import no_telemetry
    no_telemetry()
t = Telemetry(app_name="probe", app_version="0", tid="G-PROBE", backend="ga4", enable_opt_in_dialog=False)
print("consent", bool(t.consent))
"""


@pytest.mark.parametrize("said", [None, "1"])
def test_openvino_and_nncf_send_no_telemetry_unless_the_user_opted_in(tmp_path, said):
    # NNCF and OpenVINO's converter count as consent a user who never answered; lipsync does not
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    if said is not None:  # what OpenVINO's `opt_in_out --opt_in` writes
        (home / "intel").mkdir()
        (home / "intel" / "openvino_telemetry").write_text(said)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def consent(who: str) -> bool:
        out = subprocess.run([sys.executable, "-c", TELEMETRY_PROBE, who], env=env, capture_output=True, text=True,
                             timeout=120, check=True).stdout
        return "consent True" in out

    assert consent("lipsync") is (said == "1")
    if said is None:
        assert consent("library") is True, "the library's own default changed: this test no longer proves anything"


def test_int8_stacks_several_faces_in_one_batch(calibrated):
    # live sessions share one int8 call: each face's maps stacked, a face of one crop repeated for its windows
    gen = calibrated["gen"]
    rng = np.random.default_rng(5)
    faces = [gen.prepare_face(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for _ in range(3)]
    video = gen.prepare_face(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), still=False)
    mels = [rng.uniform(-4, 2, (k, 80, 16)).astype(np.float32) for k in (1, 2, 1, 1)]
    items = [(faces[0], mels[0]), (faces[1], mels[1]), (video, mels[2]), (faces[2], mels[3])]
    together = gen.forward_many(items)
    for (face, mel), got in zip(items, together):
        # the int8 kernels may round a last bit differently for another batch shape: far inside the int8 bound
        np.testing.assert_allclose(got, gen.forward_many([(face, mel)])[0], atol=1e-3)


class Counted:
    """An OpenVINO infer request that counts its starts (and may be made slower by ``delay`` seconds)."""

    def __init__(self, request, delay: float = 0.0):
        self.request, self.started, self.delay = request, 0, delay

    def start_async(self):
        self.started += 1
        time.sleep(self.delay)
        return self.request.start_async()

    def __getattr__(self, name):
        return getattr(self.request, name)


def count_requests(compiled, monkeypatch) -> None:
    for slot in [compiled._whole, *compiled._parts]:
        monkeypatch.setattr(slot, "request", Counted(slot.request))


def started(compiled) -> list[int]:
    """Starts of the request on all threads, then of each stream's requests."""
    return [s.request.started for s in [compiled._whole, *compiled._parts]]


def test_int8_splits_a_batch_over_its_streams_and_gives_the_same_mouths(calibrated, monkeypatch):
    # on 2 cores one request leaves a core waiting at every layer: a batch of at least one frame per
    # stream goes one frame per request, the streams running them at once; a single frame runs on the
    # one request on all threads
    gen = calibrated["gen"]
    net = gen._int8
    if not 2 <= net.compiled.streams <= 8:
        pytest.skip(f"OpenVINO gives this machine {net.compiled.streams} streams; the batch of 8 here assumes 2 to 8")

    for compiled in (net.compiled, net.face.compiled):
        count_requests(compiled, monkeypatch)

    rng = np.random.default_rng(9)
    photo = gen.prepare_face(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    crops = rng.uniform(0, 1, (8, 6, 96, 96)).astype(np.float32)
    mels = rng.uniform(-4, 2, (8, 1, 80, 16)).astype(np.float32)
    pool = len(net.compiled._parts)
    parts = [0, *[len(range(k, 8, pool)) for k in range(pool)]]  # frame i on request i % pool
    assert sum(parts) == 8

    video_maps = net.face(crops)  # a driving video's faces: the face side splits its batch too
    assert started(net.face.compiled) == parts
    for maps in (photo.maps, video_maps):  # a photo's maps (one row, read whole by each part), a video's
        before = started(net.compiled)
        split = net(mels, maps)
        assert [a - b for a, b in zip(started(net.compiled), before)] == parts
        monkeypatch.setattr(net.compiled, "parallel", False)
        whole = net(mels, maps)
        monkeypatch.setattr(net.compiled, "parallel", True)
        # the kernels for one frame may round a last bit otherwise than for eight: far inside the
        # int8 bound (4e-3 mean)
        np.testing.assert_allclose(split, whole, atol=1e-3)
        assert np.abs(whole).max() > 0.1
        rows = [net(mels[i : i + 1], [m if len(m) == 1 else m[i : i + 1] for m in maps]) for i in range(8)]
        np.testing.assert_allclose(split, np.concatenate(rows), atol=1e-3)
    monkeypatch.setattr(net.face.compiled, "parallel", False)
    for got, want in zip(video_maps, net.face(crops)):
        np.testing.assert_allclose(got, want, atol=1e-3 * float(np.abs(want).max()))

    before = started(net.compiled)
    net(mels[:1], photo.maps)  # one frame: the request on all threads
    assert [a - b for a, b in zip(started(net.compiled), before)] == [1, *[0] * pool]


def test_int8_runs_a_live_batch_the_way_that_was_quicker_on_this_machine(calibrated, monkeypatch):
    # one frame per request is quicker on some CPUs, the whole batch on one request on others: for the
    # live sessions' batches each size tries both, then keeps the quicker, trying the other again every
    # SPLIT_RETRY batches (a clip's batches split, so that a clip comes out the same every run)
    from lipsync.runtime.int8 import SPLIT_RETRY, SPLIT_SAMPLES

    gen = calibrated["gen"]
    compiled = gen._int8.compiled
    if not 2 <= compiled.streams <= 8:
        pytest.skip(f"OpenVINO gives this machine {compiled.streams} streams")
    b = 2 * compiled.streams
    rng = np.random.default_rng(4)
    photo = gen.prepare_face(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    mels = rng.uniform(-4, 2, (b, 1, 80, 16)).astype(np.float32)
    count_requests(compiled, monkeypatch)

    def ways(calls: int) -> list[bool]:
        """Whether each of ``calls`` batches was split."""
        out = []
        for _ in range(calls):
            before = started(compiled)[0]
            gen._int8(mels, photo.maps, adaptive=True)  # as the live sessions' shared batches run
            out.append(started(compiled)[0] == before)
        return out

    # split batches made slow: the whole batch wins. (0.02 s, 5 ms a frame here, was within the noise of a slow
    # machine's whole batch, 32 ms a frame on a 2-core Zen 2: CI once saw the split way win from batch 27 on.)
    for slot in compiled._parts:
        slot.request.delay = 0.1
    monkeypatch.setattr(compiled, "_times", {})
    monkeypatch.setattr(compiled, "_runs", collections.Counter())
    warm = 2 * (SPLIT_SAMPLES // 2 + 1)
    got = ways(2 * SPLIT_RETRY + 2)
    assert got[:warm] == [True, False] * (warm // 2)  # both ways, in turn
    retried = [n for n in range(warm, len(got)) if got[n]]
    assert retried == [SPLIT_RETRY, 2 * SPLIT_RETRY], got  # otherwise whole, but the split way tried again
    before = started(compiled)[0]
    gen._int8(mels, photo.maps)  # a clip's batch: split, whatever the live batches found
    assert started(compiled)[0] == before

    for slot in compiled._parts:  # now the whole batch is the slow way: split wins
        slot.request.delay = 0.0
    compiled._whole.request.delay = 0.1
    monkeypatch.setattr(compiled, "_times", {})
    monkeypatch.setattr(compiled, "_runs", collections.Counter())
    assert ways(warm + 3)[warm:] == [True, True, True]


def test_a_live_session_opens_with_its_batch_sizes_run_both_ways(calibrated, example_image, monkeypatch):
    # the int8 network's first batch of a size is several times slower than the next (OpenVINO prepares its
    # kernels for the shape): a size first seen live made every open session's frame late when a visitor joined.
    # The first session's opening runs sizes 1-4 both ways, unseen by the clips' and live batches' counts.
    from types import SimpleNamespace

    from lipsync.face import HaarDetector
    from lipsync.live import LiveSession
    from lipsync.runtime.scheduler import WARM_SIZES, Scheduler

    gen = calibrated["gen"]
    compiled = gen._int8.compiled
    monkeypatch.setattr(gen, "scheduler", Scheduler(gen._forward_many, cores=2))  # a fresh engine's
    monkeypatch.setattr(compiled, "_runs", collections.Counter())
    monkeypatch.setattr(compiled, "_times", {})
    ran: list[tuple[int, bool]] = []
    real = compiled._split
    monkeypatch.setattr(compiled, "_split", lambda b, adaptive: ran.append((b, real(b, adaptive))) or ran[-1][1])
    engine = SimpleNamespace(generator=gen, detector=HaarDetector())
    took: list[float] = []
    real_warm = gen.warm_live
    monkeypatch.setattr(gen, "warm_live", lambda *a: took.append(real_warm(*a)) or took[-1])

    with LiveSession(engine, image=example_image, max_side=256, blink=False) as s:
        assert {b for b, _ in ran} == set(range(1, WARM_SIZES + 1))  # before its first frame
        for size in range(1, WARM_SIZES + 1):
            assert (size, False) in ran  # on the one request, whole
            if compiled._parts and size >= compiled.streams:
                assert (size, True) in ran  # and one frame per request
        st = gen.scheduler.stats
        assert st.clip_calls == st.clip_frames == 0 and st.live_frames <= 1  # the session's own mouth at rest
        next(s)
    with LiveSession(engine, image=example_image, max_side=256, blink=False):
        pass
    assert took[0] > 0 and took[1:] == [0.0]  # once per engine
    warmed = len(ran)
    assert real_warm(WARM_SIZES + 2) > 0 and {b for b, _ in ran[warmed:]} == {WARM_SIZES + 1, WARM_SIZES + 2}
