"""The web app: a portrait and a few lines of text -> a talking, lip-synced video.

Gradio Blocks only: widgets are turned into :class:`lipsync.GenerateOptions`
and handed to :class:`lipsync.LipSync`; every piece of media work lives in the
library. Run it with::

    python app.py [--host 0.0.0.0] [--port 7860] [--share]

The same file runs unchanged as a Hugging Face Space (ZeroGPU included). The
model weights are fetched on the first request (or taken from
``$LIPSYNC_CHECKPOINT``), so the page comes up even on a machine without them
and the first Generate explains what is missing.

The page streams a live preview while the video is made (``gr.Video(streaming=True)``
fed with the library's MPEG-TS segments), then offers the MP4, the HLS zip and the
captions. Scripts get a plain, non-streaming endpoint (``api_name="generate"``) that
returns the MP4, the zip, a summary and the captions file::

    from gradio_client import Client, handle_file
    video, hls_zip, summary, captions = Client("http://127.0.0.1:7860/").predict(
        image=handle_file("me.jpg"), text="Hello!", voice="espeak:en-us",
        consent=True, api_name="/generate")
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from pathlib import Path

import gradio as gr

from lipsync import Cancelled, GenerateOptions, LipSync, LipSyncError, Request
from lipsync.media.captions import write_vtt
from lipsync.options import DEFAULT_MOTION

try:  # Hugging Face ZeroGPU: a GPU is attached only while a decorated function runs
    import spaces  # type: ignore[import-not-found]
except ImportError:  # everywhere else the decorator is not needed
    spaces = None

__all__ = ["build_demo", "generate", "main", "make_generate", "make_generate_live"]

log = logging.getLogger("lipsync.app")

ROOT = Path(__file__).resolve().parent
EXAMPLE_IMAGE = ROOT / "assets" / "astronaut.jpg"
EXAMPLE_TEXT = (
    "Hello from orbit! The view up here is breathtaking, "
    "and every ninety minutes we watch the sun rise again."
)
from lipsync.options import MAX_CHARS  # the one home of the limit
#: the slider goes as far as the library allows
MAX_LENGTH_S = int(GenerateOptions().max_audio_s)
VOICE_SAMPLE_TEXT = "Hello! This is how I sound. Type your own words and press Generate."
#: keep a finished request's folder this long (Gradio copies the files into its cache meanwhile)
KEEP_OUTPUTS_S = 600
#: a stopped generation's files are removed this long after, once Gradio has finished with its last segment
CLEAN_UP_DELAY_S = 2.0
#: ZeroGPU: the longest a request may hold the GPU
GPU_SECONDS = 120

#: the library's progress stages, in order: (label shown to the user, share of the bar)
STAGES: dict[str, tuple[str, float]] = {
    "model": ("Loading the lip-sync model", 0.04),
    "image": ("Reading the photo", 0.02),
    "video": ("Checking the video", 0.02),
    "audio": ("Reading the audio", 0.02),
    "speech": ("Synthesising the speech", 0.08),
    "face": ("Finding the face", 0.04),
    "mel": ("Analysing the speech", 0.02),
    "lipsync": ("Animating the lips (the preview plays meanwhile)", 0.62),
    "encode": ("Encoding the MP4", 0.04),
    "hls": ("Packaging for streaming (HLS)", 0.12),
}
STAGE_NAMES = {
    "model": "model", "image": "photo", "video": "video", "audio": "audio", "speech": "speech", "face": "face",
    "mel": "mel", "lipsync": "lip-sync", "encode": "encode", "hls": "HLS",
}  # fmt: skip

GENERIC_ERROR = (
    "Something went wrong on our side while making the video, and it has been logged. "
    "Please try again; if it keeps happening, try another photo or a shorter text."
)
CONSENT_LABEL = (
    "I have the right to use this person's likeness (it is me, or I have their permission), "
    "and I will not use the video to deceive anyone."
)


# ----------------------------------------------------------------------------- the engine

_engine: LipSync | None = None
_engine_lock = threading.Lock()
#: how the engine is made: set from the command line (``--checkpoint``, ``--device``, ``--precision``)
ENGINE_CONFIG: dict[str, str | None] = {"checkpoint": None, "device": None, "precision": None}


def get_engine() -> LipSync:
    """The one engine of this process, made on first use (it loads weights lazily too).

    The checkpoint is ``--checkpoint``, else ``$LIPSYNC_CHECKPOINT``, else the Hub;
    the device is ``--device``, else ``$LIPSYNC_DEVICE``, else ``auto``; the precision
    ``--precision``, else ``$LIPSYNC_PRECISION``, else ``auto`` (on a CPU: int8 where
    it is installed and passes its check for the checkpoint).
    """
    global _engine
    with _engine_lock:
        if _engine is None:
            device = ENGINE_CONFIG.get("device") or os.environ.get("LIPSYNC_DEVICE") or "auto"
            precision = ENGINE_CONFIG.get("precision") or os.environ.get("LIPSYNC_PRECISION") or "auto"
            _engine = LipSync(ENGINE_CONFIG.get("checkpoint"), device=device, precision=precision)
        return _engine


#: the model's state, shown on the page: loading starts in the background when the app starts
_model_state: dict[str, str] = {"state": "idle", "detail": ""}
_model_lock = threading.Lock()


def start_model_loading() -> threading.Thread:
    """Load the model and the face detector on a background thread, so the first Generate does not wait."""

    def load() -> None:
        with _model_lock:
            _model_state.update(state="loading", detail="")
        t0 = time.perf_counter()
        try:
            engine = get_engine().load()
            detail = f"{engine.generator.description}, face detector {engine.detector.name}"
            with _model_lock:
                _model_state.update(state="ready", detail=f"{detail}; loaded in {time.perf_counter() - t0:.1f} s")
        except LipSyncError as e:
            with _model_lock:
                _model_state.update(state="error", detail=str(e))
            log.warning("model not loaded at start-up: %s", e)
        except Exception as e:  # noqa: BLE001 - shown on the page; Generate tries again
            with _model_lock:
                _model_state.update(state="error", detail=f"{type(e).__name__}: {e}")
            log.exception("model loading failed")

    thread = threading.Thread(target=load, name="lipsync-load", daemon=True)
    thread.start()
    return thread


def model_status() -> str:
    """One line for the page: is the model loading, ready, or missing (and why)."""
    with _model_lock:
        state, detail = _model_state["state"], _model_state["detail"]
    if state == "ready":
        return f"✅ **Model ready** ({detail})"
    if state == "loading":
        return "⏳ **Loading the lip-sync model…** You can prepare your photo and text meanwhile."
    if state == "error":
        return f"⚠️ **The model could not be loaded:** {detail}"
    return "The model loads on the first Generate."


def _poll_model_status():
    """For the page's timer: the status, and stop polling once the loading has ended."""
    with _model_lock:
        waiting = _model_state["state"] == "loading"
    return model_status(), gr.Timer(active=waiting)


