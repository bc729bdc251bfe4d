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
        )
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
    """One app for the module: (url, log path, pid, its TMPDIR). Its queue holds 2 requests, so that the
    load test at the end can fill it (one server start and stop fewer: each costs 10-20 s)."""
    tmp = tmp_path_factory.mktemp("app")
    info: dict = {}
    with running_app(checkpoint, tmp, env_extra={"LIPSYNC_QUEUE_SIZE": "2"}, info=info) as (url, log_path):
        yield url, log_path, info["pid"], tmp
    # stopped with SIGTERM, the app removes its request folders (its TMPDIR is tmp)
    assert not list(tmp.glob("lipsync-app-*")), "request folders left behind"
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text
    # and its routes closed (the Live tab's sessions and spools), although a client's page was still open
    assert "stopped: the routes are closed" in text, text[-2000:]


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


@pytest.mark.slow
def test_app_takes_a_video_instead_of_the_photo(client, tmp_path):
    """A driving video in place of the photo, through the same running app (test_video.py tests the rest)."""
    from gradio_client import handle_file

    from videos import SIZE, pan_frames, write_video

    clip = write_video(tmp_path / "pan.mp4", pan_frames(25))
    video, zip_file, summary, captions = _call(client, image=None, text="Hello there.", video=handle_file(str(clip)),
                                               motion=0)
    info = ffprobe(_video_path(video))
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (v["width"], v["height"]) == (SIZE, SIZE)  # the video's frames, not the example photo's
    assert "video" in summary.lower()


def test_api_exposes_generate_with_named_parameters(client):
    info = client.view_api(print_info=False, return_format="dict")
    endpoint = info["named_endpoints"]["/generate"]
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    assert names[:7] == ["image", "text", "voice", "length_s", "loop", "audio", "consent"]
    assert names[-3:] == ["motion", "enhance", "blink"]
    enhance = endpoint["parameters"][names.index("enhance")]
    assert enhance["parameter_default"] == "auto"  # face on a GPU with the restorer's weights, else fast
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


def _api(handler, *args, **kwargs):
    """Call the /generate handler (a coroutine function: Gradio's cancel reaches it) as Gradio would."""
    import asyncio

    return asyncio.run(handler(*args, **kwargs))


def test_missing_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    import gradio as gr

    from lipsync import LipSync
    from lipsync.webapp import make_generate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    handler = make_generate(LipSync(tmp_path / "missing.pth", device="cpu"))
    with pytest.raises(gr.Error) as e:
        _api(handler, str(EXAMPLE), SHORT_TEXT, "espeak:en-us", consent=True)
    assert "missing.pth" in e.value.message
    assert "LIPSYNC_CHECKPOINT" in e.value.message and "--checkpoint" in e.value.message
    assert str(tmp_path) not in e.value.message  # the file's name, not where it is on the server


def test_unexpected_errors_are_generic_and_logged(caplog):
    import gradio as gr

    from lipsync.webapp import GENERIC_ERROR, make_generate

    class Broken:
        def run(self, *a, **k):
            raise RuntimeError("internal detail 0xdeadbeef")

    handler = make_generate(Broken())
    with caplog.at_level("ERROR", logger="lipsync.app"), pytest.raises(gr.Error) as e:
        _api(handler, str(EXAMPLE), SHORT_TEXT, "espeak:en-us", consent=True)
    assert e.value.message == GENERIC_ERROR
    assert "deadbeef" not in e.value.message
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "deadbeef" in str(logged[-1].exc_info[1])  # the server log keeps the detail


