"""Blinks (lipsync.blink) and the eyelid landmarks (lipsync.face.landmarks) on real faces.

Needs the face-mesh model from ``requirements-landmarks.txt`` (``make test`` installs it); the
offline-behaviour tests run without it.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from face_corpus import astronaut, hopper
from lipsync import GenerateOptions, Speech
from lipsync.blink import CLOSE_S, HOLD_S, MAX_GAP_S, MIN_GAP_S, NOD_LIMIT, OPEN_S, Blinks, blink_schedule, plan_blinks
from lipsync.errors import InputError
from lipsync.face.detect import find_face, offline_detector
from lipsync.face.landmarks import FaceMesh, LandmarksUnavailable, eye_aspect_ratio, model_path
from lipsync.sources import PhotoSource

FPS = 25.0


def _have_model() -> bool:
    try:
        model_path()
        return True
    except LandmarksUnavailable:
        return False


needs_model = pytest.mark.skipif(not _have_model(), reason="pip install --no-deps -r requirements-landmarks.txt")


@pytest.fixture(scope="module")
def faces():
    out = {}
    for name, p in (("astronaut", astronaut()), ("hopper", hopper())):
        out[name] = (p, find_face(p.rgb, offline_detector()))
    return out


@pytest.fixture(scope="module")
def mesh():
    return FaceMesh()


# ----------------------------------------------------------------------------- timing


def test_schedule_statistics():
    """Ten minutes: 10-20 blinks a minute, every gap 2-6 s and irregular, each about 0.25 s, shut at its middle."""
    n = int(600 * FPS)
    closure, mids = blink_schedule(n, FPS)
    per_min = len(mids) / 10
    assert 10 <= per_min <= 20, per_min
    gaps = np.diff(mids) / FPS
    assert gaps.min() >= MIN_GAP_S - 1 / FPS and gaps.max() <= MAX_GAP_S + 1 / FPS, (gaps.min(), gaps.max())
    assert gaps.std() > 0.5  # irregular, not a metronome
    assert np.all(closure[mids] == 1.0)
    # each blink's length: frames with the lid moving, about 0.25 s
    runs = np.diff(np.r_[0, (closure > 0).astype(int), 0])
    lengths = (np.flatnonzero(runs == -1) - np.flatnonzero(runs == 1)) / FPS
    assert len(lengths) == len(mids)
    assert np.all(np.abs(lengths - (CLOSE_S + HOLD_S + OPEN_S)) <= 0.05), lengths
    assert closure.min() == 0.0 and closure.max() == 1.0
    # the same seed, the same blinks; another seed, others
    np.testing.assert_array_equal(blink_schedule(n, FPS)[1], mids)
    assert not np.array_equal(blink_schedule(n, FPS, seed=7)[1][:5], mids[:5])


def test_no_blink_in_the_middle_of_a_strong_nod():
    n = int(120 * FPS)
    rng = np.random.default_rng(3)
    nods = np.zeros(n)
    for start in rng.integers(0, n - 13, 80):  # nods of 0.5 s, deep ones
        nods[start : start + 13] = np.maximum(nods[start : start + 13], np.sin(np.pi * np.arange(13) / 12) ** 2)
    closure, mids = blink_schedule(n, FPS, nods)
    _, free = blink_schedule(n, FPS)
    assert np.any(nods[free] > NOD_LIMIT)  # without the nods some blinks would have fallen in one
    assert np.all(nods[mids] <= NOD_LIMIT)
    gaps = np.diff(mids) / FPS
    assert gaps.max() <= MAX_GAP_S + 1 / FPS and 10 <= len(mids) / 2 <= 20


# ----------------------------------------------------------------------------- landmarks and closure


def _opening(shape, eye) -> np.ndarray:
    poly = np.r_[eye.upper, eye.lower[::-1]].astype(np.int32)
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, [poly], 1)
    return m.astype(bool)


def visible_iris(frame, original, eye) -> int:
    """Pixels of the open eye's iris and pupil (the darker half of its opening) still showing as they were."""
    grey = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY).astype(int)
    inside = _opening(original.shape, eye)
    iris = inside & (grey < np.median(grey[inside]))
    same = np.abs(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(int) - grey) <= 10
    return int((iris & same).sum())


