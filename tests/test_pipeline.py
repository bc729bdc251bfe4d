"""The public API end to end: results, progress, pipelining, clean-up."""


import subprocess

import numpy as np
import pytest

from conftest import ffprobe
from conftest import temp_entries as _tmp_dirs
from lipsync import GenerateOptions, LipSyncError, Speech
from lipsync.blend import Blender
from lipsync.face import FaceBox, face_crop


pytestmark = pytest.mark.usefixtures("own_tempdir")


def test_generate_returns_a_full_result(engine, example_image, oracle_wav, tmp_path):
    stages = []
    before = _tmp_dirs()
    r = engine.generate(
        example_image, oracle_wav, tmp_path / "a.mp4", progress=lambda s, d, t: stages.append((s, d, t))
    )
    assert r.video.is_file() and r.frames == 181 and r.fps == 25.0
    assert abs(r.duration_s - r.audio_duration_s) <= 1 / 25
    assert r.detector == "opencv-haar" and isinstance(r.box, FaceBox)
    assert (r.width, r.height) == (512, 512)
    assert {"image", "audio", "face", "mel", "lipsync", "encode"} <= set(r.timings)
    stages_run = {k for k in r.timings if "." not in k}
    assert stages_run <= {"model", "image", "audio", "face", "mel", "lipsync", "encode"}
    # the parts of a stage say where it went; they fit inside it (the network runs beside the other two)
    assert {k for k in r.timings if "." in k} == {"lipsync.network", "lipsync.paste", "lipsync.write"}
    assert r.timings["lipsync.paste"] + r.timings["lipsync.write"] <= r.timings["lipsync"]
    assert r.timings["lipsync.network"] <= r.timings["lipsync"]
    assert 0 < r.network_busy <= 1 and r.to_dict()["network_busy"] == r.network_busy
    names = [s for s, _, _ in stages]
    assert names.index("model") < names.index("image") < names.index("face") < names.index("lipsync")
    assert ("lipsync", 181, 181) in stages
    assert _tmp_dirs() == before  # the request's temporary directory is gone


