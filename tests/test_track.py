"""Following a face through video frames (lipsync.face.track), with a scripted detector."""

from __future__ import annotations

import numpy as np

from lipsync.face.track import FaceTracker, agree, smooth_runs


class Scripted:
    """A detector that answers from a script: frame number -> list of (x1, y1, x2, y2) boxes.

    The frames handed to the tracker are tiny arrays holding their own number.
    """

    name = "scripted"

    def __init__(self, script):
        self.script = script
        self.calls: list[int] = []

    def detect(self, frame):
        i = int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])
        self.calls.append(i)
        return [(*b, 1.0) for b in self.script(i)]


def _frame(i: int) -> np.ndarray:
    f = np.zeros((2, 2, 3), np.uint8)
    f[0, 0, 0], f[0, 0, 1] = i % 256, i // 256
    return f


def _track(script, n: int, **kw):
    det = Scripted(script)
    tracker = FaceTracker(det, fps=25, **kw)
    for i in range(n):
        tracker.add(_frame(i))
    return tracker.finish(), det


def _moving(i: int) -> tuple[float, float, float, float]:
    """A 100 px face moving 2 px right and 1 px down per frame."""
    return (50 + 2 * i, 40 + i, 150 + 2 * i, 140 + i)


def test_detects_every_fifth_frame_and_interpolates_between():
    track, det = _track(lambda i: [_moving(i)], 50)
    assert det.calls == list(range(0, 50, 5)) + [49]  # the keys and the last frame
    assert track.found.all() and track.face_frames == 50
    truth = np.array([_moving(i) for i in range(50)], float)
    np.testing.assert_allclose(track.boxes, truth, atol=1e-6)  # a steady pan: exact, no lag at the ends


def test_a_loss_is_found_to_the_frame():
    track, det = _track(lambda i: [_moving(i)] if i < 23 else [], 50)
    assert track.found[:23].all() and not track.found[23:].any()
    assert {21, 22, 23, 24} <= set(det.calls)  # the frames between keys 20 and 25 were checked one by one
    track, _ = _track(lambda i: [_moving(i)] if i >= 17 else [], 50)  # a face that comes into view
    assert not track.found[:17].any() and track.found[17:].all()


def test_one_missed_detection_is_bridged():
    track, _ = _track(lambda i: [] if i in (10, 11) else [_moving(i)], 50)
    assert track.found.all()
    np.testing.assert_allclose(track.boxes[10], _moving(10), atol=1e-6)


def test_does_not_hop_to_another_face():
    """A second, larger face appears far away: the track stays on the first; when the first leaves,
    the other is only taken after a second without the followed face."""

    def script(i):
        faces = []
        if i < 20:
            faces.append((50, 40, 150, 140))
        if i >= 10:
            faces.append((300, 40, 450, 190))  # larger
        return faces

    track, _ = _track(script, 75)
    assert np.allclose(track.boxes[:20, 0], 50)
    lost = np.flatnonzero(~track.found)
    assert lost.min() == 20 and track.found[-1]
    assert 300 <= track.boxes[-1, 0] <= 301
    assert lost.max() >= 20 + 24  # not before REACQUIRE_S (1 s at 25 fps)


def test_face_index_picks_the_second_largest_first():
    track, _ = _track(lambda i: [(0, 0, 200, 200), (300, 0, 400, 100)], 10, face_index=1)
    assert np.allclose(track.boxes[:, 0], 300)


def test_smoothing_removes_jitter_without_lag():
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 3.0, (60, 4))
    track, _ = _track(lambda i: [tuple(np.array(_moving(i)) + noise[i])], 60, every=1)
    truth = np.array([_moving(i) for i in range(60)], float)
    raw = truth + noise
    err = np.abs(track.boxes - truth).mean()
    assert err < 0.6 * np.abs(raw - truth).mean()
    assert abs((track.boxes - truth)[:, 0].mean()) < 0.5  # no lag behind the pan
    jitter = np.abs(np.diff(track.boxes, 2, axis=0)).mean()
    assert jitter < 0.4 * np.abs(np.diff(raw, 2, axis=0)).mean()