@needs_model
@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_eyelid_landmarks_on_real_faces(faces, mesh, name):
    """Nine points per lid, around the hand-marked pupils, an open eye's aspect ratio."""
    p, box = faces[name]
    lm = mesh(p.rgb, box)
    assert lm.score > 0.9
    tol = 4 if name == "astronaut" else 16  # the corpus marks Hopper's pupils at the lower lid (y 200; the eyes are at 187-190)
    for eye, pupil in ((lm.right, p.eyes[0]), (lm.left, p.eyes[1])):
        assert eye.upper.shape == eye.lower.shape == (9, 2)
        centre = np.r_[eye.upper, eye.lower].mean(axis=0)
        assert np.hypot(*(centre - pupil)) < tol, (centre, pupil)
        assert 0.18 < eye_aspect_ratio(eye) < 0.4


@needs_model
@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_blink_closes_the_eyes_on_the_output_and_recovers(faces, mesh, name):
    """At the blink's middle the visible iris drops by >= 70 %; after it the frame is the photo, bit for bit."""
    p, box = faces[name]
    lm = mesh(p.rgb, box)
    closure, mids = blink_schedule(int(8 * FPS), FPS)
    blinks = Blinks(lm.right, lm.left, closure, p.rgb.shape, mids)
    m = int(mids[0])
    for eye in (lm.right, lm.left):
        open_ = visible_iris(p.rgb, p.rgb, eye)
        shut = visible_iris(blinks.apply(p.rgb.copy(), m), p.rgb, eye)
        assert open_ > 20
        assert shut <= 0.3 * open_, (open_, shut)
        half = visible_iris(blinks.apply(p.rgb.copy(), m + 3), p.rgb, eye)  # opening again
        assert shut < half < open_
    after = blinks.apply(p.rgb.copy(), m + round((OPEN_S + HOLD_S) * FPS) + 2)
    np.testing.assert_array_equal(after, p.rgb)


@needs_model
def test_only_the_lids_move(faces, mesh):
    """Changes stay between the eye corners, from a little above the upper lid to the lower lid."""
    p, box = faces["hopper"]
    lm = mesh(p.rgb, box)
    closure = np.ones(3, np.float32)
    out = Blinks(lm.right, lm.left, closure, p.rgb.shape).apply(p.rgb.copy(), 1)
    changed = np.any(out != p.rgb, axis=2)
    allowed = np.zeros_like(changed)
    for eye in (lm.right, lm.left):
        x0, x1 = int(eye.upper[:, 0].min()), int(np.ceil(eye.upper[:, 0].max())) + 1
        gap = float((eye.lower[:, 1] - eye.upper[:, 1]).max())
        y0 = int(eye.upper[:, 1].min() - gap - 3)
        y1 = int(np.ceil(eye.lower[:, 1].max())) + 2
        allowed[y0:y1, x0:x1] = True
    assert changed.any()
    assert not (changed & ~allowed).any()


def _lids(eye, frac: float = 0.6):
    """Columns of the middle ``frac`` of the eye, with the upper and lower lid there."""
    up = eye.upper[np.argsort(eye.upper[:, 0])]
    lo = eye.lower[np.argsort(eye.lower[:, 0])]
    xa, xb = float(up[0, 0]), float(up[-1, 0])
    xs = np.arange(int(np.ceil(xa + (1 - frac) / 2 * (xb - xa))), int(xb - (1 - frac) / 2 * (xb - xa)) + 1)
    return xs, np.interp(xs, up[:, 0], up[:, 1]), np.interp(xs, lo[:, 0], lo[:, 1])


