"""Batched inference: fast path accuracy, face-encoder reuse, silence, OOM back-off."""

import numpy as np
import pytest

from conftest import predict_all, reference_inputs
import torch

from lipsync.speech.activity import speech_weights
from lipsync.errors import ResourceError
from lipsync.face import model_input
from lipsync.models.still import MOUTH_FROM
from lipsync.runtime.generator import Generator
from lipsync.models import load_wav2lip


def test_reference_path_matches_oracle(checkpoint, oracle):
    face, mels = reference_inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", fast=False, batch_size=4)
    assert gen.precision == "fp32"
    out = predict_all(gen, face, mels)
    assert out.shape == (15, 96, 96, 3)
    assert np.abs(out - oracle["prediction_bgr"]).max() <= 1e-4


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_fast_path_stays_within_2_over_255_of_float32(checkpoint, oracle, precision):
    face, mels = reference_inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", precision=precision, fast=True)
    out = predict_all(gen, face, mels)
    top = gen.rows_from()  # the fast path computes the mouth's rows (test_int8.py, below)
    assert top == MOUTH_FROM
    assert np.abs(out - oracle["prediction_bgr"])[:, top:].max() <= 2 / 255
    own = model_input(face)[0, :3, :top].transpose(1, 2, 0)  # the face's own pixels above them
    np.testing.assert_allclose(out[:, :top], np.broadcast_to(own, out[:, :top].shape), atol=1 / 255)


def test_face_encoder_reuse_equals_full_forward(checkpoint, oracle):
    face, mels = reference_inputs(oracle)
    model = load_wav2lip(checkpoint)
    from lipsync.face import model_input

    faces = torch.from_numpy(model_input(face))
    m = torch.from_numpy(mels[:, None])
    with torch.inference_mode():
        full = model(m, faces.expand(len(m), -1, -1, -1))
        reused = model.decode(model.encode_audio(m), model.encode_face(faces))
    assert (full - reused).abs().max().item() <= 1e-5


def test_silent_frames_skip_the_network_and_show_the_rest_face(checkpoint, oracle, monkeypatch):
    face, mels = reference_inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", fast=True, precision="fp32")
    seen = []
    real = gen._forward
    monkeypatch.setattr(gen, "_forward", lambda prep, m: (seen.append(len(m)), real(prep, m))[1])
    weights = np.array([1, 1, 1, 0.5, 0, 0, 0, 0, 0.5, 1, 1, 1, 1, 1, 1], np.float32)
    out = predict_all(gen, face, mels, weights=weights)
    # one forward for the rest face, then only the 11 frames with weight > 0
    assert seen[0] == 1 and sum(seen[1:]) == 11
    rest = out[4]
    for i in (5, 6, 7):
        np.testing.assert_array_equal(out[i], rest)
    plain = predict_all(gen, face, mels)
    np.testing.assert_allclose(out[weights == 1], plain[weights == 1], atol=1e-6)
    np.testing.assert_allclose(out[3], 0.5 * plain[3] + 0.5 * rest, atol=1e-5)


def test_speech_weights_find_pauses():
    sr, fps = 16000, 25.0
    t = np.arange(sr * 3) / sr
    wav = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    wav[sr : 2 * sr] = 0.0  # one second of silence in the middle
    w = speech_weights(wav, sr, 75, fps)
    assert w.shape == (75,)
    assert (w[:20] == 1).all() and (w[-20:] == 1).all()
    assert (w[30:42] == 0).all()  # well inside the pause (windows look 0.2 s ahead)
    edge = w[20:32]
    assert (np.diff(edge) <= 0).all() and 0 < edge[edge < 1].max() < 1  # a fade, not a snap