def test_smooth_runs_never_mixes_separate_runs():
    boxes = np.array([[0, 0, 10, 10]] * 5 + [[np.nan] * 4] * 2 + [[100, 100, 110, 110]] * 5, float)
    found = ~np.isnan(boxes[:, 0])
    out = smooth_runs(boxes, found, 5, 9)
    np.testing.assert_allclose(out[found], boxes[found])


def test_agree():
    a = np.array([0, 0, 100, 100.0])
    assert agree(a, a + 30) and not agree(a, a + 60)
    assert not agree(a, np.array([0, 0, 160, 160.0]))  # far larger


# -- following between detections (real pixels) -----------------------------------------------


def _textured(shape, seed: int, blur: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, shape).astype(np.float32), (0, 0), blur)
    img = (img - img.min()) / (np.ptp(img) + 1e-6) * 200 + 20
    return np.repeat(img[..., None], 3, axis=2).astype(np.uint8)


class Film:
    """Frames 240x320 with a 60x60 textured "face" on a textured background: it sways (not a
    straight line, so interpolating between detections would miss it), the shot cuts at frame
    60 (new background, the face elsewhere), and the face leaves at frame 90. The frame number
    is written into the top-left pixel; the detector answers the true box from it."""

    CUT, GONE, N, SIZE = 60, 90, 110, 60

    def __init__(self):
        self.face = _textured((self.SIZE, self.SIZE), 1, 2.0)
        self.backgrounds = [_textured((240, 320), 2, 6.0), _textured((240, 320), 3, 6.0)]

    def truth(self, i: int):
        if i >= self.GONE:
            return None
        if i < self.CUT:
            x, y = 60 + 30 * np.sin(2 * np.pi * i / 50), 50 + 12 * np.cos(2 * np.pi * i / 40)
        else:
            x, y = 200 - 1.5 * (i - self.CUT), 120 + 10 * np.sin(2 * np.pi * i / 30)
        x, y = int(round(x)), int(round(y))
        return (x, y, x + self.SIZE, y + self.SIZE)

    def frame(self, i: int) -> np.ndarray:
        f = self.backgrounds[int(i >= self.CUT)].copy()
        t = self.truth(i)
        if t is not None:
            f[t[1] : t[3], t[0] : t[2]] = self.face
        f[0, 0, 0], f[0, 0, 1] = i % 256, i // 256
        return f


def test_following_detects_rarely_and_stays_on_the_face():
    film = Film()
    det = Scripted(lambda i: [film.truth(i)] if film.truth(i) else [])
    tracker = FaceTracker(det, fps=25, follow=True)
    for i in range(film.N):
        tracker.add(film.frame(i))
    track = tracker.finish()
    # a detection each second while followed, one at the cut, then every 0.2 s once the face is gone
    assert {0, 25, 50, film.CUT, film.GONE} <= set(det.calls)
    followed = [c for c in det.calls if c < film.GONE]
    assert len(followed) <= 6, det.calls  # the old tracker: every 5th frame, 18 calls
    assert track.found[: film.GONE].all() and not track.found[film.GONE :].any()
    for i in range(film.GONE):
        t = np.array(film.truth(i), float)
        centre = (track.boxes[i, :2] + track.boxes[i, 2:]) / 2
        assert np.hypot(*(centre - (t[:2] + t[2:]) / 2)) <= 2.0, (i, track.boxes[i], t)
        np.testing.assert_allclose(track.boxes[i, 2:] - track.boxes[i, :2], film.SIZE, atol=1.0)


def test_following_checks_a_lost_match_with_the_detector():
    """Where the template no longer matches (here: the face is covered), the detector is asked at once."""
    film = Film()
    cover = 33
    det = Scripted(lambda i: [film.truth(i)] if film.truth(i) and i != cover else [])
    tracker = FaceTracker(det, fps=25, follow=True)
    for i in range(50):
        f = film.frame(i)
        if i == cover:
            t = film.truth(i)
            f[t[1] : t[3], t[0] : t[2]] = 128
        tracker.add(f)
    track = tracker.finish()
    assert det.calls[:3] == [0, 25, cover]  # asked at once, not at the next scheduled detection
    assert track.found.all()  # the one missed frame is bridged, as a missed detection is
    t = np.array(film.truth(cover), float)
    np.testing.assert_allclose((track.boxes[cover, :2] + track.boxes[cover, 2:]) / 2, (t[:2] + t[2:]) / 2, atol=2.0)