def _grey(rgb) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


@needs_model
@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_shut_lid_has_a_lash_line(faces, mesh, name):
    """Shut: along the lower lid a line darker than the lid's skin above it, of the photo's own dark lash colour
    (not black); it comes with the closure (none at c = 0, darker shut than half shut)."""
    p, box = faces[name]
    lm = mesh(p.rgb, box)
    blinks = Blinks(lm.right, lm.left, np.zeros(1, np.float32), p.rgb.shape)
    assert np.array_equal(blinks.close(p.rgb.copy(), 0.0), p.rgb)
    shut, half = blinks.close(p.rgb.copy(), 1.0), blinks.close(p.rgb.copy(), 0.5)
    g_shut, g_half, g_photo = _grey(shut), _grey(half), _grey(p.rgb)
    for eye, drawn in zip((lm.right, lm.left), blinks.eyes):
        xs, u, low = _lids(eye)
        line = np.array([g_shut[int(round(b)), x] for x, b in zip(xs, low)])  # along the shut lid's curve
        lid = np.array([g_shut[int(round((a + b) / 2)) - 1, x] for x, a, b in zip(xs, u, low)])  # the skin above
        assert np.median(line) < 0.75 * np.median(lid), (np.median(line), np.median(lid))
        assert (line < lid).mean() > 0.9
        assert drawn.lash.max() > 10 and drawn.lash.min() < 110  # a dark colour, not black
        lash = np.array([g_photo[int(round(a)) - 1 : int(round(a)) + 2, x].min() for x, a in zip(xs, u)])
        assert abs(float(drawn.lash @ np.array([0.299, 0.587, 0.114])) - np.median(lash)) < 40  # the photo's lashes
        mid_half = np.array([g_half[int(round(a + 0.5 * (b - a))), x] for x, a, b in zip(xs, u, low)])
        assert np.median(line) < np.median(mid_half)  # the half-shut line (there) is lighter than the shut one


@needs_model
@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_nothing_outside_the_eyes_mask_changes(faces, mesh, name):
    """Over a whole blink every pixel outside the mask stays bit for bit; the mask is each eye's opening, at
    most MARGIN of the opening (+ a few px) above it, and the lash line's soft edge below it, between the corners."""
    from lipsync.blink import MARGIN

    p, box = faces[name]
    lm = mesh(p.rgb, box)
    closure, mids = blink_schedule(int(8 * FPS), FPS)
    blinks = Blinks(lm.right, lm.left, closure, p.rgb.shape, mids)
    mask = blinks.mask(p.rgb)
    allowed = np.zeros(mask.shape, bool)
    for eye in (lm.right, lm.left):
        pts = np.r_[eye.upper, eye.lower]
        x0, x1 = int(np.floor(pts[:, 0].min())), int(np.ceil(pts[:, 0].max())) + 1
        gap = float((eye.lower[:, 1] - eye.upper[:, 1]).max())
        top = int(eye.upper[:, 1].min() - MARGIN * gap - 3)
        bottom = int(np.ceil(eye.lower[:, 1].max() + 0.08 * eye.width)) + 2
        allowed[top:bottom, x0:x1] = True
    assert mask.max() == 1.0 and not (mask > 0)[~allowed].any()
    m = int(mids[0])
    for t in np.flatnonzero(closure[m - 5 : m + 6] > 0) + m - 5:
        out = blinks.apply(p.rgb.copy(), int(t))
        assert np.array_equal(out[mask == 0], p.rgb[mask == 0]), t


