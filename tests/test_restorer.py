"""The face restorer (GFPGAN v1.4 architecture) against the original code's outputs, and the ``face`` mode."""

from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync.models.gfpgan import GFPGAN, gfpgan_v14

DATA = Path(__file__).parent / "data" / "restorer"


@pytest.fixture(scope="module")
def tiny_reference():
    with np.load(DATA / "gfpgan_tiny.npz") as z:
        return {k: z[k] for k in z.files}


def tiny_model(ref) -> GFPGAN:
    # the configuration of make_reference.py's TINY
    model = GFPGAN(out_size=64, style_dim=16, multiplier=2, n_mlp=2, narrow=1 / 32).eval()
    state = {k[2:]: torch.from_numpy(v) for k, v in ref.items() if k.startswith("w/")}
    model.load_state_dict(state, strict=True)
    return model


def test_matches_the_original_code_on_random_weights(tiny_reference):
    model = tiny_model(tiny_reference)
    with torch.no_grad():
        out = model(torch.from_numpy(tiny_reference["input"])).numpy()
    expected = tiny_reference["output"]
    assert out.shape == expected.shape == (2, 3, 64, 64)
    assert np.abs(expected).mean() > 0.1  # a real signal, not zeros
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_each_sample_is_independent_of_the_batch(tiny_reference):
    model = tiny_model(tiny_reference)
    x = torch.from_numpy(tiny_reference["input"])
    with torch.no_grad():
        one = model(x[1:2]).numpy()
    np.testing.assert_allclose(one, tiny_reference["output"][1:2], atol=1e-5, rtol=1e-5)