def test_a_cancelled_api_request_stops_its_run_before_it_returns(engine, own_tempdir):
    """Gradio cancels a script's request (``job.cancel()``) by cancelling the handler's task: the run
    stops at its next check, and the handler returns only once it has (it never runs on beside the next)."""
    import asyncio
    import threading

    from conftest import temp_entries
    from lipsync.webapp import make_generate

    started, ended = threading.Event(), threading.Event()

    class Watched:
        def run(self, request, progress=None, *, cancel=None, **k):
            def report(stage, done, total):
                if stage == "lipsync":
                    started.set()
                progress(stage, done, total)

            try:
                return engine.run(request, report, cancel=cancel)
            finally:
                ended.set()

    before = temp_entries()

    async def main():
        task = asyncio.create_task(
            make_generate(Watched())(str(EXAMPLE), "Hello there, astronaut. " * 4, "espeak:en-us", consent=True,
                                     frame_step=2, max_side=480)
        )
        while not started.is_set():
            assert not task.done(), task
            await asyncio.sleep(0.02)
        t = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended.is_set()
        print(f"cancel to stopped: {time.perf_counter() - t:.1f} s; load {os.getloadavg()}")

    asyncio.run(main())
    assert temp_entries() == before


FFMPEG_STDERR = "[mp4 @ 0x55d5c0] /tmp/lipsync-app-x1y2/lipsync.part.mp4: No space left on device"


def test_encoder_failure_is_plain_on_the_page_and_detailed_in_the_log(caplog):
    """An EncodeError carries ffmpeg's stderr (with a server path): the page gets plain words, the log the rest."""
    import gradio as gr

    from lipsync.errors import EncodeError
    from lipsync.webapp import make_generate, make_generate_live

    class Broken:
        def run(self, *a, **k):
            raise EncodeError(f"ffmpeg failed (exit 1): {FFMPEG_STDERR}")

        def stream(self, *a, **k):
            raise EncodeError(f"ffmpeg failed (exit 1): {FFMPEG_STDERR}")

    api = make_generate(Broken())
    for handler in (lambda *a, **k: _api(api, *a, **k), lambda *a, **k: list(make_generate_live(Broken())(*a, **k))):
        caplog.clear()
        with caplog.at_level("INFO", logger="lipsync.app"), pytest.raises(gr.Error) as e:
            handler(str(EXAMPLE), SHORT_TEXT, "espeak:en-us", consent=True)
        msg = e.value.message
        assert msg == ("The video could not be encoded on the server, and the details have been logged. "
                       "Please try again; if it keeps happening, try a shorter text or a smaller output size.")
        assert "/tmp" not in msg and "ffmpeg" not in msg
        assert any(FFMPEG_STDERR in r.getMessage() for r in caplog.records)


def test_messages_hide_server_paths_but_keep_file_names():
    from lipsync.errors import ImageError, WeightsError
    from lipsync.webapp.messages import plain_message

    msg = plain_message(ImageError("Could not read /tmp/gradio/ab12/holiday photo.png: not an image."))
    assert msg == "Could not read holiday photo.png: not an image."
    msg = plain_message(WeightsError("No checkpoint at /srv/models/wav2lip.pth; see https://huggingface.co/a/b."))
    assert msg == "No checkpoint at wav2lip.pth; see https://huggingface.co/a/b."
    assert plain_message(ImageError("mouth max 6.4/255")) == "mouth max 6.4/255"


def test_unavailable_voices_are_listed_not_hidden(monkeypatch):
    from lipsync.speech import tts
    from lipsync.webapp import voice_choices

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    choices, default = voice_choices()
    ids = [v for _, v in choices]
    assert {v.id for v in tts.list_voices()} == set(ids)
    assert "espeak:en-us" in ids and default in ids
    unavailable = [label for label, v in choices if not tts.get_voice(v).available]
    assert unavailable and all("unavailable:" in label for label in unavailable)


def _dependencies(demo):
    """The page's events, with their inputs and outputs as elem_ids (or component ids)."""
    config = demo.config
    names = {c["id"]: c.get("props", {}).get("elem_id") or c["id"] for c in config["components"]}
    return [
        {**d, "in": [names[i] for i in d["inputs"]], "out": [names[i] for i in d["outputs"]]}
        for d in config["dependencies"]
    ]