@needs_model
def test_a_glasses_rim_stays_put(mesh):
    """Heavy dark rims drawn round the eyes, touching their corners and just under the lower lids: over a whole
    blink not one of the rim's pixels changes, and the eyes still shut."""
    from face_corpus import astronaut, glasses

    a = astronaut()
    g = glasses(a, dark=False)
    rim = np.abs(g.rgb.astype(int) - a.rgb).max(axis=2) > 40
    box = find_face(g.rgb, offline_detector())
    lm = mesh(g.rgb, box)
    closure, mids = blink_schedule(int(8 * FPS), FPS)
    blinks = Blinks(lm.right, lm.left, closure, g.rgb.shape, mids)
    m = int(mids[0])
    near = np.zeros(rim.shape, bool)
    for eye in (lm.right, lm.left):
        x0, y0 = np.floor(np.r_[eye.upper, eye.lower].min(axis=0)).astype(int) - 4
        x1, y1 = np.ceil(np.r_[eye.upper, eye.lower].max(axis=0)).astype(int) + 5
        near[y0:y1, x0:x1] = True
    assert (rim & near).sum() > 50  # the rim runs right by the eyes
    for t in np.flatnonzero(closure[m - 5 : m + 6] > 0) + m - 5:
        out = blinks.apply(g.rgb.copy(), int(t))
        assert np.array_equal(out[rim], g.rgb[rim]), t
    shut = blinks.apply(g.rgb.copy(), m)
    for eye in (lm.right, lm.left):
        assert visible_iris(shut, g.rgb, eye) <= 0.3 * visible_iris(g.rgb, g.rgb, eye)


@needs_model
def test_real_glasses_rim_and_lens_highlights_stay_put(faces, mesh):
    """Grace Hopper's rim runs 2-4 px above her upper lids, with white highlights on the lens between: the
    rim's dark pixels (3-15 px above the lid) and the highlights (up to 1 px above it) never change."""
    p, box = faces["hopper"]
    lm = mesh(p.rgb, box)
    closure, mids = blink_schedule(int(8 * FPS), FPS)
    blinks = Blinks(lm.right, lm.left, closure, p.rgb.shape, mids)
    grey = _grey(p.rgb)
    rim, glare = np.zeros(grey.shape, bool), np.zeros(grey.shape, bool)
    for eye in (lm.right, lm.left):
        xs, u, _ = _lids(eye, 1.0)
        for x, a in zip(xs, u):
            rim[int(a) - 15 : int(a) - 3, x] = True
            glare[int(a) - 15 : int(a) - 1, x] = True
    rim &= grey < 50
    glare &= grey > 215
    assert rim.sum() > 300 and glare.sum() > 30
    m = int(mids[0])
    for t in np.flatnonzero(closure[m - 5 : m + 6] > 0) + m - 5:
        out = blinks.apply(p.rgb.copy(), int(t))
        assert np.array_equal(out[rim], p.rgb[rim]) and np.array_equal(out[glare], p.rgb[glare]), t


@needs_model
def test_no_lid_is_painted_over_dark_glasses(mesh):
    """Behind opaque dark lenses there is no eye to shut: no skin is painted on the lens, and the clip says why."""
    from face_corpus import astronaut, glasses

    g = glasses(astronaut(), dark=True)
    box = find_face(g.rgb, offline_detector())
    lm = mesh(g.rgb, box)
    blinks = Blinks(lm.right, lm.left, np.ones(3, np.float32), g.rgb.shape)
    assert len(blinks.eyes) == 2 and np.array_equal(blinks.apply(g.rgb.copy(), 1), g.rgb)
    assert blinks.prepare(g.rgb).eyes == []
    src = PhotoSource(g.rgb, box, "given", plain=None, n_frames=250)
    blinks, note = plan_blinks(src, Speech(np.zeros(160000, np.float32), 16000), 250, GenerateOptions())
    assert blinks is None and "dark glasses" in note


def _iris_model():
    from eye_closure import iris_model_path

    return iris_model_path() if _have_model() else None


