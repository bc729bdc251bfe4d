"""The Gradio app: started as a real server, driven through gradio_client.

The server runs in its own process group on a free 127.0.0.1 port, offline,
on the CPU, with the seed-1234 random-weight checkpoint; texts are short so
each generation takes a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLE, ROOT, ffprobe

SHORT_TEXT = "Hello there, astronaut."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(checkpoint: Path | None, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LIPSYNC_CHECKPOINT", None)
    if checkpoint is not None:
        env["LIPSYNC_CHECKPOINT"] = str(checkpoint)
    env.update(
        HF_HUB_OFFLINE="1",
        LIPSYNC_DEVICE="cpu",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(tmp / "gradio"),
        TMPDIR=str(tmp),
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def running_app(
    checkpoint: Path | None, tmp: Path, timeout: float = 180.0, env_extra: dict | None = None, info: dict | None = None
):
    """Start ``python app.py`` on a free port; yield its URL; kill its process group after.

    ``env_extra`` adds environment variables; ``info``, when given, receives the server's ``pid``.
    """
    port = free_port()
    log_path = tmp / "app.log"
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env={**app_env(checkpoint, tmp), **(env_extra or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    if info is not None:
        info["pid"] = proc.pid
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer within {timeout:.0f} s:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.3)
        yield url, log_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    with running_app(checkpoint, tmp) as (url, log_path):
        yield url, log_path
    # stopped with SIGTERM, the app removes its request folders (its TMPDIR is tmp)
    assert not list(tmp.glob("lipsync-app-*")), "request folders left behind"
    assert "Traceback" not in log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False, download_files=str(Path(server[1]).parent / "downloads"))


def _call(client, **kwargs):
    from gradio_client import handle_file

    args = dict(image=handle_file(str(EXAMPLE)), text=SHORT_TEXT, voice="espeak:en-us", consent=True)
    args.update(kwargs)
    return client.predict(**args, api_name="/generate")


def _video_path(value) -> Path:
    if isinstance(value, dict):  # gr.Video answers {"video": path, "subtitles": ...}
        value = value.get("video")
    return Path(value)


@pytest.mark.slow
def test_generate_returns_mp4_zip_summary_and_captions(client):
    video, zip_file, summary, captions = _call(client)
    mp4 = _video_path(video)
    assert mp4.suffix == ".mp4"  # a finished file, never a streaming playlist
    info = ffprobe(mp4)
    codecs = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    assert codecs == {"video": "h264", "audio": "aac"}
    assert float(info["format"]["duration"]) > 0.5
    with zipfile.ZipFile(zip_file) as z:
        names = set(z.namelist())
        assert z.testzip() is None
    assert {"master.m3u8", "player.html", "hls.min.js"} <= names
    assert any(n.endswith("/index.m3u8") for n in names)
    assert "espeak" in summary.lower()
    assert "face found by" in summary.lower()
    from lipsync.media.captions import read_vtt

    assert Path(captions).suffix == ".vtt"
    assert [c.text for c in read_vtt(Path(captions))] == [SHORT_TEXT]
    assert "subs/index.m3u8" in names


@pytest.mark.slow
def test_uploaded_audio_replaces_text_and_length_is_honoured(client, oracle_wav):
    """A 7.2 s recording cut to 2 s: the text and voice are ignored, the video lasts 2 s."""
    from gradio_client import handle_file

    video, zip_file, summary, captions = _call(client, audio=handle_file(str(oracle_wav)), text="", length_s=2)
    duration = float(ffprobe(_video_path(video))["format"]["duration"])
    assert abs(duration - 2.0) < 0.15
    assert "your audio file" in summary
    assert zip_file
    assert captions is None and "No captions" in summary


def test_api_exposes_generate_with_named_parameters(client):
    info = client.view_api(print_info=False, return_format="dict")
    endpoint = info["named_endpoints"]["/generate"]
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    assert names[:7] == ["image", "text", "voice", "length_s", "loop", "audio", "consent"]
    assert names[-3:] == ["burn_captions", "video", "motion"]
    assert len(endpoint["returns"]) == 4
    # the page's streaming handler and its helpers are not endpoints scripts can call
    assert set(info["named_endpoints"]) == {"/generate"}


def test_photo_without_face_is_a_readable_error(client, tmp_path):
    from gradio_client.exceptions import AppError
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(grey)
    from gradio_client import handle_file

    with pytest.raises(AppError) as e:
        _call(client, image=handle_file(str(grey)))
    msg = str(e.value)
    assert "face" in msg.lower()
    assert "Traceback" not in msg


def test_unticked_consent_is_refused(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="right to use"):
        _call(client, consent=False)


def test_unavailable_voice_is_a_readable_error(client):
    """Coqui voices cannot be downloaded offline: listed as unavailable, refused with the reason."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="cannot be used here"):
        _call(client, voice="coqui:ljspeech")


