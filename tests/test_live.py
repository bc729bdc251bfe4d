"""The live session: pacing, exact audio per slot, idle, interrupt, easing, close, bad input.

Real pacing (frames are handed out on the wall clock); a small portrait and the
fp32 scratch network keep each test to a few seconds on a loaded machine.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lipsync.errors import AudioError, LipSyncError
from lipsync.live import session as live
from lipsync.live import speed

from conftest import LIVE_SIDE as SIDE
from conftest import noise_int16, take


def test_frames_are_paced_and_stamped(open_live):
    s = open_live(motion=0)
    stamps = []
    t_first = time.monotonic()  # the session starts at the first next(), not before
    for f in s:
        stamps.append((f, time.monotonic()))
        if len(stamps) == 20:
            break
    for n, (f, t) in enumerate(stamps):
        assert f.pts == pytest.approx(n / 25)
        assert t >= t_first + n / 25 - 0.002, "a frame came out before its time"
        assert f.image.dtype == np.uint8 and f.image.shape[2] == 3 and max(f.image.shape[:2]) == SIDE
        assert f.audio.dtype == np.int16 and len(f.audio) == 640 and f.sample_rate == 16000
    assert s.stats.frames == 20 and s.stats.late_frames <= 20


def test_each_slot_carries_exactly_its_speech(open_live):
    s = open_live(motion=0)
    speech = noise_int16(0.3)
    take(s, 2)
    s.push(speech, 16000)
    frames = take(s, 18)
    audio = np.concatenate([f.audio for f in frames])
    talking = [i for i, f in enumerate(frames) if f.speaking]
    start = talking[0] * 640
    assert talking == list(range(talking[0], talking[0] + len(talking)))
    assert len(talking) == -(-len(speech) // 640)
    k = live.FADE_SAMPLES
    np.testing.assert_array_equal(audio[start + k : start + len(speech) - k], speech[k:-k])
    assert not audio[:start].any() and not audio[start + len(speech) :].any()
    assert np.all(np.abs(audio[start : start + k]) <= np.abs(speech[:k]))  # faded in, never louder


def test_other_rates_are_resampled_once_in_a_stream(open_live):
    import soxr

    s = open_live(motion=0)
    rng = np.random.default_rng(3)
    t = np.arange(19200) / 48000
    speech = (0.3 * np.sin(2 * np.pi * 300 * t) + 0.02 * rng.normal(size=t.size)).astype(np.float32)
    take(s, 1)
    for chunk in np.array_split(speech, 23):  # ragged chunk sizes
        s.push(chunk, 48000)
    frames = take(s, 20)
    audio = np.concatenate([f.audio for f in frames if f.speaking]).astype(np.float32) / 32768
    whole = soxr.resample(speech, 48000, 16000, quality="HQ")
    assert abs(len(audio) - len(whole)) <= 640
    n = min(len(audio), len(whole)) - 400
    assert np.max(np.abs(audio[200:n] - whole[200:n])) < 2e-3


def test_idle_frames_keep_coming_with_a_swaying_head(open_live):
    s = open_live(motion=1.0)
    frames = take(s, 25)
    assert not any(f.speaking for f in frames)
    assert not any(f.audio.any() for f in frames)
    diffs = [np.abs(frames[0].image.astype(int) - f.image.astype(int)).max() for f in frames[1:]]
    assert max(diffs) > 0, "the head does not move at rest"
    still = open_live(motion=0)
    frames = take(still, 5)
    assert all(np.array_equal(frames[0].image, f.image) for f in frames)


def test_mouth_follows_the_speech_as_offline(open_live, fp32_engine, every_picture):
    """Live frames equal the offline recipe for the same timeline: the look-ahead is enough."""
    from lipsync import features
    from lipsync.blend import Blender
    from lipsync.face import face_crop

    s = open_live(motion=0, label=False)
    speech = noise_int16(0.6, seed=5, amp=9000)
    take(s, 3)
    s.push(speech, 16000)
    frames = take(s, 3 + 24)
    timeline = np.concatenate([np.zeros(3 * 640, np.int16)] + [f.audio for f in frames]).astype(np.float32) / 32768
    n = 3 + len(frames)
    mel = features.melspectrogram(timeline)
    mels = features.mel_windows(mel, 25, starts=features.window_starts(mel.shape[1], 25, n))
    face = s._face  # the session's own picture parts
    gen = fp32_engine.generator
    crop = face_crop(face.blender.image, face.blender.box)
    talking = [i for i, f in enumerate(frames) if f.speaking]
    full = talking[live.EASE_FRAMES : live.EASE_FRAMES + 8]  # mouth weight 1
    pred = np.concatenate(list(gen.predict(crop, mels[[3 + i for i in full]])))
    blender = Blender(face.blender.image, face.blender.box)
    for i, p in zip(full, pred):
        want = blender.paste(p)
        assert np.abs(want.astype(int) - frames[i].image.astype(int)).max() <= 2, f"frame {i}"


def test_interrupt_rests_within_a_few_frames(open_live, every_picture):
    s = open_live(motion=0)
    rest = take(s, 2)[-1].image
    s.push(noise_int16(3.0, seed=1, amp=9000), 16000)
    frames = []
    for f in s:
        frames.append(f)
        if sum(x.speaking for x in frames) == 6:
            s.interrupt()
            break
    after = take(s, live.EASE_FRAMES + 3)
    assert not any(f.speaking for f in after[1:])
    assert np.array_equal(after[live.EASE_FRAMES].image, rest)
    assert np.abs(after[0].audio[: live.FADE_SAMPLES]).max() <= np.abs(frames[-1].audio).max()
    assert not after[0].audio[live.FADE_SAMPLES :].any() and not any(f.audio.any() for f in after[1:])
    assert s.queued_s == 0
    # still usable: it speaks again
    s.push(noise_int16(0.3), 16000)
    assert any(f.speaking for f in take(s, 15))


def test_no_pops_in_the_sound_or_the_picture(open_live, every_picture):
    """A tone that starts and is cut at full level: the sound ramps, the mouth eases."""
    s = open_live(motion=0)
    rest = take(s, 2)[-1].image.astype(int)
    t = np.arange(3 * 16000) / 16000
    tone = 0.5 * np.cos(2 * np.pi * 200 * t)  # starts at its peak
    s.push(tone.astype(np.float32), 16000)
    frames = []
    for f in s:
        frames.append(f)
        if sum(x.speaking for x in frames) == 8:
            s.interrupt()
        if len(frames) > 18:
            break
    audio = np.concatenate([f.audio for f in frames]).astype(np.float64) / 32768
    steepest_tone = 0.5 * 2 * np.pi * 200 / 16000  # 0.039 per sample
    assert np.abs(np.diff(audio)).max() <= steepest_tone * 1.6, "a click at an utterance edge"
    dist = [np.abs(f.image.astype(int) - rest).mean() for f in frames]
    first = next(i for i, f in enumerate(frames) if f.speaking)
    assert dist[first] <= 0.6 * max(dist), "the mouth jumped to full speech in one frame"


def test_close_from_another_thread_ends_iteration(open_live):
    s = open_live(motion=0)
    s.push(noise_int16(5.0), 16000)
    n = 0
    t = None
    for _ in s:
        n += 1
        if t is None:
            t = time.monotonic()
            threading.Timer(0.3, s.close).start()
    assert time.monotonic() - t < 0.3 + 3.0
    assert n >= 1 and s.closed
    with pytest.raises(LipSyncError, match="closed"):
        s.push(noise_int16(0.1), 16000)


BAD_CHUNKS = [
    (np.zeros(1600, np.float32), 1000, "sample rate"),
    (np.zeros(1600, np.float32), 16000.5, "sample rate"),
    (np.array([0.1, np.nan, 0.2], np.float32), 16000, "NaN"),
    (np.zeros(0, np.int16), 16000, "empty"),
    (np.zeros(600 * 16000, np.int16), 16000, "at most 60 s"),
    (np.zeros((2, 1600), np.float32), 16000, "mono"),
    (np.zeros(1600, np.int32), 16000, "int16 or float32"),
]


def test_bad_chunks_are_refused_and_the_session_goes_on(open_live):
    s = open_live(motion=0)
    s.push(noise_int16(0.2), 16000)
    for samples, rate, message in BAD_CHUNKS:
        before = s.queued_s
        with pytest.raises(AudioError, match=message):
            s.push(samples, rate)
        assert s.queued_s == before, message
    s.push(noise_int16(0.2), 16000)
    assert s.queued_s == pytest.approx(0.4)
    for f in s:
        if f.speaking or f.pts > 1:
            break
    assert f.speaking


def test_a_stall_repeats_the_picture_and_keeps_the_sound(open_live):
    s = open_live(motion=1.0)
    speech = noise_int16(0.6, seed=2)
    s.push(speech, 16000)
    frames = []
    for f in s:
        frames.append(f)
        if len(frames) == 2:
            time.sleep(0.3)  # the consumer stalls for 7 slots
        if len(frames) == 14:
            break
    assert s.stats.repeated_frames >= 1
    assert frames[2].image is frames[1].image  # caught up by repeating the picture...
    assert [f.pts for f in frames] == [pytest.approx(n / 25) for n in range(14)]
    audio = np.concatenate([f.audio for f in frames])
    start = next(i for i, f in enumerate(frames) if f.speaking) * 640
    k = live.FADE_SAMPLES
    np.testing.assert_array_equal(audio[start + k : start + 5000], speech[k : 5000 - start])  # ...not the sound


def test_a_slow_machine_steps_then_shrinks(open_live, monkeypatch):
    monkeypatch.setattr(speed, "MEASURE_FRAMES", 3)
    monkeypatch.setattr(speed, "BUDGET_SHARE", 1e-6)  # nothing fits: every measurement fails
    s = open_live(motion=0, adapt=True)
    first = s.mode
    frames = []
    for f in s:  # on a slow machine most frames repeat the last picture (catching up), so count made ones
        frames.append(f)
        if s.mode.width < first.width and f.image.shape[1] == s.mode.width or len(frames) > 400:
            break
    assert first.step == 1 and not first.reason
    assert s.mode.step == 2 and "every second frame" in s.mode.reason
    assert s.mode.width < first.width and "working at" in s.mode.reason
    assert frames[-1].image.shape[1] == s.mode.width < frames[0].image.shape[1]
    shrunk = s.mode
    take(s, 4)
    assert s.mode == shrunk, "the size is made smaller once"