@needs_model
@pytest.mark.skipif(_iris_model() is None, reason="pip install --no-deps -r requirements-landmarks.txt (iris model)")
def test_the_shut_eye_reads_as_shut_and_keeps_its_skin(faces, mesh):
    """On the astronaut at mid-blink MediaPipe's iris model reads each eye at <= 30 % of its open aspect ratio
    (the face mesh's own eyelids barely follow an eye, see tests/eye_closure.py), and the shut lid keeps the fine
    detail of the photo's lid skin (at least half of it: no smear)."""
    from eye_closure import IrisEyes, lid_skin_texture, shut_lid_texture

    p, box = faces["astronaut"]
    lm = mesh(p.rgb, box)
    closure, mids = blink_schedule(int(8 * FPS), FPS)
    shut = Blinks(lm.right, lm.left, closure, p.rgb.shape, mids).apply(p.rgb.copy(), int(mids[0]))
    iris = IrisEyes()
    for eye, left in ((lm.right, False), (lm.left, True)):
        ratio = iris.ear(shut, eye, left) / iris.ear(p.rgb, eye, left)
        assert ratio <= 0.3, ratio
        ref, _ = lid_skin_texture(p.rgb, eye)
        assert shut_lid_texture(shut, eye) >= 0.5 * ref, (shut_lid_texture(shut, eye), ref)


@needs_model
def test_plan_blinks_on_a_photo(faces):
    p, box = faces["astronaut"]
    src = PhotoSource(p.rgb, box, "given", plain=None, n_frames=250)
    speech = Speech(np.zeros(160000, np.float32), 16000)
    blinks, note = plan_blinks(src, speech, 250, GenerateOptions())
    assert blinks is not None and len(blinks) >= 1 and note.startswith("on:")
    assert plan_blinks(src, speech, 250, GenerateOptions(blink=False)) == (None, "off (asked for)")


# ----------------------------------------------------------------------------- offline


def test_missing_model_means_no_blinks_and_a_reason(faces, monkeypatch, tmp_path):
    p, box = faces["astronaut"]
    src = PhotoSource(p.rgb, box, "given", plain=None, n_frames=100)
    speech = Speech(np.zeros(64000, np.float32), 16000)
    monkeypatch.setenv("LIPSYNC_FACE_LANDMARKS", str(tmp_path / "nowhere.tflite"))
    blinks, note = plan_blinks(src, speech, 100, GenerateOptions())
    assert blinks is None and "nowhere.tflite is not a file" in note
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    monkeypatch.setenv("LIPSYNC_FACE_LANDMARKS", str(broken))
    blinks, note = plan_blinks(src, speech, 100, GenerateOptions())
    assert blinks is None and note.startswith("off:") and "broken.tflite" in note
    # no package installed at all, and offline: no download either
    monkeypatch.delenv("LIPSYNC_FACE_LANDMARKS")
    monkeypatch.setenv("LIPSYNC_OFFLINE", "1")
    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path / "cache"))
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    blinks, note = plan_blinks(src, speech, 100, GenerateOptions())
    assert blinks is None and "requirements-landmarks.txt" in note
    assert "could not be downloaded" in note and "LIPSYNC_OFFLINE is set" in note


