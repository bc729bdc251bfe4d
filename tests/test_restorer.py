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
    with torch.device("meta"):
        model = gfpgan_v14()
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert sorted(got) == sorted(expected)
    assert len(got) == 285


def test_out_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        GFPGAN(out_size=96)
