"""Blinks and the mouth's enhancement in a live session (lipsync.live.look).

Real pacing on the example portrait with the fp32 scratch network; the first blink
is brought forward so that each test lasts a second or two.
"""

from __future__ import annotations

import numpy as np
import pytest

from lipsync import blink as blink_mod
from lipsync.blink import CLOSE_S, HOLD_S, MAX_GAP_S, MIN_GAP_S, NOD_LIMIT, OPEN_S
from lipsync.live import audio
from lipsync.live import session as live
from lipsync.live import speed
from lipsync.live.look import BlinkClock, live_enhancer

from test_blink import needs_model, visible_iris
from conftest import noise_int16, take

FPS = 25.0


@pytest.fixture
def open_live(fp32_engine, example_image, monkeypatch):  # noqa: F811
    monkeypatch.setattr(live, "CATCH_UP_SLOTS", 1e9)  # every picture made, in order
    sessions = []

    def make(**kw):
        kw.setdefault("max_side", 512)
        kw.setdefault("adapt", False)
        kw.setdefault("motion", 0)
        s = fp32_engine.live(image=example_image, **kw)
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()


def test_blink_clock_timing():
    """Ten minutes of an endless stream: 10-20 blinks a minute, gaps of 2-6 s, irregular, each about 0.25 s."""
    clock = BlinkClock(FPS)
    n = int(600 * FPS)
    closure = np.array([clock(i) for i in range(n)])
    mids = np.array(clock.mids)
    assert 100 <= len(mids) <= 200
    gaps = np.diff(mids) / FPS
    assert gaps.min() >= MIN_GAP_S - 1 / FPS and gaps.max() <= MAX_GAP_S + 1 / FPS
    assert gaps.std() > 0.4  # irregular
    assert np.all(closure[mids] == 1.0)  # shut at each middle
    moving = closure > 0
    edges = np.flatnonzero(np.diff(np.r_[0, moving.astype(int), 0]))
    runs = edges[1::2] - edges[::2]  # frames with the lid moving, per blink
    assert len(runs) == len(mids)
    assert np.all(np.abs(runs / FPS - (CLOSE_S + HOLD_S + OPEN_S)) <= 2 / FPS)
    again = BlinkClock(FPS)
    [again(i) for i in range(n)]
    assert again.mids == clock.mids  # seeded


def test_blink_clock_waits_for_a_strong_nod():
    rng = np.random.default_rng(3)
    n = int(300 * FPS)
    nods = np.zeros(n)
    for start in rng.integers(0, n - 13, 80):  # deep nods of 0.5 s
        nods[start : start + 13] = np.maximum(nods[start : start + 13], np.sin(np.pi * np.arange(13) / 12) ** 2)
    free = BlinkClock(FPS)
    [free(i) for i in range(n)]
    starts_free = np.array(free.mids) - round((CLOSE_S + HOLD_S / 2) * FPS)
    assert np.any(nods[starts_free] > NOD_LIMIT)  # without the nods some blinks would have started in one
    clock = BlinkClock(FPS)
    [clock(i, nods[i]) for i in range(n)]
    starts = np.array(clock.mids) - round((CLOSE_S + HOLD_S / 2) * FPS)
    gaps = np.diff(clock.mids) / FPS
    assert np.all(nods[starts] <= NOD_LIMIT) and gaps.max() <= MAX_GAP_S + 1 / FPS


@needs_model
def test_a_live_session_blinks(open_live, monkeypatch):
    """The eyes close at the blink's middle (visible iris -70 %) and the picture recovers to rest, bit for bit."""
    monkeypatch.setattr(blink_mod, "FIRST_S", (0.3, 0.4))
    s = open_live(blink=True, enhance="off")
    assert s.mode.blink.startswith("on"), s.mode.blink
    frames = take(s, 30)
    assert s.stats.blinks == 1
    mid = s._blink_clock.mids[0]
    rest = frames[1].image
    eyes = s._face.eyes
    for eye in (eyes.right, eyes.left):
        open_ = visible_iris(rest, rest, eye)
        shut = visible_iris(frames[mid].image, rest, eye)
        assert open_ > 20 and shut <= 0.3 * open_, (open_, shut)
    after = mid + round((HOLD_S / 2 + OPEN_S) * FPS) + 2
    assert all(np.array_equal(f.image, rest) for f in frames[after:]), "the eyes did not reopen fully"
    assert all(np.array_equal(f.image, rest) for f in frames[: mid - 4])