@needs_model
def test_without_the_package_the_model_is_downloaded(monkeypatch, tmp_path):
    """A Space installs only requirements.txt (no mediapipe): the model comes through lipsync.weights,
    checked against its pin, from the wheel on PyPI's file host (here a local stand-in with the real file)."""
    import hashlib
    import importlib.util
    import threading
    import zipfile
    from dataclasses import replace
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import lipsync.weights as w

    real = model_path()  # the installed package's file (this test needs it: needs_model)
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "mp.whl", "w") as z:
        z.write(real, w.FACE_LANDMARK.member)
    archive = (served / "mp.whl").read_bytes()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(w, "FACE_LANDMARK", replace(
            w.FACE_LANDMARK, url=f"http://127.0.0.1:{server.server_address[1]}/mp.whl",
            archive_sha256=hashlib.sha256(archive).hexdigest(), archive_size=len(archive)))
        monkeypatch.delenv("LIPSYNC_FACE_LANDMARKS", raising=False)
        for var in ("LIPSYNC_OFFLINE", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
        got = model_path()
    finally:
        server.shutdown()
        server.server_close()
    assert got.is_relative_to(tmp_path / "cache") and got.read_bytes() == real.read_bytes()
    FaceMesh(got)  # and it loads


def test_blink_option():
    assert GenerateOptions().blink is True
    assert GenerateOptions(blink="off").blink is False
    with pytest.raises(InputError, match="blink must be yes or no"):
        GenerateOptions(blink="sometimes")


# ----------------------------------------------------------------------------- in the pipeline


@needs_model
def test_pipeline_blinks_and_records_what_ran(engine, tmp_path):
    """A photo clip: the compositor closes the eyes at each blink's middle, leaves them open elsewhere;
    the Result says what ran (enhance, blinks), and with blink off nothing near the eyes changes."""
    from lipsync import Request
    from videos import speechlike

    p = hopper()
    speech = Speech(speechlike(2.0), 16000)  # 50 frames; the first blink's middle is frame 37
    box = find_face(p.rgb, offline_detector())
    opts = GenerateOptions(box=box.as_tuple(), label=False, motion=0.0)
    with engine.prepare(Request(p.rgb, tmp_path / "b.mp4", audio=speech, options=opts)) as parts:
        assert parts.blinks is not None and len(parts.blinks) >= 1, parts.blink_note
        comp = parts.source.compositor(parts)
        mouths = engine.predict_mouths(parts)
        frames = [comp.paste(m).copy() for m in mouths]
        result = engine.result(parts)
    assert result.enhance.startswith("fast") and result.blink.startswith("on:")
    mid = int(parts.blinks.mids[0])
    eyes = np.zeros(p.rgb.shape[:2], bool)
    eyes[170:200, 190:340] = True  # both eyes, above the mouth's paste
    assert np.abs(frames[mid][eyes].astype(int) - p.rgb[eyes]).mean() > 3
    assert np.array_equal(frames[mid - 6][eyes], p.rgb[eyes])  # before the blink: the photo's eyes
    off = GenerateOptions(box=box.as_tuple(), label=False, motion=0.0, blink=False, enhance="off")
    with engine.prepare(Request(p.rgb, tmp_path / "c.mp4", audio=speech, options=off)) as parts:
        assert parts.blinks is None
        result = engine.result(parts)
    assert result.blink == "off (asked for)" and result.enhance.startswith("off")


@needs_model
def test_the_face_mesh_loads_once_per_model_file(faces, monkeypatch):
    """Clips and live visitors share one loaded face mesh; a different model file loads afresh."""
    import lipsync.blink as blink_mod
    from lipsync.face import landmarks

    loads = []
    real_init = landmarks.FaceMesh.__init__

    def counting(self, path=None):
        loads.append(str(path))
        real_init(self, path)

    monkeypatch.setattr(landmarks.FaceMesh, "__init__", counting)
    monkeypatch.setattr(blink_mod, "_meshes", {})
    p, box = faces["astronaut"]
    src = PhotoSource(p.rgb, box, "given", plain=None, n_frames=100)
    speech = Speech(np.zeros(64000, np.float32), 16000)
    for _ in range(3):
        blinks, note = plan_blinks(src, speech, 100, GenerateOptions())
        assert blinks is not None, note
    from lipsync.live.look import load_eyes

    eyes, note = load_eyes(p.rgb, box)
    assert eyes is not None and note.startswith("on:")
    assert loads == [str(model_path())], "one load for three clips and a live session"
    monkeypatch.setenv("LIPSYNC_FACE_LANDMARKS", str(model_path()) + "-missing")
    blinks, note = plan_blinks(src, speech, 100, GenerateOptions())
    assert blinks is None and "-missing is not a file" in note
