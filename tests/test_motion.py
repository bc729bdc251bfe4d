"""Head motion for a still photo: bounds, smoothness, speech-driven settling, the mask, the warp."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import temp_entries as _temp_entries
from lipsync import GenerateOptions, Request, Speech
from lipsync.blend import Blender
from lipsync.face import FaceBox
from lipsync.motion import MAX_ANGLE_DEG, MAX_SHIFT, HeadWarp, head_mask, head_motion
from videos import decode_frames, portrait, psnr, speechlike

FPS = 25
BOX = FaceBox(67, 179, 177, 270)  #: the example portrait's face box (Haar, default pads)


def _speed(track, face_height: float = BOX.height) -> np.ndarray:
    """Frame-to-frame movement: pixels of shift plus the arc a face-sized radius sweeps."""
    arc = np.radians(np.abs(np.diff(track.angle))) * face_height
    return np.abs(np.diff(track.dx)) + np.abs(np.diff(track.dy)) + arc


def _ecc(still: np.ndarray, moved: np.ndarray, region: np.ndarray) -> tuple[float, np.ndarray]:
    """(angle in degrees, 2x3 matrix) of the rigid motion that takes ``still`` to ``moved`` inside ``region``."""
    import cv2

    g0 = cv2.cvtColor(still, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g1 = cv2.cvtColor(moved, cv2.COLOR_RGB2GRAY).astype(np.float32)
    warp = np.eye(2, 3, dtype=np.float32)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    _, warp = cv2.findTransformECC(g0, g1, warp, cv2.MOTION_EUCLIDEAN, crit, region.astype(np.uint8), 5)
    return math.degrees(math.atan2(warp[1, 0], warp[0, 0])), warp


def _rigid(img: np.ndarray, pose, pivot) -> np.ndarray:
    """``img`` turned by the pose's angle about ``pivot`` and shifted by its (dx, dy), as one piece."""
    import cv2

    angle, dx, dy = pose
    a = math.radians(angle)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.asarray(pivot)
    m = np.hstack([r, (c - r @ c + [dx, dy])[:, None]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _pivot_shift(warp: np.ndarray, pivot) -> np.ndarray:
    c = np.asarray(pivot, np.float64)
    return warp[:, :2] @ c + warp[:, 2] - c


# ----------------------------------------------------------------------------- the track


@pytest.mark.parametrize("amount", [1.0, 0.5])
def test_track_stays_within_the_stated_bounds(amount):
    for seconds, pauses in ((6.0, ()), (6.0, ((1.0, 1.6), (3.0, 3.2))), (12.0, ((4.0, 8.0),))):
        t = head_motion(speechlike(seconds, pauses=pauses), 16000, int(seconds * FPS), FPS, BOX.height, amount)
        assert np.abs(t.angle).max() <= MAX_ANGLE_DEG * amount + 1e-6
        assert np.abs(t.dx).max() <= MAX_SHIFT * BOX.height * amount + 1e-6
        assert np.abs(t.dy).max() <= MAX_SHIFT * BOX.height * amount + 1e-6
        assert np.abs(t.angle).max() > 0.2 * MAX_ANGLE_DEG * amount  # and it does move
        assert np.abs(t.dx).max() > 0.2 * MAX_SHIFT * BOX.height * amount


def test_track_is_deterministic_smooth_and_zero_at_amount_zero():
    wav = speechlike(5.0, pauses=((2.0, 2.5),))
    a = head_motion(wav, 16000, 125, FPS, BOX.height, 1.0)
    b = head_motion(wav, 16000, 125, FPS, BOX.height, 1.0)
    for k in ("angle", "dx", "dy"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    # smooth, never jittery: almost no power above 3 Hz, and the speed changes by under 0.3 px
    # from one frame to the next (a nod, the quickest movement, peaks near 0.22 here; frame-to-frame
    # noise of even 0.1 px would break this)
    freqs = np.fft.rfftfreq(len(a.dx), 1 / FPS)
    for x in (a.dx, a.dy, np.radians(a.angle) * BOX.height):
        power = np.abs(np.fft.rfft(x - x.mean())) ** 2
        assert power[freqs > 3].sum() < 0.01 * power.sum()
        assert np.abs(np.diff(x, 2)).max() < 0.3
    still = head_motion(wav, 16000, 125, FPS, BOX.height, 0.0)
    assert still.still and not a.still


def test_head_settles_in_a_long_pause():
    """2 s of speech, then a 2 s pause: over the pause's last second the head moves far less."""
    wav = speechlike(4.0, pauses=((2.0, 4.0),))
    talk = speechlike(4.0)
    paused = _speed(head_motion(wav, 16000, 100, FPS, BOX.height, 1.0))
    steady = _speed(head_motion(talk, 16000, 100, FPS, BOX.height, 1.0))
    last_second = slice(75, 99)
    assert paused[last_second].mean() < 0.25 * paused[:50].mean()  # than while it spoke
    assert paused[last_second].mean() < 0.25 * steady[last_second].mean()  # than speaking at that moment


def test_nods_follow_loud_onsets():
    """Loud syllables over a quiet hum: a nod (down and back, 0.5 s) starts at each, none elsewhere."""
    from lipsync.motion import NOD_S, _nods
    from lipsync.speech.activity import activity_envelope

    rate = 16000
    t = np.arange(4 * rate) / rate
    wav = 0.01 * np.sin(2 * np.pi * 150 * t)
    onsets = (0.8, 1.9, 3.0)
    for s in onsets:
        k = slice(int(s * rate), int((s + 0.25) * rate))
        wav[k] = 0.4 * np.sin(2 * np.pi * 180 * t[k])
    nods = _nods(activity_envelope(wav.astype(np.float32), rate, 100, FPS).astype(np.float64), FPS)
    assert nods.min() >= 0 and nods.max() < 1
    length = int(NOD_S * FPS)
    covered = np.zeros(100, bool)
    for s in onsets:
        i = int(s * FPS)
        assert nods[i - 3 : i].max() < 0.05, s  # not before the syllable
        assert nods[i : i + length].max() > 0.5, s  # a full nod after it
        covered[i - 1 : i + length + 2] = True
    assert nods[~covered].max() < 0.05  # and nowhere else


# ----------------------------------------------------------------------------- the mask and the warp


def test_head_mask_covers_the_head_and_spares_shoulders_and_edges():
    box = FaceBox(300, 420, 350, 450)  # a face in the middle of a large frame
    m = head_mask((900, 800), box)
    cx = (box.x1 + box.x2) // 2
    assert m[(box.y1 + box.y2) // 2, cx] == 1.0  # the face
    assert m[box.y1 - int(0.5 * box.height), cx] == 1.0  # the hair above the box
    assert m[(box.y1 + box.y2) // 2, box.x1 - int(0.2 * box.width)] == 1.0  # ears, hair at the sides
    assert m[box.y2 - 2, cx] == 1.0  # the chin
    assert m[box.y2 + int(0.3 * box.height) :, :].max() == 0.0  # neck base, shoulders: still
    assert m[:, : box.x1 - box.width].max() == 0.0 and m[:, box.x2 + box.width :].max() == 0.0
    assert np.abs(np.diff(m, axis=0)).max() < 0.05 and np.abs(np.diff(m, axis=1)).max() < 0.05  # soft
    # near the frame edges it fades to nothing, even where the head reaches them
    m = head_mask((512, 512), BOX)  # the example portrait: hair close to the top edge
    edge = int(0.03 * 512)
    for band in (m[:edge], m[-edge:], m[:, :edge], m[:, -edge:]):
        assert band.max() == 0.0
    assert m[BOX.y1 - int(0.3 * BOX.height), (BOX.x1 + BOX.x2) // 2] > 0.3


@pytest.mark.parametrize("pose", [(2.0, 3.0, -2.0), (-1.5, -4.0, 1.0), (0.4, 0.0, 3.0)])
def test_warp_moves_the_head_rigidly_and_nothing_else(pose):
    img = portrait()
    warp = HeadWarp(img.shape, BOX)
    moved = warp.apply(img.copy(), *pose)
    mask = head_mask(img.shape, BOX)
    np.testing.assert_array_equal(moved[mask == 0], img[mask == 0])  # outside the mask: bit for bit
    angle, m = _ecc(img, moved, mask >= 0.999)
    assert angle == pytest.approx(pose[0], abs=0.1)
    np.testing.assert_allclose(_pivot_shift(m, warp.pivot), pose[1:], atol=0.2)


def test_label_pixels_stay_still():
    from lipsync.blend import draw_label

    img = portrait()
    tight = FaceBox(40, 470, 40, 470)  # a face filling the frame: the label goes right beside it
    labelled = draw_label(img, avoid=tight)
    keep = np.any(labelled != img, axis=2)
    assert keep.sum() > 50
    warp = HeadWarp(img.shape, tight, keep=keep)
    moved = warp.apply(labelled.copy(), 3.0, 6.0, 6.0)
    np.testing.assert_array_equal(moved[keep], labelled[keep])
    assert (moved != labelled).any()


# ----------------------------------------------------------------------------- in the pipeline


def _prepared(engine, tmp_path, motion: float, seconds: float = 2.0, label: bool = False, pauses=()):
    speech = Speech(speechlike(seconds, pauses=pauses), 16000)
    opts = GenerateOptions(motion=motion, label=label, box=BOX.as_tuple(), enhance="off", blink=False)
    return engine.prepare(Request(portrait(), tmp_path / f"m{motion}.mp4", audio=speech, options=opts))


def test_motion_zero_is_the_still_output_exactly(engine, tmp_path):
    """motion=0 renders with the plain paste: frame for frame what the still pipeline makes."""
    from lipsync.media.encode import VideoWriter

    with _prepared(engine, tmp_path, 0.0) as parts:
        assert parts.motion is None and isinstance(parts.source.compositor(parts), Blender)
        mouths = engine.predict_mouths(parts)
        engine.render(parts, mouths=[mouths])
        result = engine.result(parts)
        blender = Blender(parts.image, parts.box)
        with VideoWriter(tmp_path / "still.mp4", 512, 512, FPS) as w:
            for m in mouths:
                w.write(blender.paste(m))
    assert result.motion == 0.0 and result.source == "photo"
    np.testing.assert_array_equal(decode_frames(result.video), decode_frames(tmp_path / "still.mp4"))


def test_mouth_moves_with_the_head(engine, tmp_path):
    """Paste first, then move: in every frame the mouth region has the head's own pose."""
    with _prepared(engine, tmp_path, 1.0, seconds=2.0) as parts:
        track = parts.motion
        comp = parts.source.compositor(parts)
        plain = Blender(parts.image, parts.box)
        mouths = engine.predict_mouths(parts)
        lower = np.zeros(parts.image.shape[:2], bool)
        lower[BOX.y1 + BOX.height // 2 : BOX.y2 - 4, BOX.x1 + 8 : BOX.x2 - 8] = True
        errors, wrong_errors = [], []
        for t in range(len(mouths)):
            moved = comp.paste(mouths[t])  # frames in order, as the pipeline streams them
            still = plain.paste(mouths[t])
            want = _rigid(still, track.pose(t), comp.warp.pivot)  # the pasted frame moved as one piece
            errors.append(np.abs(moved[lower].astype(float) - want[lower]).mean())
            # the other order (move the photo, then paste) leaves the mouth behind: the test can tell
            wrong = Blender(comp.warp.apply(parts.image.copy(), *track.pose(t)), BOX).paste(mouths[t])
            wrong_errors.append(np.abs(wrong[lower].astype(float) - want[lower]).mean())
        shift = np.hypot(track.dx, track.dy)
        assert shift.max() > 1.5
        assert max(errors) < 1.0, max(errors)
        big = shift > 1.5
        assert min(np.array(wrong_errors)[big]) > 3 * max(errors)


@pytest.mark.usefixtures("own_tempdir")
def test_motion_end_to_end_moves_the_head_and_keeps_the_corners(engine, example_image, tmp_path):
    speech = Speech(speechlike(2.0), 16000)
    before = _temp_entries()
    r = engine.generate(example_image, speech, tmp_path / "moving.mp4", GenerateOptions(motion=1.0, label=False))
    assert r.source == "photo" and r.motion == 1.0 and r.face_frames == r.frames == 50
    assert _temp_entries() == before
    out = decode_frames(r.video)
    photo = portrait()
    c = 64
    for f in out:
        for corner in (np.s_[:c, :c], np.s_[:c, -c:], np.s_[-c:, :c], np.s_[-c:, -c:]):
            assert psnr(f[corner], photo[corner]) >= 35
    # the head region does move (up to the stated bound), the mouth with it
    mask = head_mask(photo.shape, r.box) >= 0.999
    mask[r.box.y1 + r.box.height // 2 : r.box.y2] = False  # the network's mouth differs per frame
    shifts = []
    for f in out[::7]:
        angle, m = _ecc(photo, f, mask)
        assert abs(angle) <= MAX_ANGLE_DEG + 0.2
        shifts.append(np.hypot(*_pivot_shift(m, (r.box.x1 / 2 + r.box.x2 / 2, r.box.y2 + 0.1 * r.box.height))))
    bound = MAX_SHIFT * r.box.height * math.sqrt(2) + 0.5
    assert max(shifts) > 1.0 and max(shifts) <= bound, shifts
