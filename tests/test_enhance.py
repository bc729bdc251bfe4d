"""The mouth's restoration (lipsync.enhance): bounds measured on real faces, silence, seams, flicker, options.

The faces are the corpus photos (astronaut, Grace Hopper). Wav2Lip's resolution
is simulated as in benchmarks/restore.py: the lower half of the face crop is its
own 96 px crop, blurred a little, shifted 3 grey levels and with 1.5 levels of
noise (what a network adds), stretched back.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from face_corpus import astronaut, hopper
from lipsync import GenerateOptions
from lipsync.blend import Blender, feather_mask, paste_mouth
from lipsync.enhance import describe, make_enhancer
from lipsync.enhance.detail import DetailTransfer, stretch
from lipsync.errors import InputError
from lipsync.face.detect import find_face, offline_detector


@pytest.fixture(scope="module")
def faces():
    out = {}
    for name, p in (("astronaut", astronaut()), ("hopper", hopper())):
        box = find_face(p.rgb, offline_detector())
        out[name] = (p.rgb, box)
    return out


def _region(rgb, box):
    return np.ascontiguousarray(rgb[box.y1 : box.y2, box.x1 : box.x2])


def _network(region, seed=1, noise=1.5):
    """(96, 96, 3) uint8 RGB: the region as the network would draw it back."""
    small = cv2.resize(region, (96, 96)).astype(np.float32)
    small = cv2.GaussianBlur(small, (0, 0), 0.7) + 3.0
    small += np.random.default_rng(seed).normal(0, noise, small.shape).astype(np.float32)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def _mouth_mask(h, w):
    m = feather_mask(h, w)[:, :, 0] > 0.5
    m[: h // 2] = False
    return m


def _grey(x):
    return cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float64)


def _psnr(a, b, m):
    d = (a.astype(np.float64) - b.astype(np.float64))[m]
    return 10 * np.log10(255.0**2 / np.mean(d * d))


def _detail(a, m):
    return cv2.Laplacian(_grey(a), cv2.CV_64F)[m].var()


def _lower_half(region, up):
    out = region.copy()
    out[region.shape[0] // 2 :] = up[region.shape[0] // 2 :]
    return out


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_fast_keeps_half_the_mouth_detail_on_real_faces(faces, name):
    """The measured bound: >= 50 % of the original's mouth detail (plain: 3-12 %), PSNR above bicubic's."""
    region = _region(*faces[name])
    h, w = region.shape[:2]
    m = _mouth_mask(h, w)
    small = _network(region)
    plain = _lower_half(region, cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    cubic = _lower_half(region, cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))
    fast = _lower_half(region, DetailTransfer()(small, region))
    base = _detail(region, m)
    assert _detail(plain, m) / base < 0.15
    assert _detail(fast, m) / base >= 0.5, _detail(fast, m) / base
    assert _psnr(fast, region, m) >= _psnr(cubic, region, m) + 1.0
    assert _psnr(fast, region, m) >= _psnr(plain, region, m) + 2.0


def test_nothing_is_added_where_the_mouth_changed(faces):
    """Where the drawn mouth differs from the photo (an open mouth), the crop stays exactly as drawn."""
    region = _region(*faces["hopper"])
    h, w = region.shape[:2]
    small = cv2.resize(region, (96, 96))
    small[66:84, 30:66] = 20  # a dark open mouth the photo does not have
    dt = DetailTransfer()
    out = dt(small, region)
    plain = stretch(small, h, w)
    changed = np.zeros((h, w), bool)
    ys, xs = int(66 * h / 96), int(30 * w / 96)
    ye, xe = int(84 * h / 96), int(66 * w / 96)
    pad = max(3, w // 32) + 2  # the difference is blurred over a few pixels
    changed[ys + pad : ye - pad, xs + pad : xe - pad] = True
    assert changed.sum() > 200
    np.testing.assert_array_equal(out[changed], plain[changed])
    # and the unchanged skin below does get the photo's detail
    assert np.abs(out[int(0.9 * h) :].astype(int) - plain[int(0.9 * h) :]).mean() > 1.0


def test_silent_frames_are_the_plain_paste_exactly(faces):
    """Weight 0 (a pause): the paste is bit for bit what it is without enhancement."""
    rgb, box = faces["hopper"]
    region = _region(rgb, box)
    preds = [_network(region, seed=s)[:, :, ::-1].copy() for s in range(3)]  # BGR, as the network gives
    enh, _ = make_enhancer("fast", np.array([0.0, 1.0, 0.0]))
    fast = Blender(rgb, box, enhance=enh)
    plain = Blender(rgb, box)
    outs = [fast.paste(p) for p in preds]
    np.testing.assert_array_equal(outs[0], plain.paste(preds[0]))
    np.testing.assert_array_equal(outs[2], plain.paste(preds[2]))
    assert not np.array_equal(outs[1], plain.paste(preds[1]))


def test_no_seam_outside_the_mask(faces):
    """Only pixels under the paste's mask change, in proportion to it: the box's edges and the upper face stay."""
    rgb, box = faces["astronaut"]
    pred = _network(_region(rgb, box))[:, :, ::-1].copy()
    enh, _ = make_enhancer("fast")
    fast = Blender(rgb, box, enhance=enh).paste(pred).astype(int)
    plain = Blender(rgb, box).paste(pred).astype(int)
    diff = np.abs(fast - plain).max(axis=2)
    mask = np.zeros(rgb.shape[:2], np.float32)
    mask[box.y1 : box.y2, box.x1 : box.x2] = feather_mask(box.height, box.width)[:, :, 0]
    assert diff[mask == 0].max() == 0
    assert (diff[mask > 0] <= np.ceil(mask[mask > 0] * 255) + 1).all()
    assert diff.max() > 0
    # the same through paste_mouth (a video's frame)
    frame = rgb.copy()
    enh_v, _ = make_enhancer("fast", still=False)
    paste_mouth(frame, box, pred, 1.0, enh_v)
    assert np.abs(frame.astype(int) - fast).max() <= 2  # (a uint8 frame against the Blender's float copy)
    assert (frame != rgb).any(axis=2)[mask == 0].sum() == 0


def test_no_more_flicker_than_the_plain_paste(faces):
    """25 frames of a still face, new network noise each: frame-to-frame change no higher than today's."""
    rgb, box = faces["hopper"]
    region = _region(rgb, box)
    h, w = region.shape[:2]
    m = _mouth_mask(h, w)
    smalls = [_network(region, seed=s, noise=2.0) for s in range(25)]
    dt = DetailTransfer()

    def flicker(frames):
        f = [x.astype(np.float32) for x in frames]
        return np.mean([np.abs(b - a)[m].mean() for a, b in zip(f, f[1:])])

    plain = flicker([cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR) for s in smalls])
    fast = flicker([dt(s, region) for s in smalls])
    assert fast <= plain * 1.02, (fast, plain)