def test_speech_object_keeps_its_sample_rate(engine, example_image, tmp_path):
    rate = 22050
    t = np.arange(int(rate * 1.5)) / rate
    speech = Speech((0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate)
    r = engine.generate(example_image, speech, tmp_path / "b.mp4")
    a = next(s for s in ffprobe(r.video)["streams"] if s["codec_type"] == "audio")
    assert int(a["sample_rate"]) == rate
    assert r.frames == round(1.5 * 25)


def test_given_box_skips_detection(engine, example_image, oracle_wav, tmp_path):
    r = engine.generate(
        example_image, oracle_wav, tmp_path / "c.mp4", GenerateOptions(box=(60, 200, 160, 290), fps=12)
    )
    assert r.detector == "given" and r.box == FaceBox(60, 200, 160, 290)
    assert r.frames == round(115879 / 16000 * 12)


def test_failure_midway_leaves_nothing(engine, example_image, oracle_wav, tmp_path, monkeypatch):
    gen = engine.generator

    def broken(*a, **k):
        yield np.zeros((4, 96, 96, 3), np.float32)
        raise LipSyncError("simulated failure")

    monkeypatch.setattr(gen, "predict", broken)
    before = _tmp_dirs()
    with pytest.raises(LipSyncError, match="simulated"):
        engine.generate(example_image, oracle_wav, tmp_path / "d.mp4")
    assert [p.name for p in tmp_path.iterdir()] == ["tmp"]
    assert _tmp_dirs() == before


class _Collect:
    def __init__(self):
        self.frames = []

    def write(self, f):
        self.frames.append(f.copy())

    def abort(self):
        pass


def test_pipelined_frames_equal_sequential(engine, oracle, example_image):
    from lipsync.media.images import load_image
    from lipsync.pipeline.progress import Clock
    from lipsync.pipeline.render import stream_frames

    rgb = load_image(example_image)
    box = FaceBox(60, 200, 160, 290)
    crop = face_crop(rgb, box)
    mels = np.stack([oracle["mel"][:, s : s + 16] for s in oracle["chunk_starts"][:40]])
    gen = engine.generator
    blender = Blender(rgb, box)
    sequential = [blender.paste(p) for batch in gen.predict(crop, mels, batch_size=8) for p in batch]
    sink = _Collect()
    clock = Clock()
    stream_frames(gen.predict(crop, mels, batch_size=8), blender, sink, lambda *a: None, clock, len(mels))
    assert len(sink.frames) == len(sequential) == 40
    assert set(clock.timings) == {"lipsync", "lipsync.network", "lipsync.paste", "lipsync.write"}
    assert 0 < clock.network_busy_s <= clock.timings["lipsync"]
    for a, b in zip(sink.frames, sequential):
        np.testing.assert_array_equal(a, b)


def _frame_hashes(mp4) -> list[str]:
    """MD5 of every decoded video frame (ffmpeg's framemd5)."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(mp4), "-map", "0:v", "-f", "framemd5", "-"],
        check=True, capture_output=True, text=True,
    ).stdout
    return [line.rsplit(",", 1)[-1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def test_concurrent_requests_keep_their_own_options(engine, example_image, speech, tmp_path):
    """Two requests at once on one engine, with different options, equal the same requests run one by one."""
    import threading

    a = GenerateOptions(batch_size=1, fps=20, label=False)
    b = GenerateOptions(batch_size=16, pads=(0, 20, 0, 0))
    seq = [engine.generate(example_image, speech, tmp_path / f"seq{i}.mp4", o) for i, o in enumerate((a, b))]
    results, errors = {}, []

    def run(i, o):
        try:
            results[i] = engine.generate(example_image, speech, tmp_path / f"par{i}.mp4", o)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, o)) for i, o in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    assert results[0].fps == 20 and results[1].fps == 25
    assert results[0].box != results[1].box  # the pads of each request
    for i in (0, 1):
        assert _frame_hashes(results[i].video) == _frame_hashes(seq[i].video)
    assert engine.generator.batch_size == 8  # the engine's own setting is untouched


def test_split_run_equals_streamed_run(engine, example_image, speech, tmp_path):
    """prepare -> predict_mouths -> render (how a ZeroGPU Space runs it) makes the same video as generate."""
    from lipsync import Request

    opts = GenerateOptions(label=False)
    whole = engine.generate(example_image, speech, tmp_path / "whole.mp4", opts)
    parts = engine.prepare(Request(example_image, tmp_path / "split.mp4", audio=speech, options=opts))
    mouths = engine.predict_mouths(parts)
    assert mouths.dtype == np.uint8 and mouths.shape == (whole.frames, 96, 96, 3)
    engine.render(parts, mouths=[mouths])
    assert _frame_hashes(tmp_path / "split.mp4") == _frame_hashes(whole.video)


def test_output_is_marked_as_ai_generated(engine, example_image, tmp_path):
    """The MP4 and the HLS init segments carry the tag; the frames carry a visible label, beside the face."""
    from lipsync.blend import label_box
    from lipsync.media.hls import package_hls
    from videos import decode_frames

    t = np.arange(16000) / 16000
    speech = Speech((0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    r = engine.generate(example_image, speech, tmp_path / "tagged.mp4", motion=0)
    tags = ffprobe(r.video)["format"]["tags"]
    assert "AI-generated" in tags.get("comment", "")
    hls = package_hls(r.video, tmp_path / "hls")
    inits = list((tmp_path / "hls").glob("*/init.mp4"))
    assert inits and all(b"AI-generated" in p.read_bytes() for p in inits), hls

    plain = engine.generate(example_image, speech, tmp_path / "plain.mp4", GenerateOptions(label=False), motion=0)
    assert "AI-generated" in ffprobe(plain.video)["format"]["tags"].get("comment", "")

    # the label is really in the frames: they differ from the unlabelled run in the label's box, and only there
    labelled, unlabelled = decode_frames(r.video).astype(int), decode_frames(plain.video).astype(int)
    assert len(labelled) == len(unlabelled) == r.frames
    x, y, w, h = label_box((r.height, r.width), avoid=r.box)
    face = r.box
    for i in (0, r.frames // 2, r.frames - 1):
        changed = np.abs(labelled[i] - unlabelled[i]).max(axis=2) > 40
        ys, xs = np.nonzero(changed)
        assert changed[y : y + h, x : x + w].mean() > 0.3, f"frame {i}: no label in its box"
        near = (ys >= y - 4) & (ys < y + h + 4) & (xs >= x - 4) & (xs < x + w + 4)
        assert near.all(), f"frame {i}: changed outside the label's box"
        assert not changed[face.y1 : face.y2, face.x1 : face.x2].any(), f"frame {i}: the label covers the face"


def _children():
    import psutil

    return [c for c in psutil.Process().children(recursive=True) if c.is_running() and c.status() != "zombie"]


@pytest.mark.parametrize("where", ["burner", "label", "compositor"])
def test_a_failure_around_the_encoder_stops_it_and_leaves_nothing(engine, example_image, tmp_path, monkeypatch, where):
    """An error in the caption burner, the label or the compositor: a clear error, no ffmpeg, no part file."""
    import lipsync.pipeline.prepare as prepare
    from lipsync import Request
    from lipsync.media.audio import Phrase
    from lipsync.media.captions import CaptionBurner
    from lipsync.sources import PhotoSource

    def fail(*a, **k):
        raise LipSyncError(f"injected {where} failure")

    target = {"burner": (CaptionBurner, "__init__"), "label": (prepare, "label_box"),
              "compositor": (PhotoSource, "compositor")}[where]
    t = np.arange(24000) / 16000
    speech = Speech((0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000, (Phrase("Hello there.", 0.1, 1.2),))
    out = tmp_path / "out" / "v.mp4"
    opts = GenerateOptions(captions=True, burn_captions=True, frame_step=2)
    before = _tmp_dirs()
    monkeypatch.setattr(*target, fail)
    with pytest.raises(LipSyncError, match=f"injected {where} failure") as e:
        engine.run(Request(example_image, out, audio=speech, options=opts))
    assert _children() == [], [c.cmdline() for c in _children()]  # at once, while the error is still held
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no MP4, no part file, no captions
    assert _tmp_dirs() == before
    del e


def test_face_detection_does_not_wait_for_the_model(checkpoint, example_image, monkeypatch):
    """The face preview answers in under a second while the model is still loading (or calibrating)."""
    import threading
    import time

    import lipsync.models as models
    from lipsync.face import HaarDetector
    from lipsync.face.preview import list_faces
    from lipsync.media.images import load_image
    from lipsync.pipeline import LipSync

    loading, release = threading.Event(), threading.Event()
    real = models.load_wav2lip

    def slow(*a, **k):  # the loader is blocked until the test lets it go
        loading.set()
        assert release.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(models, "load_wav2lip", slow)
    rgb = load_image(example_image)
    for given in (HaarDetector(), None):  # a detector given to the engine, and one it builds lazily
        engine = LipSync(checkpoint, device="cpu", detector=given)
        loader = threading.Thread(target=engine.load, daemon=True)
        loader.start()
        try:
            assert loading.wait(30)
            answer: list = []
            t0 = time.perf_counter()
            def ask(engine=engine, answer=answer):
                answer.append(list_faces(rgb, engine.detector))

            preview = threading.Thread(target=ask, daemon=True)
            preview.start()
            preview.join(timeout=30)
            took = time.perf_counter() - t0
            assert answer and answer[0], "the face preview waited for the model"
            if given is not None:
                assert took < 1.0, f"the face preview took {took:.2f} s"
            assert loader.is_alive()  # the model was still loading all along
        finally:
            release.set()
            loader.join(timeout=60)
        assert engine._generator.ready
        loading.clear()
        release.clear()


def test_a_resource_that_fails_to_load_is_tried_again():
    from lipsync.pipeline.resources import Lazy

    calls = []

    def build():
        calls.append(1)
        if len(calls) == 1:
            raise LipSyncError("not yet")
        return "built"

    lazy = Lazy(build)
    with pytest.raises(LipSyncError):
        lazy.get()
    assert not lazy.ready and lazy.get() == "built" and lazy.get() == "built" and len(calls) == 2


def test_visible_label_avoids_the_face():
    from lipsync.blend import draw_label

    img = np.full((400, 400, 3), 120, np.uint8)
    face = FaceBox(250, 400, 0, 200)  # covers the bottom-left corner
    out = draw_label(img, avoid=face)
    changed = np.argwhere((out != img).any(axis=2))
    assert len(changed) > 50
    ys, xs = changed[:, 0], changed[:, 1]
    inside = (ys >= face.y1) & (ys < face.y2) & (xs >= face.x1) & (xs < face.x2)
    assert not inside.any()


@pytest.mark.parametrize(
    "size, face",
    [
        ((400, 400), FaceBox(40, 380, 40, 360)),  # a tight selfie crop: every corner overlaps
        ((512, 384), FaceBox(10, 475, 30, 370)),  # face fills all but a thin strip at the bottom
        ((300, 600), FaceBox(0, 300, 120, 480)),  # wide frame, face in the middle, full height
    ],
)
def test_visible_label_never_covers_a_tight_face(size, face):
    from lipsync.blend import draw_label

    h, w = size
    img = np.full((h, w, 3), 120, np.uint8)
    out = draw_label(img, avoid=face)
    changed = np.argwhere((out != img).any(axis=2))
    assert len(changed) > 50, "the label must still be shown"
    ys, xs = changed[:, 0], changed[:, 1]
    inside = (ys >= face.y1) & (ys < face.y2) & (xs >= face.x1) & (xs < face.x2)
    assert not inside.any()


def test_no_label_rather_than_one_on_the_face(caplog):
    from lipsync.blend import draw_label

    img = np.full((200, 200, 3), 120, np.uint8)
    out = draw_label(img, avoid=FaceBox(0, 200, 0, 200))  # the face is the whole frame
    assert np.array_equal(out, img)
    assert "no room for the visible label" in caplog.text


def test_a_clips_helper_programs_yield_the_cpu_to_live_work(engine, example_image, speech, tmp_path,
                                                            program_priorities):
    # beside live sessions, a clip's audio decode, its speech and its HLS transcode take what the sessions
    # leave (as its encoder does); the speech a live session asks for keeps our priority
    import soundfile as sf

    from lipsync.media.hls import package_hls
    from lipsync.proc import BACKGROUND_NICE
    from lipsync.speech import synthesize

    started, lowered = program_priorities
    sf.write(tmp_path / "say.wav", speech.samples, speech.sample_rate)
    r = engine.generate(example_image, tmp_path / "say.wav", tmp_path / "a.mp4")
    engine.generate(example_image, out=tmp_path / "b.mp4", text="Hello.", voice="espeak:en-us")
    package_hls(r.video, tmp_path / "hls")
    clip = list(started)
    names = {n for n, _ in clip}
    assert {"ffmpeg", "espeak-ng"} <= names and len(clip) >= 5  # decode, two encoders, speech, HLS
    assert [(n, lowered.get(pid)) for n, pid in clip] == [(n, BACKGROUND_NICE) for n, _ in clip]
    started.clear()
    synthesize("Hello.", "espeak:en-us")  # what a live session's text does, on its own thread
    assert [n for n, _ in started] == ["espeak-ng"] and started[0][1] not in lowered
