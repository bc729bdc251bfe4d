"""Mouth crops for a moving face (Generator.predict over face_at): a new face per frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsync.face import model_input
from lipsync.models import load_wav2lip
from lipsync.models.still import MOUTH_FROM
from lipsync.runtime.frames import key_frames
from lipsync.runtime.generator import Generator


def _inputs(oracle, n: int = 12):
    rng = np.random.default_rng(5)
    base = oracle["face_crop_bgr"].astype(np.int16)
    faces = [np.clip(base + rng.integers(-40, 40, (1, 1, 3)) + k, 0, 255).astype(np.uint8) for k in range(n)]
    starts = oracle["chunk_starts"][:n]
    mels = np.stack([oracle["mel"][:, s : s + 16] for s in starts]).astype(np.float32)
    return faces, mels


def _all(batches):
    return np.concatenate(list(batches))


@pytest.fixture(scope="module")
def plain_module(checkpoint):
    """The plain float32 module, one full forward per frame (as the original inference)."""
    return load_wav2lip(checkpoint).eval()


def test_each_frame_gets_its_own_face(checkpoint, oracle, plain_module):
    faces, mels = _inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", precision="fp32", fast=True)
    out = _all(gen.predict(lambda i: faces[i], mels, batch_size=5))
    with torch.inference_mode():
        want = plain_module(torch.from_numpy(mels[:, None]), torch.from_numpy(np.concatenate([model_input(f) for f in faces])))
    want = want.permute(0, 2, 3, 1).numpy()
    assert out.shape == want.shape == (12, 96, 96, 3)
    top = gen.rows_from()  # the fast path computes the mouth's rows (test_generator.py)...
    assert top == MOUTH_FROM and np.abs(out - want)[:, top:].max() < 1e-4
    own = np.stack([model_input(f)[0, :3, :top].transpose(1, 2, 0) for f in faces])
    np.testing.assert_array_equal(out[:, :top], own)  # ...and each frame's own face above them
    # and it is not the still-face path: a different face per frame changes the output
    still = _all(gen.predict(faces[0], mels))
    assert np.abs(out[1:] - still[1:]).max() > 1e-2
    np.testing.assert_allclose(out[0], still[0], atol=1e-4)


def test_inactive_frames_skip_the_network(checkpoint, oracle):
    faces, mels = _inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", precision="fp32", fast=True)
    active = np.array([1, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0], bool)
    asked = []

    def face_at(i):
        asked.append(i)
        return faces[i]

    out = _all(gen.predict(face_at, mels, weights=active, batch_size=4))
    assert asked == list(np.flatnonzero(active))
    assert out.shape[0] == 12 and not out[~active].any()
    full = _all(gen.predict(lambda i: faces[i], mels))
    np.testing.assert_allclose(out[active], full[active], atol=1e-5)


def test_frame_step_blends_between_keys_within_each_run(checkpoint, oracle):
    faces, mels = _inputs(oracle)
    gen = Generator(load_wav2lip(checkpoint), device="cpu", precision="fp32", fast=True)
    active = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1], bool)
    keys = key_frames(active, 2)
    assert keys.tolist() == [0, 2, 4, 5, 7, 9, 11]  # every 2nd of each run, and each run's last
    asked = []
    out = _all(gen.predict(lambda i: asked.append(i) or faces[i], mels, weights=active, step=2, batch_size=3))
    assert asked == keys.tolist()
    full = _all(gen.predict(lambda i: faces[i], mels))
    np.testing.assert_allclose(out[keys], full[keys], atol=1e-5)
    for f, (a, b) in {1: (0, 2), 3: (2, 4), 8: (7, 9), 10: (9, 11)}.items():
        np.testing.assert_allclose(out[f], 0.5 * (out[a] + out[b]), atol=1e-6)
    assert not out[6].any()


def test_long_pauses_come_in_small_blocks(checkpoint, oracle):
    """A clip that is mostly pause never yields one huge block (memory stays bounded)."""
    faces, mels = _inputs(oracle, 12)
    many = np.concatenate([mels] * 20)  # 240 frames
    active = np.zeros(len(many), bool)
    active[[3, 200]] = True
    gen = Generator(load_wav2lip(checkpoint), device="cpu", precision="fp32", fast=True)
    sizes = [len(b) for b in gen.predict(lambda i: faces[i % 12], many, weights=active)]
    assert sum(sizes) == 240 and max(sizes) <= 32