def test_empty_text_without_audio_is_refused(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="text"):
        _call(client, text="   ")


# -- in-process: the handler alone (no server) ------------------------------------------------


def test_missing_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    import gradio as gr

    import app
    from lipsync import LipSync

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    handler = app.make_generate(LipSync(tmp_path / "missing.pth", device="cpu"))
    with pytest.raises(gr.Error) as e:
        handler(str(EXAMPLE), SHORT_TEXT, "espeak:en-us", consent=True)
    assert "missing.pth" in e.value.message
    assert "LIPSYNC_CHECKPOINT" in e.value.message and "--checkpoint" in e.value.message


def test_unexpected_errors_are_generic_and_logged(caplog):
    import gradio as gr

    import app

    class Broken:
        def run(self, *a, **k):
            raise RuntimeError("internal detail 0xdeadbeef")

    handler = app.make_generate(Broken())
    with caplog.at_level("ERROR", logger="lipsync.app"), pytest.raises(gr.Error) as e:
        handler(str(EXAMPLE), SHORT_TEXT, "espeak:en-us", consent=True)
    assert e.value.message == app.GENERIC_ERROR
    assert "deadbeef" not in e.value.message
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "deadbeef" in str(logged[-1].exc_info[1])  # the server log keeps the detail


def test_unavailable_voices_are_listed_not_hidden(monkeypatch):
    import app
    from lipsync.speech import tts

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    choices, default = app.voice_choices()
    ids = [v for _, v in choices]
    assert {v.id for v in tts.list_voices()} == set(ids)
    assert "espeak:en-us" in ids and default in ids
    unavailable = [label for label, v in choices if not tts.get_voice(v).available]
    assert unavailable and all("unavailable:" in label for label in unavailable)


def test_build_demo_and_library_stays_free_of_gradio():
    import app

    demo = app.build_demo()
    assert demo.config is not None
    code = "import sys, lipsync, lipsync.speech.tts, lipsync.media.hls, lipsync.pipeline, lipsync.cli; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_video_is_kept_when_hls_packaging_fails(engine, monkeypatch):
    import app
    import lipsync.media.hls
    from lipsync.errors import EncodeError

    def broken(*a, **k):
        raise EncodeError("ffmpeg could not write the HLS renditions.")

    monkeypatch.setattr(lipsync.media.hls, "package_hls", broken)
    video, zip_file, summary, captions = app.make_generate(engine)(str(EXAMPLE), SHORT_TEXT, "espeak:en-us", consent=True)
    assert Path(video).is_file() and zip_file is None and Path(captions).is_file()
    assert "No HLS package" in summary and "could not write" in summary


# ----------------------------------------------------------------------------- hostile images via the API


def _corpus_names():
    from bad_inputs import CORPUS

    return sorted(CORPUS)