# ----------------------------------------------------------------------------- voices


def _tts():
    """The voice catalogue module, or None while it is not installed."""
    try:
        from lipsync.speech import tts
    except ImportError as e:  # pragma: no cover - only while tts.py is missing
        log.warning("no voice catalogue: %s", e)
        return None
    return tts


def voice_choices() -> tuple[list[tuple[str, str]], str | None]:
    """Dropdown choices (label, id), unavailable voices included and marked, and the default id."""
    tts = _tts()
    if tts is None:
        return [], None
    try:
        voices = list(tts.list_voices())
    except Exception:  # noqa: BLE001 - the page must come up; Generate will explain
        log.exception("listing the voices failed")
        return [], None
    choices = []
    voices.sort(key=lambda v: not v.available)  # usable voices first, the others still listed
    for v in voices:
        if not v.available:
            label = f"{v.label} (unavailable: {_short(v.reason or 'not installed')})"
        elif getattr(v, "note", None):
            label = f"{v.label} (downloaded on first use)"
        else:
            label = v.label
        choices.append((label, v.id))
    default = None
    try:
        d = tts.default_voice()
        default = d.id if d is not None else None
    except Exception:  # noqa: BLE001
        log.exception("no default voice")
    if default is None:
        default = next((v.id for v in voices if v.available), voices[0].id if voices else None)
    return choices, default


def _short(reason: str, limit: int = 90) -> str:
    """A reason short enough for a dropdown entry (the full one is shown on Generate)."""
    reason = " ".join(reason.split())
    if len(reason) <= limit:
        return reason
    return reason[:limit].rsplit(" ", 1)[0].rstrip(",;:(") + "…"


def voice_info(voice_id: str | None) -> str:
    """One line under the dropdown about the chosen voice: why it cannot run, or a note."""
    tts = _tts()
    if not voice_id or tts is None:
        return ""
    try:
        v = tts.get_voice(voice_id)
    except LipSyncError as e:
        return f"⚠️ {e}"
    if not v.available:
        return f"⚠️ This voice cannot be used here: {v.reason}. Pick another one."
    return f"ℹ️ {v.note}" if getattr(v, "note", None) else ""


def refresh_voices(current: str | None = None):
    """The voice list as it is now (a model downloaded or a network lost since start-up): for page loads."""
    choices, default = voice_choices()
    ids = [v for _, v in choices]
    value = current if current in ids else default
    return gr.Dropdown(choices=choices, value=value), voice_info(value)


_samples_dir: Path | None = None
_samples_lock = threading.Lock()


def _process_dir() -> Path:
    """A folder for this process's small files (voice samples, the empty captions file), removed at exit."""
    global _samples_dir
    with _samples_lock:
        if _samples_dir is None:
            _samples_dir = Path(tempfile.mkdtemp(prefix="lipsync-app-files-"))
        return _samples_dir


def _no_captions() -> str:
    """An empty WebVTT file.

    Gradio keeps a video component's ``subtitles`` in the session and checks the
    file again on every later update of that component; an update with
    ``subtitles=None`` leaves the old value in place. So every update names a
    file that exists: this one when there are no captions (yet).
    """
    path = _process_dir() / "no-captions.vtt"
    if not path.is_file():
        tmp = path.with_suffix(".part")
        tmp.write_text("WEBVTT\n", "utf-8")
        os.replace(tmp, path)
    return str(path)


