"""The model contract (reference data in tests/data/reference): mel, frame windows, network output."""

import numpy as np
import pytest
import torch

from lipsync.features import mel_windows, melspectrogram, window_starts
from lipsync.media.audio import load_audio
from lipsync.face import model_input
from lipsync.models import load_wav2lip


def test_wav_decodes_like_the_reference(oracle, oracle_wav):
    wav, sr = load_audio(oracle_wav)
    assert sr == 16000
    np.testing.assert_allclose(wav, oracle["wav_samples_16k"], atol=1e-6)


def test_mel_matches_reference(oracle):
    mel = melspectrogram(oracle["wav_samples_16k"])
    assert mel.shape == oracle["mel"].shape == (80, 580)
    assert mel.dtype == np.float32
    assert np.abs(mel - oracle["mel"]).max() <= 1e-3


def test_mel_uses_reflection_padding_at_the_edges(oracle):
    # zero padding (librosa >= 0.10 default) changes the first and last columns
    mel = melspectrogram(oracle["wav_samples_16k"])
    assert np.abs(mel[:, [0, -1]] - oracle["mel"][:, [0, -1]]).max() <= 1e-3


def test_window_starts_match_reference(oracle):
    starts = window_starts(oracle["mel"].shape[1], float(oracle["fps"]))
    assert starts.dtype == np.int64
    np.testing.assert_array_equal(starts, oracle["chunk_starts"])


def test_window_starts_with_frame_count_clamps_the_tail(oracle):
    n = oracle["mel"].shape[1]
    starts = window_starts(n, 25.0, n_frames=181)
    assert len(starts) == 181
    np.testing.assert_array_equal(starts[:177], oracle["chunk_starts"][:177])
    assert starts.max() == n - 16 and (starts[177:] == n - 16).all()


def test_mel_windows_shape_and_content(oracle):
    w = mel_windows(oracle["mel"], 25.0)
    assert w.shape == (178, 80, 16)
    s = oracle["chunk_starts"][100]
    np.testing.assert_array_equal(w[100], oracle["mel"][:, s : s + 16])


@pytest.mark.parametrize("wav", [np.zeros(16000, np.float32), np.full(16000, 1e-9, np.float32)])
def test_silence_gives_finite_mel(wav):
    mel = melspectrogram(wav)
    assert np.isfinite(mel).all()
    assert mel.min() >= -4 and mel.max() <= 4


def test_too_short_audio_is_a_clear_error():
    from lipsync.errors import AudioError

    with pytest.raises(AudioError, match="0.2 seconds"):
        window_starts(10, 25.0)


def _reference_batch(oracle):
    starts = oracle["chunk_starts"][oracle["frame_index"]]
    mels = np.stack([oracle["mel"][:, s : s + 16] for s in starts])[:, None]
    faces = np.repeat(model_input(oracle["face_crop_bgr"]), len(starts), axis=0)
    return torch.from_numpy(mels), torch.from_numpy(faces)


def test_model_reproduces_reference_prediction(checkpoint, oracle):
    model = load_wav2lip(checkpoint)
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    mel, faces = _reference_batch(oracle)
    with torch.inference_mode():
        out = model(mel, faces)
    assert out.shape == (len(mel), 3, 96, 96)
    pred = out.permute(0, 2, 3, 1).numpy()
    assert np.abs(pred - oracle["prediction_bgr"]).max() <= 1e-4


def test_model_input_masks_the_lower_half(oracle):
    x = model_input(oracle["face_crop_bgr"])
    assert x.shape == (1, 6, 96, 96) and x.dtype == np.float32
    assert (x[0, :3, 48:] == 0).all()
    np.testing.assert_allclose(x[0, 3:].transpose(1, 2, 0), oracle["face_crop_bgr"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(x[0, :3, :48], x[0, 3:, :48])


def test_face_crop_matches_reference(oracle):
    import cv2
    import skimage.data

    from lipsync.face import FaceBox, face_crop

    y1, y2, x1, x2 = (int(v) for v in oracle["box_y1y2x1x2"])
    rgb = skimage.data.astronaut()
    crop = face_crop(rgb, FaceBox(y1, y2, x1, x2))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(crop, cv2.resize(bgr[y1:y2, x1:x2], (96, 96)))
    np.testing.assert_array_equal(crop, oracle["face_crop_bgr"])


def test_mel_filterbank_equals_librosa():
    import librosa

    from lipsync.features import mel_basis

    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    np.testing.assert_allclose(mel_basis(), ref, rtol=1e-5, atol=1e-8)