def test_timing_within_budget_against_the_plain_stretch():
    """At a 512 px face box the transfer costs a few resizes' worth (ratio, so a loaded machine still passes)."""
    import time

    region = cv2.resize(hopper().rgb[145:400, 158:362], (512, 512))
    small = cv2.resize(region, (96, 96))
    dt = DetailTransfer()
    dt(small, region)

    def best(fn, n=15):
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts)

    fast = best(lambda: dt(small, region))
    # the rest of a frame's paste at this size: the feathered blend of the box
    mask = feather_mask(512, 512)
    base = region.astype(np.float32)
    blend = best(lambda: np.clip(base + mask * (region.astype(np.float32) - base) + 0.5, 0, 255).astype(np.uint8))
    assert fast < 0.010 or fast < 4 * blend, (fast, blend)


def test_enhance_option():
    assert GenerateOptions().enhance == "auto"  # face on a GPU with the restorer's weights, else fast
    assert GenerateOptions(enhance=" OFF ").enhance == "off"
    assert GenerateOptions(enhance="face").enhance == "face"  # the restorer: tests/test_restorer.py
    assert GenerateOptions(enhance="Fast").enhance == "fast"
    with pytest.raises(InputError, match="enhance must be one of auto, off, fast, face"):
        GenerateOptions(enhance="sharp")
    assert make_enhancer("off") == (None, describe("off"))
    assert "fast" in describe("fast")