def test_v14_state_dict_layout_is_the_published_checkpoints():
    """Every key and shape of the original GFPGANv1Clean at v1.4's settings, so the real weights load strictly."""
    expected = []
    for line in (DATA / "gfpgan_v14_state_dict.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        expected.append((key, tuple(int(s) for s in shape.split(","))))
    model = gfpgan_v14()  # on the CPU: 0.7 s, against 5 s for torch's one-off set-up of the meta device
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert sorted(got) == sorted(expected)
    assert len(got) == 285


def test_out_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        GFPGAN(out_size=96)


# --- the ``face`` enhancer ---------------------------------------------------------------------------------------

from lipsync import GenerateOptions  # noqa: E402
from lipsync.blend import Blender, feather_mask  # noqa: E402
from lipsync.enhance import describe, make_enhancer  # noqa: E402
from lipsync.enhance import face as face_mode  # noqa: E402
from lipsync.enhance.detail import DetailTransfer, stretch  # noqa: E402
from lipsync.face import FaceBox  # noqa: E402


def _portrait(seed=0, h=160, w=140):
    rng = np.random.default_rng(seed)
    img = np.full((240, 220, 3), 120, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    face = np.stack([150 + 30 * np.sin(xx / 9.0), 110 + 25 * np.cos(yy / 7.0), 90 + 10 * np.sin((xx + yy) / 5.0)], -1)
    face += rng.normal(0, 4, face.shape)
    img[40 : 40 + h, 40 : 40 + w] = np.clip(face, 0, 255).astype(np.uint8)
    return img, FaceBox(40, 40 + h, 40, 40 + w)


def _pred(seed):
    return np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)


def test_face_is_an_option_value():
    assert GenerateOptions(enhance=" Face ").enhance == "face"
    assert GenerateOptions().enhance == "auto"  # face on a GPU with the weights, fast elsewhere


def test_without_weights_face_falls_back_to_fast_and_says_why(no_restorer_weights):
    enhancer, note = make_enhancer("face", np.ones(3, np.float32))
    assert isinstance(enhancer, DetailTransfer)
    assert note.startswith("fast (face asked for, but the restorer is not available:")
    assert "set LIPSYNC_GFPGAN=PATH" in note and "turned off" in note
    assert "--" not in note  # no command-line flag is promised: there is none for this file
    assert describe("face") == note  # what Result.enhance records


def test_the_weights_are_pinned():
    from lipsync.weights import GFPGAN_V14

    assert GFPGAN_V14.size == 348_632_874 and len(GFPGAN_V14.sha256) == 64
    assert GFPGAN_V14.revision and len(GFPGAN_V14.revision) == 40  # a commit, not a moving branch


def test_a_broken_local_file_falls_back_too(no_restorer_weights, monkeypatch, tmp_path):
    bad = tmp_path / "GFPGANv1.4.pth"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("LIPSYNC_GFPGAN", str(bad))
    enhancer, note = make_enhancer("face")
    assert isinstance(enhancer, DetailTransfer)
    assert "not a usable GFPGAN v1.4 weights file" in note


def test_a_checkpoint_of_another_layout_is_refused(no_restorer_weights, monkeypatch, tmp_path, tiny_reference):
    path = tmp_path / "tiny.pth"
    torch.save({"params_ema": tiny_model(tiny_reference).state_dict()}, path)
    monkeypatch.setenv("LIPSYNC_GFPGAN", str(path))
    enhancer, note = make_enhancer("face")
    assert isinstance(enhancer, DetailTransfer)
    assert "not GFPGAN v1.4's layout" in note


def test_local_weights_load_and_run(no_restorer_weights, monkeypatch, tmp_path, tiny_reference):
    """The published layout ({"params_ema": ...}) through LIPSYNC_GFPGAN; the tiny network stands in for v1.4."""
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": tiny_model(tiny_reference).state_dict(), "params": {}}, path)
    monkeypatch.setenv("LIPSYNC_GFPGAN", str(path))
    import lipsync.models.gfpgan as arch

    monkeypatch.setattr(arch, "gfpgan_v14", lambda: GFPGAN(out_size=64, style_dim=16, multiplier=2, n_mlp=2,
                                                           narrow=1 / 32))
    enhancer, note = make_enhancer("face", device="cpu")
    assert isinstance(enhancer, face_mode.FaceRestorer)
    assert note == "face: GFPGAN v1.4 on cpu, on the mouth region of speaking frames"
    assert not enhancer.half
    img, box = _portrait()
    region = img[box.y1 : box.y2, box.x1 : box.x2]
    out = enhancer(_pred(1), region)
    assert out.shape == region.shape and out.dtype == np.uint8


class _Identity(torch.nn.Module):
    """A stand-in restorer that returns its input: checks colour order, value range and geometry."""

    out_size = 64

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        assert x.shape == (1, 3, 64, 64) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
        return x


def test_restore_round_trip_keeps_the_picture():
    img, box = _portrait()
    region = np.ascontiguousarray(img[box.y1 : box.y2, box.x1 : box.x2])
    back = face_mode.FaceRestorer(_Identity()).restore(region)
    assert back.shape == region.shape
    smooth = cv2_blur(region)
    assert np.abs(back.astype(float) - smooth.astype(float)).mean() < 6  # only the 64 px round trip's loss
    assert np.abs(back.astype(float).mean((0, 1)) - region.astype(float).mean((0, 1))).max() < 1.0  # no colour swap


def cv2_blur(x):
    import cv2

    return cv2.resize(cv2.resize(x, (64, 64), interpolation=cv2.INTER_AREA), (x.shape[1], x.shape[0]),
                      interpolation=cv2.INTER_CUBIC)


def test_silent_frames_are_never_restored_and_speech_fades(tiny_reference):
    model = tiny_model(tiny_reference)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    img, box = _portrait()
    region = np.ascontiguousarray(img[box.y1 : box.y2, box.x1 : box.x2])
    weights = np.array([0.0, 1.0, 0.5, 0.0], np.float32)
    enhancer = face_mode.FaceRestorer(model, weights)
    pred = _pred(2)
    plain = stretch(pred, *region.shape[:2])
    outs = [enhancer(pred, region) for _ in weights]
    assert len(calls) == 2  # the network ran on the two speaking frames only
    np.testing.assert_array_equal(outs[0], plain)
    np.testing.assert_array_equal(outs[3], plain)
    full = outs[1].astype(float) - plain
    half = outs[2].astype(float) - plain
    assert np.abs(full).mean() > 5  # the (random) restorer changed the mouth
    np.testing.assert_allclose(half, 0.5 * full, atol=1.01)


def test_the_paste_keeps_the_photo_outside_the_mouth_mask(tiny_reference):
    img, box = _portrait()
    blender = Blender(img, box, enhance=face_mode.FaceRestorer(tiny_model(tiny_reference)))
    out = blender.paste(_pred(3)[:, :, ::-1])
    mask = feather_mask(box.height, box.width)[:, :, 0]
    changed = np.any(out != img, axis=2)
    inside = np.zeros(img.shape[:2], bool)
    inside[box.y1 : box.y2, box.x1 : box.x2] = mask > 0
    assert changed.any() and not (changed & ~inside).any()  # the eyes and the background stay the photo's


def test_in_the_pipeline_face_runs_or_falls_back_and_the_result_says_which(
    engine, no_restorer_weights, monkeypatch, tmp_path, tiny_reference
):
    from face_corpus import hopper
    from videos import speechlike

    from lipsync import Request, Speech
    from lipsync.face.detect import find_face, offline_detector
    from lipsync.pipeline.result import make_result  # engine.result, without loading the network

    p = hopper()
    box = find_face(p.rgb, offline_detector())
    opts = GenerateOptions(box=box.as_tuple(), label=False, motion=0.0, blink=False, enhance="face")
    speech = Speech(speechlike(1.0), 16000)

    def run(name):
        # the photo's own 96 px crop stands in for the network's mouths (the network is not what is tested here)
        with engine.prepare(Request(p.rgb, tmp_path / name, audio=speech, options=opts)) as parts:
            comp = parts.source.compositor(parts)
            crop = parts.source.key_frame()[1]
            frames = [comp.paste(crop.copy()).copy() for _ in range(25)]
            return frames, make_result(parts, None, "cpu (the network is not loaded here)", None)

    frames, result = run("a.mp4")  # offline, no weights: fast, and why
    assert result.enhance.startswith("fast (face asked for") and len(frames) == 25

    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": tiny_model(tiny_reference).state_dict()}, path)
    monkeypatch.setenv("LIPSYNC_GFPGAN", str(path))
    import lipsync.models.gfpgan as arch

    monkeypatch.setattr(arch, "gfpgan_v14", lambda: GFPGAN(out_size=64, style_dim=16, multiplier=2, n_mlp=2,
                                                           narrow=1 / 32))
    face_mode.forget()
    restored, result = run("b.mp4")
    assert result.enhance.startswith("face: GFPGAN v1.4 on")
    eyes = np.zeros(p.rgb.shape[:2], bool)
    eyes[box.y1 : box.y1 + box.height // 3] = True
    assert all(np.array_equal(f[eyes], p.rgb[eyes]) for f in restored)  # above the mouth: the photo's own
    assert any(np.abs(a.astype(int) - b).mean() > 0.05 for a, b in zip(restored, frames))



def test_the_restorer_runs_on_the_engine_device_and_auto_says_what_ran(
    engine, no_restorer_weights, monkeypatch, tmp_path, tiny_reference
):
    """On a GPU machine, an engine on ``--device cpu`` keeps the restorer on the CPU too; ``auto``
    on that engine runs fast, and Result.enhance says so and why."""
    from face_corpus import hopper
    from videos import speechlike

    from lipsync import Request, Speech
    from lipsync.face.detect import find_face, offline_detector
    from lipsync.pipeline.result import make_result

    assert engine.device == "cpu"
    monkeypatch.setattr(face_mode, "default_device", lambda: "cuda")  # this machine has a GPU, as it were
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": tiny_model(tiny_reference).state_dict()}, path)
    monkeypatch.setenv("LIPSYNC_GFPGAN", str(path))
    import lipsync.models.gfpgan as arch

    monkeypatch.setattr(arch, "gfpgan_v14", lambda: GFPGAN(out_size=64, style_dim=16, multiplier=2, n_mlp=2,
                                                           narrow=1 / 32))
    p = hopper()
    box = find_face(p.rgb, offline_detector())
    speech = Speech(speechlike(0.4), 16000)

    def compose(name, enhance):
        opts = GenerateOptions(box=box.as_tuple(), label=False, motion=0.0, blink=False, enhance=enhance)
        with engine.prepare(Request(p.rgb, tmp_path / name, audio=speech, options=opts)) as parts:
            assert parts.device == "cpu"
            comp = parts.source.compositor(parts)
            return comp, make_result(parts, None, "cpu", None)

    comp, result = compose("face.mp4", "face")
    assert isinstance(comp.enhance, face_mode.FaceRestorer) and comp.enhance.device.type == "cpu"
    assert result.enhance == "face: GFPGAN v1.4 on cpu, on the mouth region of speaking frames"
    comp, result = compose("auto.mp4", "auto")
    assert isinstance(comp.enhance, DetailTransfer)
    assert result.enhance.startswith("fast: ") and result.enhance.endswith(
        "(auto: no CUDA GPU: the face restorer takes about a second per frame on a CPU)")


def test_with_the_network_apart_the_paste_keeps_off_the_gpu(engine, no_restorer_weights, monkeypatch, tmp_path):
    """run(predict=...) (a ZeroGPU Space: the GPU is held only while the network runs): auto runs fast."""
    from face_corpus import hopper
    from videos import speechlike

    from lipsync import Request, Speech
    from lipsync.face.detect import find_face, offline_detector

    monkeypatch.setattr(face_mode, "default_device", lambda: "cuda")  # a GPU machine, as it were
    p = hopper()
    box = find_face(p.rgb, offline_detector())
    opts = GenerateOptions(box=box.as_tuple(), label=False, motion=0.0, blink=False)
    monkeypatch.setattr(engine, "device", "auto")  # the shared engine, as on --device auto
    result = engine.run(Request(p.rgb, tmp_path / "z.mp4", audio=Speech(speechlike(0.4), 16000), options=opts),
                             predict=lambda parts: np.repeat(parts.crop[None], len(parts.mels), 0))
    assert result.enhance.startswith("fast: ") and "(auto: no CUDA GPU" in result.enhance