@pytest.mark.slow
@pytest.mark.parametrize("name", _corpus_names())
def test_image_corpus_through_the_api(client, tmp_path, name):
    """Every bad or awkward image gives a video or a readable error, never a traceback."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from bad_inputs import CORPUS

    fname, make, expect = CORPUS[name]
    path = tmp_path / fname
    path.write_bytes(make())
    try:
        video, _zip, _summary, _captions = _call(client, image=handle_file(str(path)), text="Hi.")
    except AppError as e:
        msg = str(e)
        assert expect != "ok", f"{name}: {msg}"
        assert "Traceback" not in msg and 'File "' not in msg
        assert len(msg) > 20, msg
        return
    assert expect != "error", f"{name} should have been refused"
    info = ffprobe(_video_path(video))
    assert {s["codec_name"] for s in info["streams"]} == {"h264", "aac"}


def test_zerogpu_holds_the_gpu_only_for_the_network(engine, monkeypatch):
    """With the `spaces` package present, only the network runs inside `spaces.GPU`: speech,
    face detection, encoding and HLS packaging run outside it, and the engine is the process's one."""
    import importlib
    import types

    import lipsync.media.encode as encode
    import lipsync.media.hls as hls
    import lipsync.pipeline as pipeline
    from lipsync.speech import tts

    state = {"gpu": False, "gpu_calls": 0}
    seen: dict[str, list[bool]] = {}

    def GPU(duration=None):  # noqa: N802 - the real decorator's name
        def wrap(fn):
            def inner(*a, **k):
                state["gpu"] = True
                state["gpu_calls"] += 1
                try:
                    return fn(*a, **k)
                finally:
                    state["gpu"] = False

            return inner

        return wrap

    def spy(owner, name, key):
        real = getattr(owner, name)

        def wrapper(*a, **k):
            seen.setdefault(key, []).append(state["gpu"])
            return real(*a, **k)

        monkeypatch.setattr(owner, name, wrapper)

    spy(tts, "narrate", "speech")
    spy(pipeline, "find_face", "face")
    spy(encode.VideoWriter, "write", "encode")
    spy(hls, "package_hls", "hls")
    spy(type(engine.generator), "predict", "network")
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    import app

    app = importlib.reload(app)
    try:
        monkeypatch.setattr(app, "_engine", engine)
        video, zip_file, _, _ = app.generate(str(EXAMPLE), SHORT_TEXT, "espeak:en-us", consent=True)
        assert Path(video).is_file() and zip_file
        assert state["gpu_calls"] == 1
        assert seen["network"] == [True]
        for key in ("speech", "face", "encode", "hls"):
            assert seen[key] and not any(seen[key]), key
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(app)


# ----------------------------------------------------------------------------- the page's helpers, in-process


def _drain(gen):
    """Run a generator handler to its end; return what it yielded."""
    return list(gen)


def test_live_handler_streams_segments_then_the_results(engine):
    """The page's handler: first a cleared page, then the captions on the preview, then MPEG-TS
    segments while the video is made, then the MP4 with its captions, then the HLS zip."""
    import app

    out = _drain(app.make_generate_live(engine)(str(EXAMPLE), "Hello there, astronaut. How are you today?",
                                                "espeak:en-us", consent=True, frame_step=2))  # fmt: skip
    assert all(len(o) == 5 for o in out)
    previews = [o[0] for o in out]
    first = previews[0]
    assert first["__type__"] == "update" and first["value"] is None and first["subtitles"].endswith(".vtt")
    assert previews[1]["__type__"] == "update" and previews[1]["subtitles"].endswith("lipsync.vtt")
    chunks = [p for p in previews if isinstance(p, str)]
    assert len(chunks) >= 2 and all(c.endswith(".ts") for c in chunks)
    final_video = next(o[1] for o in out if isinstance(o[1], dict) and o[1].get("value"))
    assert final_video["value"].endswith(".mp4") and final_video["subtitles"].endswith(".vtt")
    assert Path(final_video["value"]).is_file()
    assert out[-1][2].endswith(".zip") and "HLS renditions" in out[-1][4]
    # the last chunk was yielded before the MP4 was shown: the preview came first
    assert max(i for i, o in enumerate(out) if isinstance(o[0], str)) < next(
        i for i, o in enumerate(out) if isinstance(o[1], dict) and o[1].get("value")
    )