def test_short_gaps_between_words_keep_moving():
    sr = 16000
    t = np.arange(sr * 2) / sr
    wav = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    wav[sr : sr + sr // 10] = 0.0  # 0.1 s gap
    assert (speech_weights(wav, sr, 50, 25.0) == 1).all()


def test_oom_halves_the_batch_and_finishes(checkpoint, oracle, monkeypatch):
    face, mels = reference_inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", fast=True, precision="fp32", batch_size=8)
    real = gen._forward

    sizes = []

    def limited(prep, m):
        sizes.append(len(m))
        if len(m) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(prep, m)

    monkeypatch.setattr(gen, "_forward", limited)
    out = predict_all(gen, face, mels)
    # 8 fails, 4 fails, then the rest of the call runs at 2
    assert sizes[:2] == [8, 4] and max(sizes[2:]) == 2
    assert np.abs(out - oracle["prediction_bgr"])[:, gen.rows_from():].max() <= 1e-4
    # the back-off belongs to that call: the next one starts at the generator's size again
    sizes.clear()
    predict_all(gen, face, mels)
    assert gen.batch_size == 8 and sizes[0] == 8


def test_oom_at_batch_one_is_a_clear_error(checkpoint, oracle, monkeypatch):
    face, mels = reference_inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", batch_size=4)

    def always(prep, m):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(gen, "_forward", always)
    with pytest.raises(ResourceError, match="ran out of memory"):
        predict_all(gen, face, mels)


def test_other_errors_are_not_mistaken_for_oom(checkpoint, oracle, monkeypatch):
    face, mels = reference_inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", batch_size=4)
    monkeypatch.setattr(gen, "_forward", lambda p, m: (_ for _ in ()).throw(ValueError("bug")))
    with pytest.raises(ValueError, match="bug"):
        predict_all(gen, face, mels)
    assert gen.batch_size == 4


def test_cuda_without_gpu_is_a_clear_error(checkpoint):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from lipsync.errors import InputError

    with pytest.raises(InputError, match="no CUDA GPU"):
        Generator(load_wav2lip(checkpoint), device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_stays_close_to_float32(checkpoint, oracle):
    face, mels = reference_inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cuda")
    assert gen.precision == "fp16"
    out = predict_all(gen, face, mels)
    assert np.abs(out - oracle["prediction_bgr"])[:, gen.rows_from():].max() <= 2 / 255


@pytest.mark.parametrize("step", [2, 3])
def test_frame_step_runs_the_network_on_key_frames_and_blends_between(checkpoint, oracle, step, monkeypatch):
    starts = oracle["chunk_starts"][:23]
    mels = np.stack([oracle["mel"][:, s : s + 16] for s in starts]).astype(np.float32)
    face = oracle["face_crop_bgr"]
    gen = Generator(load_wav2lip(checkpoint), device="cpu", fast=True, precision="fp32", batch_size=4)
    full = predict_all(gen, face, mels)
    ran = []
    real = gen._forward
    monkeypatch.setattr(gen, "_forward", lambda p, m: (ran.append(len(m)), real(p, m))[1])
    stepped = predict_all(gen, face, mels, step=step)
    keys = sorted(set(range(0, 23, step)) | {22})
    assert sum(ran) == len(keys) and stepped.shape == full.shape
    np.testing.assert_allclose(stepped[keys], full[keys], atol=1e-6)
    for a, b in zip(keys, keys[1:]):
        for i in range(a + 1, b):
            t = (i - a) / (b - a)
            np.testing.assert_allclose(stepped[i], (1 - t) * full[a] + t * full[b], atol=1e-5)


def test_still_face_decoder_equals_the_full_forward(checkpoint, oracle):
    from lipsync.face import model_input
    from lipsync.models.loading import fold_batchnorm
    from lipsync.models.still import FaceDecoder

    _, mels = reference_inputs(oracle)
    model = fold_batchnorm(load_wav2lip(checkpoint))
    faces = torch.from_numpy(model_input(oracle["face_crop_bgr"]))
    m = torch.from_numpy(mels[:, None])
    with torch.inference_mode():
        full = model(m, faces.expand(len(m), -1, -1, -1))
        still = FaceDecoder(model, model.encode_face(faces))(model.encode_audio(m))
        # from MOUTH_FROM, only the mouth's rows are computed: the same values
        mouth = FaceDecoder(model, model.encode_face(faces), MOUTH_FROM)
        rows = mouth(model.encode_audio(m))
        # and stacked with another face, each gets its own
        other = torch.from_numpy(model_input(np.ascontiguousarray(oracle["face_crop_bgr"][:, ::-1])))
        pair = FaceDecoder.stacked([(mouth, 2), (FaceDecoder(model, model.encode_face(other), MOUTH_FROM), 1)])
        stacked = pair(model.encode_audio(m[:3]))
        other_full = model(m[2:3], other)
    assert (full - still).abs().max().item() <= 1e-5
    assert rows.shape == (len(m), 3, 96 - MOUTH_FROM, 96)
    assert (full[:, :, MOUTH_FROM:] - rows).abs().max().item() <= 1e-5
    assert (stacked[:2] - rows[:2]).abs().max().item() <= 1e-5
    assert (stacked[2:] - other_full[:, :, MOUTH_FROM:]).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="fold batch norm"):
        FaceDecoder(load_wav2lip(checkpoint), model.encode_face(faces))


CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 2147483648 bytes. Error code 12 (Cannot allocate memory)"


@pytest.mark.parametrize(
    "device, error, says",
    [
        ("cpu", RuntimeError(CPU_OOM), "The computer ran out of memory (cpu)"),
        ("cpu", MemoryError(), "The computer ran out of memory (cpu)"),
        ("cuda:0", torch.OutOfMemoryError("CUDA out of memory"), "The GPU (cuda:0) ran out of memory"),
    ],
)
def test_the_out_of_memory_message_names_the_device_that_ran_out(checkpoint, oracle, monkeypatch, device, error, says):
    face, mels = reference_inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", precision="fp32", batch_size=4)
    sizes = []

    def always(prep, m):
        sizes.append(len(m))
        raise error

    monkeypatch.setattr(gen, "_forward", always)
    monkeypatch.setattr(gen, "_prepare", lambda crops, still: None, raising=False)  # nothing moves to the device
    monkeypatch.setattr(gen, "device", torch.device(device))  # the message, not the run, is under test
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.raises(ResourceError) as got:
        predict_all(gen, face, mels)
    msg = str(got.value)
    assert msg.startswith(says) and sizes == [4, 2, 1]  # the back-off ran first, down to one frame
    if device == "cpu":
        assert "GPU" not in msg and "--device cpu" not in msg
    else:
        assert "--device cpu" in msg