def test_page_has_a_generate_tab_and_takes_more_tabs(engine):
    """A "Generate" tab, and further tabs built by the given callables, inside the same gr.Tabs."""
    import gradio as gr

    from lipsync.webapp import build_demo

    built = []

    def live_tab():
        built.append(True)
        gr.Markdown("live here", elem_id="live-marker")

    demo = build_demo(engine, extra_tabs=[("Live", live_tab)])
    tabs = [c for c in demo.config["components"] if c["type"] == "tabitem"]
    assert [t["props"]["label"] for t in tabs] == ["Generate", "Live"]
    assert built == [True]
    assert "live-marker" in {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    plain = build_demo(engine)
    assert [c["props"]["label"] for c in plain.config["components"] if c["type"] == "tabitem"] == ["Generate"]


def test_both_handlers_take_the_form_fields_once(engine):
    """The page's Generate and the /generate API read the same widgets, in FIELDS' order, and show
    one progress bar (on the summary), not one per output."""
    import inspect

    from lipsync.webapp import FIELDS, build_demo, make_generate, make_generate_live

    names = [f.name for f in FIELDS]
    assert names[:7] == ["image", "text", "voice", "length_s", "loop", "audio", "consent"]
    assert list(inspect.signature(make_generate(engine)).parameters) == [*names, "progress"]
    assert list(inspect.signature(make_generate_live(engine)).parameters) == [*names, "request", "progress"]
    deps = _dependencies(build_demo(engine))
    live = next(d for d in deps if d["out"][:1] == ["preview"])
    api = next(d for d in deps if d["api_name"] == "generate")
    elem = {"image": "portrait", "length_s": "length", "frame_step": "speed", "video": "video-source",
            "face_index": "face-index", "burn_captions": "burn-captions", "max_side": "max-side"}
    for n in ("text", "voice", "loop", "audio", "consent", "fps", "motion", "enhance", "blink"):
        elem.setdefault(n, n)
    expected = [elem.get(n) for n in names]
    assert [x if isinstance(x, str) else None for x in live["in"]] == expected
    assert live["in"] == api["in"]
    assert live["out"] == ["preview", "video", "hls-zip", "captions-file", "summary"]
    for d in (live, api):
        assert [deps_id for deps_id in d["show_progress_on"]] and len(d["show_progress_on"]) == 1


def test_launch_installs_routes_before_serving(engine):
    """`launch(demo, routes=[install])` calls install(fastapi_app, get_engine) before the first request."""
    from fastapi.responses import PlainTextResponse

    from lipsync.webapp import build_demo, get_engine, launch

    calls = []

    def install(app, get_engine_):
        calls.append(get_engine_)
        app.add_api_route("/live-test/ping", lambda: PlainTextResponse("pong"), methods=["GET"])

    demo = build_demo(engine)
    port = free_port()
    launch(demo, routes=[install], server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        assert calls == [get_engine]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/live-test/ping", timeout=10) as r:
            assert r.read() == b"pong"
    finally:
        demo.close()


def test_build_demo_and_library_stays_free_of_gradio():
    import gradio as gr

    from lipsync.webapp import build_demo

    demo = build_demo()
    assert isinstance(demo, gr.Blocks)
    assert [d["api_name"] for d in demo.config["dependencies"] if d.get("api_visibility") == "public"] == ["generate"]
    code = "import sys, lipsync, lipsync.speech.tts, lipsync.media.hls, lipsync.pipeline, lipsync.cli; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_app_py_is_a_thin_entry():
    text = (ROOT / "app.py").read_text()
    assert len(text.splitlines()) < 40 and "from lipsync.webapp import main" in text


def test_video_is_kept_when_hls_packaging_fails(engine, monkeypatch):
    import lipsync.media.hls
    from lipsync.errors import EncodeError
    from lipsync.webapp import make_generate

    def broken(*a, **k):
        raise EncodeError(f"ffmpeg failed (exit 1): {FFMPEG_STDERR}")

    monkeypatch.setattr(lipsync.media.hls, "package_hls", broken)
    video, zip_file, summary, captions = _api(make_generate(engine), str(EXAMPLE), SHORT_TEXT, "espeak:en-us",
                                              consent=True)
    assert Path(video).is_file() and zip_file is None and Path(captions).is_file()
    assert "No HLS package:** The video could not be encoded on the server" in summary
    assert "/tmp" not in summary and "No space" not in summary


# ----------------------------------------------------------------------------- hostile images via the API


def _corpus_names():
    """The corpus, with three of the eight EXIF orientations: test_images.py checks all eight at the
    loader (the face comes out upright); through the API, one plain, one rotated and one transposed."""
    from bad_inputs import CORPUS

    return sorted(n for n in CORPUS if not n.startswith("exif_") or n in ("exif_1", "exif_5", "exif_6"))


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
    face detection, encoding and HLS packaging run outside it, and the engine is the process's one.
    What goes to the GPU worker is pickled on the way (as ZeroGPU does), and the worker runs the
    unpickled call."""
    import importlib
    import pickle
    import types

    import lipsync.media.encode as encode
    import lipsync.media.hls as hls
    import lipsync.pipeline.prepare as pipeline
    import lipsync.webapp.handlers as handlers
    import lipsync.webapp.state as state
    from lipsync.speech import tts

    gpu = {"on": False, "calls": 0, "sent": 0}
    seen: dict[str, list[bool]] = {}

    def GPU(duration=None):  # noqa: N802 - the real decorator's name
        def wrap(fn):
            def inner(*a, **k):
                payload = pickle.dumps((fn, a, k))  # the worker gets the call through a pipe
                gpu["sent"] = len(payload)
                fn2, a2, k2 = pickle.loads(payload)
                gpu["on"] = True
                gpu["calls"] += 1
                try:
                    return fn2(*a2, **k2)
                finally:
                    gpu["on"] = False

            return inner

        return wrap

    def spy(owner, name, key):
        real = getattr(owner, name)

        def wrapper(*a, **k):
            seen.setdefault(key, []).append(gpu["on"])
            return real(*a, **k)

        monkeypatch.setattr(owner, name, wrapper)

    spy(tts, "narrate", "speech")
    spy(pipeline, "find_face", "face")
    spy(encode.VideoWriter, "write", "encode")
    spy(hls, "package_hls", "hls")
    spy(type(engine.generator), "predict", "network")
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    handlers = importlib.reload(handlers)
    try:
        state.set_engine(engine)
        video, zip_file, _, _ = _api(handlers.make_generate(), str(EXAMPLE), SHORT_TEXT, "espeak:en-us", consent=True)
        assert Path(video).is_file() and zip_file
        assert gpu["calls"] == 1 and gpu["sent"] > 10_000  # the prepared clip went through pickle
        assert seen["network"] == [True]
        for key in ("speech", "face", "encode", "hls"):
            assert seen[key] and not any(seen[key]), key
    finally:
        state.set_engine(None)
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(handlers)


# ----------------------------------------------------------------------------- the page's helpers, in-process


def test_live_handler_streams_segments_then_the_results(engine, tmp_path, monkeypatch):
    """The page's handler: first a cleared page, then the captions on the preview, then MPEG-TS
    segments while the video is made, then the MP4 with its captions, then the HLS zip.

    Each segment reaches the page's stream as its own bytes and length, without Gradio's
    per-segment ffprobe, audio re-encode and re-mux (0.5 s of CPU each on 2 cores); a .ts the
    handler did not announce still takes Gradio's way; nothing announced is left over."""
    import asyncio

    import gradio as gr

    from lipsync.webapp import jobs, make_generate_live
    from lipsync.webapp.page import PreviewVideo

    probed = []
    real_probe = gr.Video.probe_chunk
    monkeypatch.setattr(gr.Video, "probe_chunk", staticmethod(lambda path: probed.append(path) or real_probe(path)))
    video = PreviewVideo(streaming=True, autoplay=True)
    out, streamed = [], []
    for o in make_generate_live(engine)(str(EXAMPLE), "Hello there, astronaut. How are you today?",
                                        "espeak:en-us", consent=True, frame_step=2):
        out.append(o)
        if isinstance(o[0], str):  # what the page's video does with it, while the file is there
            want = Path(o[0]).read_bytes()
            chunk, file = asyncio.run(video.stream_output(o[0], "preview-1", not streamed))
            streamed.append(chunk)
            assert chunk["data"] == want and chunk["extension"] == ".ts" and file["is_stream"]
    assert len(streamed) >= 3 and not probed and not jobs.segment_seconds
    assert [c["duration"] for c in streamed[:-1]] == [1.0] * (len(streamed) - 1) and 0 < streamed[-1]["duration"] <= 1
    other = tmp_path / "x.ts"  # not announced: Gradio's own processing (probed)
    other.write_bytes(streamed[0]["data"])
    chunk, _ = asyncio.run(video.stream_output(str(other), "preview-2", True))
    assert probed == [str(other)] and chunk["duration"] == pytest.approx(1.0, abs=0.05)
    video.end_stream_output("preview-2")

    assert all(len(o) == 5 for o in out)
    previews = [o[0] for o in out]
    first = previews[0]
    assert first["__type__"] == "update" and first["value"] is None and first["subtitles"].endswith(".vtt")
    assert previews[1]["__type__"] == "update" and previews[1]["subtitles"].endswith("preview.vtt")
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
    # the preview's segments were served; the MP4 holds the same frames, so they are gone
    assert not Path(chunks[0]).parent.exists()


def test_live_handler_cancel_is_a_neutral_notice_and_leaves_nothing(engine, own_tempdir, monkeypatch):
    """Cancel is the user's choice: no error, a plain notice, and no file or job left behind."""
    import threading

    import gradio as gr

    from conftest import temp_entries
    from lipsync.webapp import cancel_generation, make_generate_live

    infos = []
    monkeypatch.setattr(gr, "Info", lambda message, *a, **k: infos.append(message))
    before = temp_entries()
    request = type("Req", (), {"session_hash": "test-session"})()
    gen = make_generate_live(engine)(str(EXAMPLE), "Hello there, astronaut. " * 6, "espeak:en-us",
                                     consent=True, frame_step=2, request=request)
    got, answer, t = [], {}, None
    for o in gen:  # no gr.Error: it ends normally
        got.append(o)
        if t is None and isinstance(o[0], str):  # the first segment: press Cancel (from another thread)
            t = threading.Thread(target=lambda: answer.update(msg=cancel_generation(request)))
            t.start()
    t.join(timeout=60)
    assert "Cancelled" in answer["msg"] and "Error" not in answer["msg"]
    assert infos == ["Cancelled. Nothing was saved."]
    last = got[-1]
    assert last[0]["value"] is None and last[1]["value"] is None and last[2] is None and last[3] is None
    assert last[4].startswith("**Cancelled.**")
    assert temp_entries() == before
    assert cancel_generation(request) == "Nothing is being generated."


def test_cancelled_job_keeps_its_files_while_gradio_reads_them(tmp_path):
    """A stopped job's folder goes only once no file in it is being served (the preview's segments)."""
    import threading

    from lipsync.webapp import jobs

    workdir = tmp_path / "job"
    (workdir / "preview").mkdir(parents=True)
    seg = workdir / "preview" / "seg_00001.ts"
    seg.write_bytes(b"x" * 188)
    job = jobs.start_job(type("Req", (), {"session_hash": "s-in-use"})(), workdir)
    release = threading.Event()
    holding = threading.Event()

    def gradio_reads():
        with jobs.in_use.hold(seg):
            holding.set()
            release.wait(30)
            assert seg.read_bytes() == b"x" * 188

    reader = threading.Thread(target=gradio_reads)
    reader.start()
    holding.wait(10)
    ender = threading.Thread(target=job.end, args=(False,))
    ender.start()
    assert not job.finished.wait(0.5) and seg.is_file()  # still served: kept
    release.set()
    reader.join(10)
    assert job.finished.wait(10) and not workdir.exists()
    ender.join(10)


def test_page_has_the_helpers(engine):
    """Length up to the library's limit, a streaming autoplaying preview, Cancel, face and voice previews."""
    from lipsync import GenerateOptions
    from lipsync.webapp import build_demo

    demo = build_demo(engine)
    config = demo.config
    by_id = {c.get("props", {}).get("elem_id"): c for c in config["components"]}
    assert by_id["length"]["props"]["maximum"] == GenerateOptions().max_audio_s == 120
    preview = by_id["preview"]["props"]
    assert preview["streaming"] is True and preview["autoplay"] is True
    assert by_id["preview"]["type"] == "video"  # the subclass is served by Gradio's own video component
    for elem in ("cancel", "faces", "face-choice", "voice-sample-button", "voice-sample", "model-status",
                 "captions-file", "burn-captions"):
        assert elem in by_id, elem
    cancel = next(d for d in _dependencies(demo) if by_id["cancel"]["id"] in [t[0] for t in d["targets"]])
    assert cancel["cancels"] == []  # stopped by its job, not by Gradio (which marks the outputs as errors)


def test_face_preview_numbers_faces_and_one_click_picks_one(engine, tmp_path):
    """Two faces side by side: both boxed and numbered (largest first); choosing face 1 sets face_index."""
    from PIL import Image

    from lipsync.face.preview import draw_faces, face_at, list_faces
    from lipsync.media.images import load_image
    from lipsync.webapp.page import face_view, faces

    import cv2

    portrait = load_image(EXAMPLE)  # 512 x 512
    small = np.full_like(portrait, 255)
    small[64:448, 64:448] = cv2.resize(portrait, (384, 384), interpolation=cv2.INTER_AREA)
    pair = np.concatenate([small, portrait], axis=1)  # the larger face on the right: it is face 0
    path = tmp_path / "two.png"
    Image.fromarray(pair).save(path)
    rgb, boxes = faces(str(path), 0, 10, 0, 0, 0, engine)
    assert len([b for b in boxes if b]) == len(boxes) == 2
    assert boxes[0].x1 >= 512 > boxes[1].x2  # numbered largest first
    assert boxes == list_faces(rgb, engine.detector, pads=(0, 10, 0, 0))
    # numbering is the pipeline's: face_index k is the box find_face gives for k
    from lipsync.face import find_face

    for k, b in enumerate(boxes):
        assert find_face(rgb, engine.detector, face_index=k, pads=(0, 10, 0, 0)) == b
    picture, radio, note = face_view({"rgb": rgb, "boxes": boxes}, 1)
    assert picture.shape == rgb.shape and not np.array_equal(picture, rgb)
    assert radio.value == 1 and [c[1] for c in radio.choices] == list(range(len(boxes)))
    assert "Face 1" in note
    chosen = draw_faces(rgb, boxes, 1)
    b, other = boxes[1], boxes[0]
    assert tuple(chosen[b.y1 + 5, b.x1]) == (46, 204, 64)  # the chosen face's box is green
    assert tuple(chosen[other.y1 + 5, other.x1]) == (255, 220, 0)  # the other one yellow
    assert face_at(boxes, (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2) == 1
    assert face_at(boxes, 1, 1) is None


def test_voice_sample_is_a_short_wav():
    from lipsync.media.audio import load_audio
    from lipsync.webapp import voice_sample

    path = voice_sample("espeak:en-us")
    samples, rate = load_audio(path, sample_rate=None)
    assert 1.0 < len(samples) / rate < 8.0
    assert voice_sample("espeak:en-us") == path  # made once per voice


def test_a_slow_voice_sample_does_not_block_generate(engine, monkeypatch):
    """A voice sample that takes long (a voice being downloaded) holds only its own lock: a
    Generate meanwhile starts at once, and so does another voice's sample."""
    import threading

    import lipsync
    from lipsync.webapp import make_generate_live, voice_sample

    real = lipsync.synthesize
    entered, release = threading.Event(), threading.Event()

    def slow(text, voice_id=None, **k):
        if voice_id == "espeak:en-gb":
            entered.set()
            release.wait(30)
        return real(text, voice_id, **k)

    monkeypatch.setattr(lipsync, "synthesize", slow)
    sampler = threading.Thread(target=lambda: voice_sample("espeak:en-gb"))
    sampler.start()
    try:
        assert entered.wait(30)
        first = {}
        gen = make_generate_live(engine)(str(EXAMPLE), SHORT_TEXT, "espeak:en-us", consent=True, frame_step=2)
        t = threading.Thread(target=lambda: first.update(out=next(gen)))
        t.start()
        t.join(5)
        assert "out" in first, "Generate waited for another voice's sample"
        gen.close()
        other = {}
        t = threading.Thread(target=lambda: other.update(path=voice_sample("espeak:en-us")))
        t.start()
        t.join(20)
        assert other.get("path"), "a sample waited for another voice's sample"
    finally:
        release.set()
        sampler.join(30)


def test_model_status_is_plain_and_follows_the_background_load(monkeypatch, checkpoint, caplog):
    """"Ready: fast CPU mode" (no OpenVINO check figures); a failure in plain words, the details logged."""
    import types

    import torch

    from lipsync import LipSync
    from lipsync.face import HaarDetector
    from lipsync.webapp import model_status, set_engine, start_model_loading
    from lipsync.webapp.state import plain_mode

    cpu, cuda = torch.device("cpu"), types.SimpleNamespace(type="cuda")
    assert plain_mode(types.SimpleNamespace(device=cpu, precision="int8")) == "fast CPU mode"
    assert plain_mode(types.SimpleNamespace(device=cpu, precision="fp32")) == "CPU mode"
    assert plain_mode(types.SimpleNamespace(device=cuda, precision="fp16")) == "GPU"
    try:
        engine = LipSync(checkpoint, device="cpu", detector=HaarDetector())
        set_engine(engine)
        start_model_loading().join(timeout=120)
        assert model_status() == f"✅ **Ready:** {plain_mode(engine.generator)}"
        assert "OpenVINO" not in model_status() and "/255" not in model_status()

        class Exploding(LipSync):
            def load(self):
                raise RuntimeError("internal detail at /srv/secret/cache.bin")

        set_engine(Exploding(checkpoint, device="cpu"))
        with caplog.at_level("ERROR", logger="lipsync.app"):
            start_model_loading().join(timeout=120)
        status = model_status()
        assert status.startswith("⚠️ **The model could not be loaded.**")
        assert "RuntimeError" not in status and "/srv" not in status and "secret" not in status
        assert any("secret" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
        set_engine(LipSync(Path("/nonexistent/wav2lip.pth"), device="cpu"))
        start_model_loading().join(timeout=120)
        status = model_status()
        assert "could not be loaded" in status and "wav2lip.pth" in status and "/nonexistent" not in status
    finally:
        set_engine(None)


# -- the running app under load, then a short soak (last: they leave the module's server busy) --------
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.mark.slow
def test_concurrent_requests_with_a_small_queue(server):
    """Many concurrent API requests against the queue of 2: each succeeds or is turned away quickly,
    nothing errors, and the server's resources return to where they started."""
    from load_test import run_load

    url, log, pid, tmp = server
    report = run_load(url, requests=8, concurrency=8, server_pid=pid, tmpdir=tmp, timeout=240)
    print(report)
    assert report["counts"]["error"] == 0 and report["counts"]["bad-result"] == 0, report
    assert report["counts"]["ok"] >= 1, report
    assert report["counts"]["queue-full"] >= 1, report  # the small queue really filled up
    assert report["slowest_rejection_s"] < 30, report  # turned away quickly, not after waiting its turn
    assert {"open_files", "children"} <= set(report["server_before"]), report
    for key, before in report["server_before"].items():
        assert report["server_after"][key] <= before, report
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and " 500 " not in text


def test_fourteen_requests_leave_the_server_as_they_found_it(server):
    """A short soak (scripts/soak.py; the full run is ``scripts/soak.py --requests 200`` against a running
    app): text, audio and video requests, one cancelled mid-run, bad inputs with clear messages; after the
    warm-up RSS grows <= 5 %, and file descriptors, threads, children and folders stay flat."""
    import soak

    url, log_path, pid, tmp = server
    t = time.perf_counter()
    report = soak.run_soak(url, pid, tmp, requests=14, warmup=8, base={"max_side": 480, "frame_step": 2})
    print(f"\nsoak: {time.perf_counter() - t:.0f} s, RSS {report['after_warmup']['rss_mb']:.0f} -> "
          f"{report['end']['rss_mb']:.0f} MB ({report['rss_growth']:+.1%})")
    assert not report["failed"], report["failed"]
    assert report["passed"], report["checks"]
    assert "Traceback" not in log_path.read_text(errors="replace")