def voice_sample(voice_id: str | None) -> str:
    """A short sample of the voice, as a wav file (made once per voice and kept for the process)."""
    from lipsync import synthesize
    from lipsync.media.encode import write_wav

    if not voice_id:
        raise gr.Error("Pick a voice first.", print_exception=False)
    folder = _process_dir()
    with _samples_lock:
        path = folder / ("voice-" + voice_id.replace(":", "_").replace("/", "_").replace("+", "_") + ".wav")
        if path.is_file():
            return str(path)
        try:
            speech = synthesize(VOICE_SAMPLE_TEXT, voice_id)
        except LipSyncError as e:
            raise gr.Error(str(e), print_exception=False) from None
        tmp = path.with_suffix(".part.wav")
        write_wav(tmp, speech.samples, speech.sample_rate)
        os.replace(tmp, path)
        return str(path)


def _voice_label(voice_id: str | None) -> str:
    tts = _tts()
    if not voice_id or tts is None:
        return voice_id or "-"
    try:
        return tts.get_voice(voice_id).label
    except Exception:  # noqa: BLE001
        return voice_id


# ----------------------------------------------------------------------------- request folders

_workdirs: list[tuple[float, Path]] = []
_workdirs_lock = threading.Lock()


def _new_workdir() -> Path:
    """A fresh folder for one request; folders of finished requests are removed after a while."""
    now = time.monotonic()
    with _workdirs_lock:
        keep = []
        for t, d in _workdirs:
            if now - t > KEEP_OUTPUTS_S:
                shutil.rmtree(d, ignore_errors=True)
            else:
                keep.append((t, d))
        _workdirs[:] = keep
    return Path(tempfile.mkdtemp(prefix="lipsync-app-"))


def _keep_workdir(d: Path) -> None:
    with _workdirs_lock:
        _workdirs.append((time.monotonic(), d))