def test_missing_landmark_model_means_no_blinks_and_a_reason(open_live, monkeypatch, tmp_path):
    monkeypatch.setattr(blink_mod, "FIRST_S", (0.2, 0.3))
    monkeypatch.setenv("LIPSYNC_FACE_LANDMARKS", str(tmp_path / "nowhere.tflite"))
    s = open_live(blink=True)
    assert s.mode.blink.startswith("off:") and "nowhere.tflite is not a file" in s.mode.blink
    frames = take(s, 15)
    assert s.stats.blinks == 0 and all(np.array_equal(f.image, frames[0].image) for f in frames)
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    monkeypatch.setenv("LIPSYNC_FACE_LANDMARKS", str(broken))
    s = open_live(blink=True)
    assert s.mode.blink.startswith("off:") and "broken.tflite" in s.mode.blink
    assert len(take(s, 3)) == 3
    assert open_live(blink=False).mode.blink == "off (asked for)"


def test_enhance_runs_only_on_speaking_frames(open_live):
    s = open_live(enhance="fast", blink=False)
    assert s.mode.enhance.startswith("fast")
    calls = []
    frames = []
    for f in s:
        frames.append(f)
        calls.append(s._enhance.calls)
        if len(frames) == 5:
            s.push(noise_int16(0.6, seed=4, amp=9000), 16000)
        if len(frames) > 5 and not f.speaking and sum(x.speaking for x in frames) and len(frames) > 60:
            break
    ran = np.diff(np.r_[0, calls]) > 0
    speaking = np.array([f.speaking for f in frames])
    first = int(np.argmax(speaking))
    last = len(speaking) - 1 - int(np.argmax(speaking[::-1]))
    assert not ran[:first].any(), "the enhancer ran at rest before the speech"
    assert ran[first : last + 1].all(), "the enhancer skipped a speaking frame"
    assert not ran[last + 1 + live.EASE_FRAMES :].any(), "the enhancer ran at rest after the speech"
    assert s.stats.enhanced_frames == int(ran.sum())


def test_face_enhance_is_cuda_only_in_live_mode():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the restorer")
    enh, note = live_enhancer("face")
    assert enh is not None and note.startswith("fast") and "only on CUDA" in note
    assert live_enhancer("off") == (None, "off (asked for)")
    from lipsync.errors import InputError

    with pytest.raises(InputError, match="enhance must be one of"):
        live_enhancer("sharper")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_live_mel_window_is_the_offline_spectrogram(seed):
    """The frame path computes only the 16 columns it uses; they equal the full spectrogram's up to float32
    rounding: the mel product's summation order is the BLAS library's, and on some CPUs it differs with the
    number of columns (an AMD Zen 5 gave 27 of 1,280 values 1-2 units in the last place apart; a Zen 4, none).
    A column off by one would be 0.1 or more apart."""
    from lipsync import features

    rng = np.random.default_rng(seed)
    segment = (rng.normal(0, 0.1 * (seed + 1), audio.SEGMENT)).astype(np.float32)
    if seed == 2:
        segment[:1500] = 0  # silence then speech
    want = features.melspectrogram(segment)[:, 3 : 3 + features.MEL_STEP]
    got = audio.mel_window(segment)
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * np.spacing(np.float32(features.MAX_ABS)))
    assert np.abs(features.melspectrogram(segment)[:, 4 : 4 + features.MEL_STEP] - got).max() > 0.05


@needs_model
def test_blinks_and_enhancement_survive_the_smaller_working_size(open_live, monkeypatch):
    """A slow machine's shrink rescales the eyelids and keeps the enhancer; blinks go on at the new size."""
    monkeypatch.setattr(speed, "MEASURE_FRAMES", 3)
    monkeypatch.setattr(speed, "BUDGET_SHARE", 1e-6)  # nothing fits: step 2, then the smaller size
    monkeypatch.setattr(blink_mod, "FIRST_S", (0.5, 0.6))
    s = open_live(adapt=True, blink=True, enhance="fast")
    first, eyes = s.mode, s._face.eyes
    s.push(noise_int16(1.0, seed=6, amp=9000), 16000)
    frames = take(s, 40)
    assert s.mode.width < first.width and frames[-1].image.shape[1] == s.mode.width
    assert s.mode.blink == first.blink and s.mode.enhance == first.enhance
    assert s._face.blinks is not None and s._face.enhance is s._enhance
    assert s.stats.blinks >= 1 and s.stats.enhanced_frames >= 1
    scale = np.array([s.mode.width / first.width, s.mode.height / first.height])
    for now, then in ((s._face.eyes.right, eyes.right), (s._face.eyes.left, eyes.left)):  # the eyelids moved with the picture
        np.testing.assert_allclose(now.upper, then.upper * scale, atol=1.0)
        np.testing.assert_allclose(now.lower, then.lower * scale, atol=1.0)