def test_small_box_uses_bicubic():
    """A face box under 96 px is shrunk bicubically (measured 3-4 dB closer than bilinear on the footage)."""
    small = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    out = stretch(small, 48, 40)
    np.testing.assert_array_equal(out, cv2.resize(small, (40, 48), interpolation=cv2.INTER_CUBIC))
    big = stretch(small, 200, 180)
    np.testing.assert_array_equal(big, cv2.resize(small, (180, 200), interpolation=cv2.INTER_LINEAR))


# ----------------------------------------------------------------------------- auto: face on a GPU, fast elsewhere


def test_auto_is_fast_on_a_cpu_and_says_why(no_restorer_weights, monkeypatch, tmp_path):
    from lipsync.enhance import choose

    local = tmp_path / "GFPGANv1.4.pth"
    local.write_bytes(b"weights")
    monkeypatch.setenv("LIPSYNC_GFPGAN", str(local))  # even with the weights at hand: the CPU is too slow for face
    for device in ("cpu", "CPU"):
        assert choose(device) == ("fast", "no CUDA GPU: the face restorer takes about a second per frame on a CPU")
        enh, note = make_enhancer("auto", np.ones(3, np.float32), device=device)
        assert isinstance(enh, DetailTransfer)
        assert note == describe("fast") + " (auto: no CUDA GPU: the face restorer takes about a second per frame on a CPU)"
        assert describe("auto", device) == note  # what Result.enhance records


def test_auto_is_face_on_a_gpu_with_the_weights(no_restorer_weights, monkeypatch, tmp_path):
    from lipsync.enhance import choose

    mode, why = choose("cuda")  # offline, nothing cached: the weights cannot be had
    assert mode == "fast" and "weights cannot be had" in why and "LIPSYNC_OFFLINE" in why
    assert choose("cuda:1")[0] == "fast"
    local = tmp_path / "GFPGANv1.4.pth"
    local.write_bytes(b"weights")
    monkeypatch.setenv("LIPSYNC_GFPGAN", str(local))  # a local file
    assert choose("cuda") == ("face", "a CUDA GPU with the face restorer's weights")
    assert choose("cuda:0")[0] == "face"
    monkeypatch.setenv("LIPSYNC_GFPGAN", str(tmp_path / "missing.pth"))
    assert choose("cuda")[0] == "fast" and "missing.pth is not a file" in choose("cuda")[1]
    monkeypatch.delenv("LIPSYNC_GFPGAN")
    monkeypatch.delenv("LIPSYNC_OFFLINE")  # the network answers: a download could start
    import lipsync.weights as w

    monkeypatch.setattr(w, "offline_reason", lambda url: None)
    assert choose("cuda")[0] == "face"


def test_auto_follows_the_engine_device_not_the_machine(no_restorer_weights, monkeypatch):
    """``device=auto`` (or none) means CUDA when there is one: the same rule as the engine's."""
    import lipsync.enhance.face as face_mode
    from lipsync.enhance import choose

    monkeypatch.setattr(face_mode, "default_device", lambda: "cuda")
    assert choose("auto")[0] == "fast" and "weights cannot be had" in choose("auto")[1]
    assert choose(None)[1] == choose("auto")[1]
    assert choose("cpu")[0] == "fast" and "no CUDA GPU" in choose("cpu")[1]  # --device cpu on a GPU machine