@atexit.register
def _remove_workdirs() -> None:
    with _workdirs_lock:
        for _, d in _workdirs:
            shutil.rmtree(d, ignore_errors=True)
        _workdirs.clear()
    if _samples_dir is not None:
        shutil.rmtree(_samples_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- cancelling


class _Job:
    """A generation in progress for one browser session: how to stop it, and when it has stopped."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.cancel = threading.Event()
        self.finished = threading.Event()  #: set once its files are removed or handed to the page


_jobs: dict[str, _Job] = {}
_jobs_lock = threading.Lock()


def _session(request) -> str:
    return getattr(request, "session_hash", None) or f"call-{id(request)}"


def cancel_generation(request: gr.Request):
    """The Cancel button: stop this session's generation and wait until it has cleaned up."""
    with _jobs_lock:
        job = _jobs.get(_session(request))
    if job is None:
        return "Nothing is being generated."
    job.cancel.set()
    if not job.finished.wait(timeout=30):
        log.warning("a cancelled generation did not stop within 30 s")
    return "**Cancelled.** Nothing was saved; change what you like and press Generate again."


# ----------------------------------------------------------------------------- generate


def _progress_reporter(progress):
    """Map the library's ``(stage, done, total)`` onto one Gradio progress bar."""
    starts, acc = {}, 0.0
    for name, (_, share) in STAGES.items():
        starts[name] = acc
        acc += share
    state = {"frac": 0.0}

    def report(stage: str, done: int, total: int) -> None:
        label, share = STAGES.get(stage, (stage, 0.0))
        part = min(max(done / total, 0.0), 1.0) if total else 0.0
        frac = min(max(starts.get(stage, state["frac"]) + share * part, state["frac"]), 0.999)
        state["frac"] = frac
        if stage == "lipsync" and total > 1:
            label = f"{label}: frame {done} of {total}"
        try:
            progress(frac, desc=label)
        except Exception:  # noqa: BLE001 - progress must never break a request
            log.debug("progress update failed", exc_info=True)

    return report


def _summary(result, hls, voice_label: str, used_audio: bool, total_s: float) -> str:
    busy = result.network_busy
    stages = " · ".join(f"{STAGE_NAMES.get(k, k)} {v:.1f} s" for k, v in result.timings.items())
    source = "your audio file" if used_audio else voice_label
    lines = [
        f"**{result.duration_s:.1f} s** of video, {result.frames} frames at {result.fps:g} fps, "
        f"{result.width}×{result.height} px",
        f"**Voice:** {source}",
        f"**Face found by:** {result.detector}"
        + (f" in {result.face_frames} of {result.frames} frames of your video" if result.source == "video" else "")
        + (f" · **head motion:** {result.motion:g}" if result.motion else "")
        + f" · **model ran on:** {result.device}",
        f"**Time per stage:** {stages}" + (f" (network busy {busy:.0%} of the lip-sync stage)" if busy is not None else ""),
        f"**Total:** {total_s:.1f} s",
    ]
    if isinstance(hls, str):
        lines.append(f"**No HLS package:** {hls}")
    elif hls is not None:
        ladder = ", ".join(f"{r.name} ({r.width}×{r.height})" for r in hls.renditions)
        lines.append(f"**HLS renditions:** {ladder}" + (" · with captions" if getattr(hls, "subtitles", None) else ""))
    if used_audio:
        lines.append("**No captions:** an uploaded recording has no text to show.")
    elif getattr(result, "captions", None):
        lines.append("**Captions:** shown in the player, in the HLS package, and as a WebVTT file below.")
    lines.append("_This video was generated with AI; the MP4 says so in its metadata._")
    return "\n\n".join(lines)


def _gpu(fn):
    """On a ZeroGPU Space, hold a GPU while ``fn`` runs; elsewhere return ``fn`` unchanged."""
    if spaces is not None and hasattr(spaces, "GPU"):
        return spaces.GPU(duration=GPU_SECONDS)(fn)
    return fn


def _mouths(parts):
    """The network alone: all mouth crops of a prepared clip (uint8, about 27 kB a frame).

    On ZeroGPU this is the only code that holds the GPU; it runs in a forked
    worker, which inherits the engine (and its loaded model) of this process.
    """
    return get_engine().predict_mouths(parts)


_mouths_on_gpu = _gpu(_mouths)


def _predict():
    """On a ZeroGPU Space only the network runs inside the GPU slot; elsewhere it streams (None)."""
    return _mouths_on_gpu if spaces is not None else None


def _run(engine, request: Request, progress, workdir: Path):
    """The library calls: speak, find the face, lip-sync and encode, then package the HLS.

    ``engine`` None means this process's engine. On a ZeroGPU Space only the
    network runs inside the GPU slot: speech, face detection, pasting, encoding
    and HLS packaging run here, on the CPU, before and after it.
    """
    report = _progress_reporter(progress)
    if engine is None:
        result = get_engine().run(request, report, predict=_predict())
    else:
        result = engine.run(request, report)
    return result, _package(result, workdir, report)


def _package(result, workdir: Path, report):
    """The HLS package (with the captions as subtitles), or the reason it could not be made."""
    from lipsync.media.hls import package_hls

    t = time.perf_counter()
    try:
        hls = package_hls(
            result.video, workdir / "hls", zip_path=workdir / "lipsync_hls.zip", progress=report,
            captions=getattr(result, "captions", None),
        )  # fmt: skip
    except LipSyncError as e:  # the MP4 is still worth having
        log.warning("HLS packaging failed: %s", e)
        hls = str(e)
    result.timings.setdefault("hls", time.perf_counter() - t)
    return hls


def _request(workdir: Path, image, text, voice, length_s, loop, audio, pads, face_index, fps, max_side,
             frame_step, burn_captions, *, video=None, motion=DEFAULT_MOTION) -> Request:  # fmt: skip
    """The widgets' values as one checked request (captions whenever there is a text)."""
    uses_text = not audio
    options = GenerateOptions(
        fps=fps,
        pads=tuple(p or 0 for p in pads),
        face_index=face_index or 0,
        max_side=max_side or 0,
        frame_step=frame_step or 1,
        voice=(voice or None) if uses_text else None,
        length_s=length_s or 0.0,
        loop=loop,
        max_chars=MAX_CHARS,
        captions=uses_text,
        burn_captions=bool(burn_captions) and uses_text,
        motion=DEFAULT_MOTION if motion is None else motion,
    )
    return Request(
        image=None if video else image, out=workdir / "lipsync.mp4", audio=audio or None,
        text=(text or "") if uses_text else None, options=options, video=video or None,
    )  # fmt: skip


def _check_first(image, consent, video=None) -> None:
    """What a person must fix before anything runs."""
    if not consent:
        raise gr.Error(
            "Please tick the box confirming you have the right to use this person's likeness.",
            title="Consent needed", print_exception=False,
        )  # fmt: skip
    if not image and not video:
        raise gr.Error("Please upload a portrait photo (or click the example portrait).", print_exception=False)


def _finished(result, hls, workdir: Path, voice, audio, started: float):
    """(MP4, zip, captions, summary) of a finished request; the HLS folder is dropped (the zip holds it)."""
    zip_path = None if isinstance(hls, str) else getattr(hls, "zip", None)
    shutil.rmtree(workdir / "hls", ignore_errors=True)
    spoke = getattr(result, "voice", None) or voice
    total = time.perf_counter() - started
    summary = _summary(result, hls, _voice_label(spoke), bool(audio), total)
    captions = getattr(result, "captions", None)
    return str(result.video), (str(zip_path) if zip_path else None), (str(captions) if captions else None), summary


def make_generate(engine: LipSync | None = None):
    """The API handler (no streaming); ``engine`` None means the process-wide lazily made one."""

    def generate(
        image: str | None,
        text: str,
        voice: str | None,
        length_s: float = 0.0,
        loop: bool = False,
        audio: str | None = None,
        consent: bool = False,
        pad_top: float = 0,
        pad_bottom: float = 10,
        pad_left: float = 0,
        pad_right: float = 0,
        face_index: float = 0,
        fps: float = 25,
        max_side: float = 1280,
        frame_step: float = 1,
        burn_captions: bool = False,
        video: str | None = None,
        motion: float = DEFAULT_MOTION,
        progress=gr.Progress(),
    ):
        """Make a lip-synced video of the portrait (or the uploaded video) saying the text (or the uploaded audio).

        Returns the MP4, a zip of the HLS package, a Markdown summary and the
        WebVTT captions (None for uploaded audio, which has no text).
        """
        _check_first(image, consent, video)
        workdir = _new_workdir()
        started = time.perf_counter()
        try:
            request = _request(workdir, image, text, voice, length_s, loop, audio,
                               (pad_top, pad_bottom, pad_left, pad_right), face_index, fps, max_side,
                               frame_step, burn_captions, video=video, motion=motion)  # fmt: skip
            result, hls = _run(engine, request, progress, workdir)
            video, zip_path, captions, summary = _finished(result, hls, workdir, voice, audio, started)
            log.info("made %.1f s of video in %.1f s", result.duration_s, time.perf_counter() - started)
        except LipSyncError as e:
            shutil.rmtree(workdir, ignore_errors=True)
            log.info("request refused: %s", e)
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        except Exception:  # noqa: BLE001 - never show a traceback to the user
            shutil.rmtree(workdir, ignore_errors=True)
            log.exception("generation failed")
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None
        _keep_workdir(workdir)
        return video, zip_path, summary, captions

    return generate


def make_generate_live(engine: LipSync | None = None):
    """The page's handler: a generator that streams the preview, then shows the results.

    It yields ``(preview, video, hls_zip, captions, summary)``: segment files
    for the streaming preview while the video is made (the captions are set on
    the preview first), then the MP4 with its captions, the zip, the WebVTT
    file and the summary. The Cancel button stops it through the session's job.
    """

    def generate_live(
        image: str | None,
        text: str,
        voice: str | None,
        length_s: float = 0.0,
        loop: bool = False,
        audio: str | None = None,
        consent: bool = False,
        pad_top: float = 0,
        pad_bottom: float = 10,
        pad_left: float = 0,
        pad_right: float = 0,
        face_index: float = 0,
        fps: float = 25,
        max_side: float = 1280,
        frame_step: float = 1,
        burn_captions: bool = False,
        video: str | None = None,
        motion: float = DEFAULT_MOTION,
        request: gr.Request = None,
        progress=gr.Progress(),
    ):
        _check_first(image, consent, video)
        skip = gr.skip()
        workdir = _new_workdir()
        job = _Job(workdir)
        key = _session(request)
        with _jobs_lock:
            old = _jobs.get(key)
            if old is not None:
                old.cancel.set()  # one generation per page: a new click replaces the old one
            _jobs[key] = job
        started = time.perf_counter()
        kept = False
        stream = None
        try:
            req = _request(workdir, image, text, voice, length_s, loop, audio,
                           (pad_top, pad_bottom, pad_left, pad_right), face_index, fps, max_side,
                           frame_step, burn_captions, video=video, motion=motion)  # fmt: skip
            # a fresh page: no old preview, no old results
            none = _no_captions()
            yield (gr.update(value=None, subtitles=none), gr.update(value=None, subtitles=none), None, None,
                   "_Generating… the preview starts in a few seconds._")  # fmt: skip
            report = _progress_reporter(progress)
            eng = engine or get_engine()
            vtt = Path(workdir) / "preview" / "lipsync.vtt"  # the MP4's own .vtt is published only with it
            stream = eng.stream(req, report, cancel=job.cancel, predict=None if engine else _predict(),
                                on_captions=lambda cues: write_vtt(cues, vtt))  # fmt: skip
            for i, seg in enumerate(stream):
                if i == 0 and vtt.is_file():  # captions are known before the first frame is drawn
                    yield gr.update(subtitles=str(vtt)), skip, skip, skip, skip
                yield str(seg.path), skip, skip, skip, skip
            result = stream.result
            if job.cancel.is_set():
                raise Cancelled()
            # the MP4 first (it is finished), then the HLS package
            video, _, captions, summary = _finished(result, None, workdir, voice, audio, started)
            note = "\n\n_Packaging for streaming (HLS)…_"
            yield skip, gr.update(value=video, subtitles=captions or none), skip, captions, summary + note
            hls = _package(result, workdir, report)
            video, zip_path, captions, summary = _finished(result, hls, workdir, voice, audio, started)
            log.info("made %.1f s of video in %.1f s", result.duration_s, time.perf_counter() - started)
            if job.cancel.is_set():
                raise Cancelled()
            _keep_workdir(workdir)
            kept = True
            yield skip, skip, zip_path, skip, summary
        except Cancelled:
            log.info("generation cancelled")
            raise gr.Error("Cancelled. Nothing was saved.", title="Cancelled", print_exception=False) from None
        except LipSyncError as e:
            log.info("request refused: %s", e)
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error:
            raise
        except GeneratorExit:  # the page went away or Gradio cancelled the event
            job.cancel.set()
            raise
        except Exception:  # noqa: BLE001 - never show a traceback to the user
            log.exception("generation failed")
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None
        finally:

            def clean_up() -> None:
                try:
                    if stream is not None:
                        stream.close()  # stops the run if it is still going, waits for it, removes the segments
                    if not kept:
                        shutil.rmtree(workdir, ignore_errors=True)
                finally:
                    with _jobs_lock:
                        if _jobs.get(key) is job:
                            del _jobs[key]
                    job.finished.set()

            if kept or stream is None:
                clean_up()
            else:  # cancelled or failed: Gradio may still be reading the last segment it was given
                job.cancel.set()
                threading.Timer(CLEAN_UP_DELAY_S, clean_up).start()

    return generate_live


generate = make_generate()


# ----------------------------------------------------------------------------- the page

INTRO = """
# Talking portrait
Upload a portrait, type what it should say, and get a lip-synced video with captions (an MP4
to watch here, and an HLS package to stream). The preview starts playing a few seconds after
you press Generate, while the rest is still being made. Everything is generated by AI: use
photos of yourself or of people who agreed, and say so when you share the result.
"""

#: runs once in the page: the live preview plays through hls.js, and Chromium leaves the caption
#: track of such a video off, so each new caption track of the preview is switched on once
PAGE_JS = """
() => {
  const seen = new WeakSet();
  setInterval(() => {
    document.querySelectorAll('#preview video').forEach((v) => {
      for (const t of v.textTracks) {
        if ((t.kind === 'captions' || t.kind === 'subtitles') && !seen.has(t)) {
          seen.add(t);
          if (t.mode === 'disabled') { t.mode = 'showing'; }
        }
      }
    });
  }, 300);
}
"""

COUNTER_JS = f"""
(text) => {{
  const n = [...(text || "")].length;
  const over = n > {MAX_CHARS};
  return `<span style="color:${{over ? '#d32f2f' : 'inherit'}}">${{n}} / {MAX_CHARS} characters` +
         (over ? " (too long: please shorten it)" : "") + "</span>";
}}
"""


def _counter(text: str) -> str:
    n = len(text or "")
    return f"{n} / {MAX_CHARS} characters" + (" (too long: please shorten it)" if n > MAX_CHARS else "")


def _default_frame_step() -> int:
    """Every frame on a GPU; every second frame (blended) on a CPU, where the network is the wait."""
    try:
        import torch

        return 1 if torch.cuda.is_available() else 2
    except Exception:  # noqa: BLE001 - no torch: the engine will say so
        return 1


class PortraitUpload(gr.Image):
    """``gr.Image`` that hands the handler the uploaded file untouched.

    Stock ``gr.Image`` decodes every upload with Pillow before the handler
    runs (any format, converted to RGB, 16-bit clipped); a broken file then
    fails inside Gradio with a bare error. Here the file goes, as is, to
    :func:`lipsync.load_image`, the one place that opens untrusted images.
    """

    def preprocess(self, payload):
        return None if payload is None else str(payload.path)

    def get_block_name(self) -> str:
        return "image"


def _faces(image, pad_top, pad_bottom, pad_left, pad_right, max_side, engine=None):
    """(photo with the faces boxed, their boxes) for the face preview; None when there is no photo."""
    from lipsync import load_image
    from lipsync.face.preview import list_faces

    if not image:
        return None, []
    rgb = load_image(image, max_side=int(max_side or 0))
    detector = (engine or get_engine()).detector
    pads = tuple(int(p or 0) for p in (pad_top, pad_bottom, pad_left, pad_right))
    return rgb, list_faces(rgb, detector, pads=pads)


def _face_view(state, chosen):
    """The preview picture, the radio buttons and the line under them, for one chosen face."""
    from lipsync.face.preview import draw_faces

    if not state or state.get("rgb") is None:
        return None, gr.Radio(choices=[], value=None, visible=False), ""
    boxes = state["boxes"]
    usable = [i for i, b in enumerate(boxes) if b is not None]
    if not usable:
        note = (
            "⚠️ **No face found in this photo.** Use a clear, well-lit portrait where one face looks "
            "towards the camera (or give the face box in Python / on the command line)."
        )
        return state["rgb"], gr.Radio(choices=[], value=None, visible=False), note
    chosen = int(chosen) if chosen is not None and int(chosen) in usable else usable[0]
    picture = draw_faces(state["rgb"], boxes, chosen)
    labels = [(f"Face {i}" + (" (largest)" if i == 0 else ""), i) for i in usable]
    if len(usable) == 1:
        note = "One face found: it will be animated (green box)."
    else:
        note = f"{len(usable)} faces found, numbered from the largest. **Face {chosen}** (green) will be animated: click another one to change."
    return picture, gr.Radio(choices=labels, value=chosen, visible=len(usable) > 1), note


def build_demo(engine: LipSync | None = None) -> gr.Blocks:
    """The Blocks app; ``engine`` None uses one lazily made engine per process."""
    choices, default_voice = voice_choices()

    def on_photo(image, pad_top, pad_bottom, pad_left, pad_right, max_side):
        try:
            rgb, boxes = _faces(image, pad_top, pad_bottom, pad_left, pad_right, max_side, engine)
        except LipSyncError as e:
            return None, None, gr.Radio(choices=[], value=None, visible=False), f"⚠️ {e}", gr.skip()
        except Exception:  # noqa: BLE001 - the preview is a help; Generate reports problems properly
            log.exception("face preview failed")
            return None, None, gr.Radio(choices=[], value=None, visible=False), "", gr.skip()
        state = {"rgb": rgb, "boxes": boxes}
        picture, radio, note = _face_view(state, 0)
        return state, picture, radio, note, 0

    def on_choice(state, chosen):
        picture, radio, note = _face_view(state, chosen)
        return picture, radio, note, (chosen if chosen is not None else 0)

    def on_click(state, evt: gr.SelectData):
        from lipsync.face.preview import face_at

        if not state or not state.get("boxes") or not isinstance(evt.index, (list, tuple)):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        hit = face_at(state["boxes"], float(evt.index[0]), float(evt.index[1]))
        if hit is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return on_choice(state, hit)

    with gr.Blocks(title="Talking portrait (lipsync)", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        status = gr.Markdown(model_status(), elem_id="model-status")
        faces_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                image = PortraitUpload(
                    type="filepath", label="Portrait (one face, looking at the camera)",
                    sources=["upload", "clipboard"], height=320, elem_id="portrait",
                )  # fmt: skip
                text = gr.Textbox(
                    label="Text to speak", lines=4, max_lines=12, elem_id="text",
                    placeholder="Type what the person should say…", render=False,
                )  # fmt: skip
                gr.Examples(
                    examples=[[str(EXAMPLE_IMAGE), EXAMPLE_TEXT]] if EXAMPLE_IMAGE.is_file() else [],
                    inputs=[image, text],
                    cache_examples=False,
                    label="Example portrait (click to use it)",
                )
                with gr.Accordion("Or a short video of the person instead of the photo (optional)", open=False):
                    video_in = gr.File(
                        label="Video (MP4, MOV, WebM, MKV; up to 60 s): replaces the photo; looped or cut "
                        "to the speech", file_types=[".mp4", ".mov", ".webm", ".mkv"], type="filepath",
                        elem_id="video-source",
                    )  # fmt: skip
                with gr.Group(elem_id="faces-group"):
                    faces_view = gr.Image(
                        label="Faces found (click a face to animate it)", interactive=False, type="numpy",
                        height=240, elem_id="faces", buttons=[],
                    )  # fmt: skip
                    face_choice = gr.Radio(choices=[], label="Face to animate", visible=False, elem_id="face-choice")
                    faces_note = gr.Markdown("", elem_id="faces-note")
                text.render()
                counter = gr.Markdown(_counter(""), elem_id="char-count")
                with gr.Row(equal_height=True):
                    voice = gr.Dropdown(
                        choices=choices, value=default_voice, label="Voice", elem_id="voice", scale=4,
                        info="Voices that cannot run here are listed as unavailable, with the reason.",
                    )  # fmt: skip
                    sample_button = gr.Button("▶ Hear this voice", elem_id="voice-sample-button", scale=1, size="sm")
                voice_note = gr.Markdown(voice_info(default_voice), elem_id="voice-note")
                voice_sample_audio = gr.Audio(
                    label="Voice sample", interactive=False, autoplay=True, type="filepath",
                    elem_id="voice-sample", visible=False,
                )  # fmt: skip
                length_s = gr.Slider(
                    0, MAX_LENGTH_S, value=0, step=1, label="Video length (seconds)",
                    info="0 = as long as the speech. Longer: the video continues after the speech "
                    "(or repeats it, with “Loop”); shorter: the speech is cut.",
                    elem_id="length",
                )  # fmt: skip
                loop = gr.Checkbox(False, label="Loop: repeat the speech to fill the length", elem_id="loop")
                with gr.Accordion("Use your own audio instead of text (optional)", open=False):
                    audio = gr.Audio(
                        type="filepath", sources=["upload", "microphone"], elem_id="audio",
                        label="Speech (WAV, MP3, M4A, OGG, FLAC): replaces the text and voice",
                    )  # fmt: skip
                    gr.Markdown("A recording has no text, so its video gets **no captions**.")
                with gr.Accordion("Advanced", open=False):
                    gr.Markdown("Grow the detected face box by a few pixels if the chin or mouth is cut off.")
                    with gr.Row():
                        pad_top = gr.Number(0, label="Face padding top (px)", precision=0, minimum=-200, maximum=200)
                        pad_bottom = gr.Number(10, label="bottom (px)", precision=0, minimum=-200, maximum=200)
                        pad_left = gr.Number(0, label="left (px)", precision=0, minimum=-200, maximum=200)
                        pad_right = gr.Number(0, label="right (px)", precision=0, minimum=-200, maximum=200)
                    with gr.Row():
                        face_index = gr.Number(
                            0, label="Which face (0 = the largest)", precision=0, minimum=0, maximum=20,
                            elem_id="face-index",
                        )  # fmt: skip
                        fps = gr.Slider(10, 60, value=25, step=1, label="Frames per second (the model was trained at 25)")
                        max_side = gr.Dropdown(
                            choices=[("Keep the photo's size", 0), ("480 px", 480), ("720 px", 720),
                                     ("1080 px", 1080), ("1280 px", 1280), ("1920 px", 1920)],
                            value=1280, label="Output size: longest side at most",
                        )  # fmt: skip
                    motion = gr.Slider(
                        0, 1, value=DEFAULT_MOTION, step=0.05, elem_id="motion",
                        label="Head motion for a photo (0 = a still head; a video moves by itself)",
                    )  # fmt: skip
                    frame_step = gr.Radio(
                        choices=[("Best: the network draws every frame", 1),
                                 ("Faster: every 2nd frame, blended between (about 2x faster)", 2)],
                        value=_default_frame_step(), label="Speed", elem_id="speed",
                        info="On a CPU without a GPU the faster setting is the default. By default a CPU runs "
                        "the network in int8 where it matches float32 closely for this model (the summary says).",
                    )  # fmt: skip
                    burn_captions = gr.Checkbox(
                        False, label="Burn the captions into the video (they are always in the player and the HLS package)",
                        elem_id="burn-captions",
                    )  # fmt: skip
                consent = gr.Checkbox(False, label=CONSENT_LABEL, elem_id="consent")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel", scale=1)
            with gr.Column(scale=1):
                preview = gr.Video(
                    label="Live preview: starts playing while the video is made", interactive=False,
                    streaming=True, autoplay=True, elem_id="preview",
                )  # fmt: skip
                video = gr.Video(label="Your video (MP4, with captions)", interactive=False, elem_id="video")
                hls_zip = gr.File(label="HLS streaming package (.zip, with a player page)", elem_id="hls-zip")
                captions_file = gr.File(label="Captions (WebVTT)", elem_id="captions-file")
                summary = gr.Markdown(elem_id="summary")
                api_button = gr.Button(visible=False, elem_id="api-generate")

        timer = gr.Timer(1.0, active=True)
        timer.tick(_poll_model_status, outputs=[status, timer], queue=False, api_visibility="private")
        demo.load(refresh_voices, inputs=voice, outputs=[voice, voice_note], queue=False, api_visibility="private")

        photo_inputs = [image, pad_top, pad_bottom, pad_left, pad_right, max_side]
        photo_outputs = [faces_state, faces_view, face_choice, faces_note, face_index]
        image.change(on_photo, inputs=photo_inputs, outputs=photo_outputs, api_visibility="private",
                     concurrency_limit=4)  # fmt: skip
        face_choice.input(on_choice, inputs=[faces_state, face_choice],
                          outputs=[faces_view, face_choice, faces_note, face_index], queue=False,
                          api_visibility="private")  # fmt: skip
        face_index.input(on_choice, inputs=[faces_state, face_index],
                         outputs=[faces_view, face_choice, faces_note, face_index], queue=False,
                         api_visibility="private")  # fmt: skip
        faces_view.select(on_click, inputs=faces_state, outputs=[faces_view, face_choice, faces_note, face_index],
                          queue=False, api_visibility="private")  # fmt: skip

        text.change(None, inputs=text, outputs=counter, js=COUNTER_JS, queue=False)
        voice.change(voice_info, inputs=voice, outputs=voice_note, queue=False, api_visibility="private")
        sample_button.click(
            lambda v: gr.Audio(value=voice_sample(v), visible=True), inputs=voice, outputs=voice_sample_audio,
            api_visibility="private", concurrency_limit=2,
        )  # fmt: skip

        inputs = [image, text, voice, length_s, loop, audio, consent,
                  pad_top, pad_bottom, pad_left, pad_right, face_index, fps, max_side, frame_step, burn_captions,
                  video_in, motion]  # fmt: skip
        live = button.click(
            make_generate_live(engine),
            inputs=inputs,
            outputs=[preview, video, hls_zip, captions_file, summary],
            api_visibility="private",
            concurrency_limit=1,
            concurrency_id="model",
        )
        cancel_button.click(cancel_generation, outputs=summary, cancels=[live], queue=False, api_visibility="private")
        api_button.click(
            make_generate(engine),
            inputs=inputs,
            outputs=[video, hls_zip, summary, captions_file],
            api_name="generate",
            api_visibility="public",
            concurrency_limit=1,
            concurrency_id="model",
        )  # fmt: skip
    demo.queue(max_size=int(os.environ.get("LIPSYNC_QUEUE_SIZE", "16")), default_concurrency_limit=1)
    return demo


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Talking-portrait web app (lipsync + Gradio).")
    p.add_argument("--host", default=None, help="address to listen on (default $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--share", action="store_true", help="also make a temporary public link (needs internet)")
    p.add_argument("--checkpoint", help="local Wav2Lip checkpoint (default $LIPSYNC_CHECKPOINT, else the Hub)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the model runs (default auto)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16", "int8"),
                   help="network precision (default $LIPSYNC_PRECISION, else auto: fp16 on a GPU; on a CPU "
                        "int8 where installed and it passes its check, else bf16 or fp32)")  # fmt: skip
    return p


def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt  # Gradio closes the server on it; then atexit removes request folders


#: OpenMP threads that wait by sleeping rather than spinning. The network's threads share the
#: CPU with the encoder, Gradio's handling of each preview segment (and, on a small machine, the
#: browser); spinning threads then burn the cores the others need. Measured on 2 cores with the
#: page open in Chromium: the lip-sync stage of a 10.8 s clip took 5.5-5.7 s spinning and 3.7-3.8 s
#: sleeping, with less CPU time in all (see README, Speed). Set before torch loads; an explicit
#: OMP_WAIT_POLICY in the environment wins.
OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def main(argv: list[str] | None = None) -> None:
    for key, value in OMP_ENV.items():
        os.environ.setdefault(key, value)
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ENGINE_CONFIG.update(checkpoint=args.checkpoint, device=args.device, precision=args.precision)
    if spaces is not None:  # ZeroGPU forks a worker per GPU call: it inherits the model loaded here, once
        start_model_loading().join()
    else:  # in the background: the page comes up at once and shows the loading state
        start_model_loading()
    demo = build_demo()
    kwargs = dict(server_name=args.host, server_port=args.port, max_file_size="20mb", show_error=False, js=PAGE_JS)
    if args.share:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                demo.launch(share=True, **kwargs)
            return
        except Exception as e:  # noqa: BLE001 - no network: serve locally instead
            log.warning("could not create a share link (%s); serving locally only", e)
            demo.close()
    demo.launch(share=False, **kwargs)


if __name__ == "__main__":
    main()