def test_live_handler_cancel_leaves_nothing(engine, own_tempdir):
    import threading

    import gradio as gr

    import app
    from conftest import temp_entries

    before = temp_entries()
    request = type("Req", (), {"session_hash": "test-session"})()
    gen = app.make_generate_live(engine)(str(EXAMPLE), "Hello there, astronaut. " * 6, "espeak:en-us",
                                         consent=True, frame_step=2, request=request)  # fmt: skip
    got = []
    with pytest.raises(gr.Error, match="Cancelled"):
        for o in gen:
            got.append(o)
            if isinstance(o[0], str):  # the first segment: press Cancel (as the button does, from another thread)
                answer = {}
                t = threading.Thread(target=lambda: answer.update(msg=app.cancel_generation(request)))
                t.start()
    t.join(timeout=60)
    assert "Cancelled" in answer["msg"]
    assert temp_entries() == before
    assert app.cancel_generation(request) == "Nothing is being generated."


def test_page_has_the_helpers(engine):
    """Length up to the library's limit, a streaming autoplaying preview, Cancel, face and voice previews."""
    import app
    from lipsync import GenerateOptions

    demo = app.build_demo(engine)
    config = demo.config
    by_id = {c.get("props", {}).get("elem_id"): c for c in config["components"]}
    assert by_id["length"]["props"]["maximum"] == GenerateOptions().max_audio_s == 120
    preview = by_id["preview"]["props"]
    assert preview["streaming"] is True and preview["autoplay"] is True
    for elem in ("cancel", "faces", "face-choice", "voice-sample-button", "voice-sample", "model-status",
                 "captions-file", "burn-captions"):  # fmt: skip
        assert elem in by_id, elem


def test_face_preview_numbers_faces_and_one_click_picks_one(engine, tmp_path):
    """Two faces side by side: both boxed and numbered (largest first); choosing face 1 sets face_index."""
    from PIL import Image

    import app
    from lipsync.face.preview import draw_faces, face_at, list_faces
    from lipsync.media.images import load_image

    import cv2

    portrait = load_image(EXAMPLE)  # 512 x 512
    small = np.full_like(portrait, 255)
    small[64:448, 64:448] = cv2.resize(portrait, (384, 384), interpolation=cv2.INTER_AREA)
    pair = np.concatenate([small, portrait], axis=1)  # the larger face on the right: it is face 0
    path = tmp_path / "two.png"
    Image.fromarray(pair).save(path)
    rgb, boxes = app._faces(str(path), 0, 10, 0, 0, 0, engine)
    assert len([b for b in boxes if b]) == len(boxes) == 2
    assert boxes[0].x1 >= 512 > boxes[1].x2  # numbered largest first
    assert boxes == list_faces(rgb, engine.detector, pads=(0, 10, 0, 0))
    # numbering is the pipeline's: face_index k is the box find_face gives for k
    from lipsync.face import find_face

    for k, b in enumerate(boxes):
        assert find_face(rgb, engine.detector, face_index=k, pads=(0, 10, 0, 0)) == b
    picture, radio, note = app._face_view({"rgb": rgb, "boxes": boxes}, 1)
    assert picture.shape == rgb.shape and not np.array_equal(picture, rgb)
    assert radio.value == 1 and [c[1] for c in radio.choices] == list(range(len(boxes)))
    assert "Face 1" in note
    chosen = draw_faces(rgb, boxes, 1)
    b = boxes[1]
    assert tuple(chosen[b.y1 + 5, b.x1]) == (46, 204, 64)  # the chosen face's box is green
    assert face_at(boxes, (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2) == 1
    assert face_at(boxes, 1, 1) is None


def test_voice_sample_is_a_short_wav():
    import app
    from lipsync.media.audio import load_audio

    path = app.voice_sample("espeak:en-us")
    samples, rate = load_audio(path, sample_rate=None)
    assert 1.0 < len(samples) / rate < 8.0
    assert app.voice_sample("espeak:en-us") == path  # made once per voice


def test_model_status_follows_the_background_load(monkeypatch, checkpoint):
    import app
    from lipsync import LipSync
    from lipsync.face import HaarDetector

    monkeypatch.setattr(app, "_engine", LipSync(checkpoint, device="cpu", detector=HaarDetector()))
    app.start_model_loading().join(timeout=120)
    assert "Model ready" in app.model_status()
    monkeypatch.setattr(app, "_engine", LipSync(Path("/nonexistent/wav2lip.pth"), device="cpu"))
    app.start_model_loading().join(timeout=120)
    assert "could not be loaded" in app.model_status() and "wav2lip.pth" in app.model_status()
