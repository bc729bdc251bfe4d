"""The web app: a portrait and a few lines of text -> a talking, lip-synced video.

Gradio Blocks only: widgets are turned into :class:`lipsync.GenerateOptions`
and handed to :class:`lipsync.LipSync`; every piece of media work lives in the
library. Run it with::

    python app.py [--host 0.0.0.0] [--port 7860] [--share]

The same file runs unchanged as a Hugging Face Space (ZeroGPU included). The
model weights are fetched on the first request (or taken from
``$LIPSYNC_CHECKPOINT``), so the page comes up even on a machine without them
and the first Generate explains what is missing.

The endpoint is also an API (``api_name="generate"``)::

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(
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

from lipsync import GenerateOptions, LipSync, LipSyncError, Request
from lipsync.options import DEFAULT_MOTION

try:  # Hugging Face ZeroGPU: a GPU is attached only while a decorated function runs
    import spaces  # type: ignore[import-not-found]
except ImportError:  # everywhere else the decorator is not needed
    spaces = None

__all__ = ["build_demo", "generate", "main"]

log = logging.getLogger("lipsync.app")

ROOT = Path(__file__).resolve().parent
EXAMPLE_IMAGE = ROOT / "assets" / "astronaut.jpg"
EXAMPLE_TEXT = (
    "Hello from orbit! The view up here is breathtaking, "
    "and every ninety minutes we watch the sun rise again."
)
MAX_CHARS = 1000
MAX_LENGTH_S = 60
#: keep a finished request's folder this long (Gradio copies the files into its cache meanwhile)
KEEP_OUTPUTS_S = 600
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
    "lipsync": ("Animating the lips", 0.62),
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
    timings = dict(result.timings)
    busy = timings.pop("inference_busy", None)
    stages = " · ".join(f"{STAGE_NAMES.get(k, k)} {v:.1f} s" for k, v in timings.items())
    source = "your audio file" if used_audio else voice_label
    lines = [
        f"**{result.duration_s:.1f} s** of video, {result.frames} frames at {result.fps:g} fps, "
        f"{result.width}×{result.height} px",
        f"**Voice:** {source}",
        f"**Face found by:** {result.detector}"
        + (f" in {result.face_frames} of {result.frames} frames of your video" if result.source == "video" else "")
        + (f" · **head motion:** {result.motion:g}" if result.motion else "")
        + f" · **model ran on:** {result.device}",
        f"**Time per stage:** {stages}" + (f" (network busy {busy:.1f} s)" if busy is not None else ""),
        f"**Total:** {total_s:.1f} s",
    ]
    if isinstance(hls, str):
        lines.append(f"**No HLS package:** {hls}")
    elif hls is not None:
        ladder = ", ".join(f"{r.name} ({r.width}×{r.height})" for r in hls.renditions)
        lines.append(f"**HLS renditions:** {ladder}")
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


def _run(engine, request: Request, progress, workdir: Path):
    """The library calls: speak, find the face, lip-sync and encode, then package the HLS.

    ``engine`` None means this process's engine. On a ZeroGPU Space only the
    network runs inside the GPU slot: speech, face detection, pasting, encoding
    and HLS packaging run here, on the CPU, before and after it.
    """
    from lipsync.media.hls import package_hls

    report = _progress_reporter(progress)
    if engine is None and spaces is not None:
        result = get_engine().run(request, report, predict=_mouths_on_gpu)
    else:
        result = (engine or get_engine()).run(request, report)
    t = time.perf_counter()
    try:
        hls = package_hls(result.video, workdir / "hls", zip_path=workdir / "lipsync_hls.zip", progress=report)
    except LipSyncError as e:  # the MP4 is still worth having
        log.warning("HLS packaging failed: %s", e)
        hls = str(e)
    result.timings.setdefault("hls", time.perf_counter() - t)
    return result, hls


def make_generate(engine: LipSync | None = None):
    """The event handler; ``engine`` None means the process-wide lazily made one."""

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
        video: str | None = None,
        motion: float = DEFAULT_MOTION,
        progress=gr.Progress(),
    ):
        """Make a lip-synced video of the portrait (or the uploaded video) saying the text (or the uploaded audio).

        Returns the MP4, a zip of the HLS package and a Markdown summary.
        """
        # 1. what a person must fix before anything runs
        if not consent:
            raise gr.Error(
                "Please tick the box confirming you have the right to use this person's likeness.",
                title="Consent needed", print_exception=False,
            )  # fmt: skip
        if not image and not video:
            raise gr.Error("Please upload a portrait photo (or click the example portrait).", print_exception=False)
        workdir = _new_workdir()
        started = time.perf_counter()
        try:
            options = GenerateOptions(
                fps=fps,
                pads=(pad_top or 0, pad_bottom or 0, pad_left or 0, pad_right or 0),
                face_index=face_index or 0,
                max_side=max_side or 0,
                frame_step=frame_step or 1,
                voice=None if audio else (voice or None),
                length_s=length_s or 0.0,
                loop=loop,
                max_chars=MAX_CHARS,
                motion=DEFAULT_MOTION if motion is None else motion,
            )
            request = Request(
                image=None if video else image, out=workdir / "lipsync.mp4", audio=audio or None,
                text=None if audio else (text or ""), options=options, video=video or None,
            )  # fmt: skip
            result, hls = _run(engine, request, progress, workdir)
            zip_path = None if isinstance(hls, str) else (getattr(hls, "zip", None) or getattr(hls, "zip_path", None))
            shutil.rmtree(workdir / "hls", ignore_errors=True)  # the zip holds it
            spoke = getattr(result, "voice", None) or voice
            summary = _summary(result, hls, _voice_label(spoke), bool(audio), time.perf_counter() - started)
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
        return str(result.video), (str(zip_path) if zip_path else None), summary

    return generate


generate = make_generate()


# ----------------------------------------------------------------------------- the page

INTRO = """
# Talking portrait
Upload a portrait, type what it should say, and get a lip-synced video (an MP4 to watch here,
and an HLS package to stream). Everything is generated by AI: use photos of yourself or of
people who agreed, and say so when you share the result.
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


def build_demo(engine: LipSync | None = None) -> gr.Blocks:
    """The Blocks app; ``engine`` None uses one lazily made engine per process."""
    choices, default_voice = voice_choices()
    with gr.Blocks(title="Talking portrait (lipsync)", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
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
                text.render()
                counter = gr.Markdown(_counter(""), elem_id="char-count")
                voice = gr.Dropdown(
                    choices=choices, value=default_voice, label="Voice", elem_id="voice",
                    info="Voices that cannot run here are listed as unavailable, with the reason.",
                )  # fmt: skip
                voice_note = gr.Markdown(voice_info(default_voice), elem_id="voice-note")
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
                with gr.Accordion("Advanced", open=False):
                    gr.Markdown("Grow the detected face box by a few pixels if the chin or mouth is cut off.")
                    with gr.Row():
                        pad_top = gr.Number(0, label="Face padding top (px)", precision=0, minimum=-200, maximum=200)
                        pad_bottom = gr.Number(10, label="bottom (px)", precision=0, minimum=-200, maximum=200)
                        pad_left = gr.Number(0, label="left (px)", precision=0, minimum=-200, maximum=200)
                        pad_right = gr.Number(0, label="right (px)", precision=0, minimum=-200, maximum=200)
                    with gr.Row():
                        face_index = gr.Number(
                            0, label="Which face (0 = the largest)", precision=0, minimum=0, maximum=20
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
                        value=_default_frame_step(), label="Speed",
                        info="On a CPU without a GPU the faster setting is the default. By default a CPU runs "
                        "the network in int8 where it matches float32 closely for this model (the summary says).",
                    )  # fmt: skip
                consent = gr.Checkbox(False, label=CONSENT_LABEL, elem_id="consent")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                video = gr.Video(label="Your video", interactive=False, elem_id="video")
                hls_zip = gr.File(label="HLS streaming package (.zip, with a player page)", elem_id="hls-zip")
                summary = gr.Markdown(elem_id="summary")

        text.change(None, inputs=text, outputs=counter, js=COUNTER_JS, queue=False)
        voice.change(voice_info, inputs=voice, outputs=voice_note, queue=False, api_visibility="private")
        button.click(
            make_generate(engine),
            inputs=[image, text, voice, length_s, loop, audio, consent,
                    pad_top, pad_bottom, pad_left, pad_right, face_index, fps, max_side, frame_step,
                    video_in, motion],
            outputs=[video, hls_zip, summary],
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


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ENGINE_CONFIG.update(checkpoint=args.checkpoint, device=args.device, precision=args.precision)
    if spaces is not None:  # ZeroGPU forks a worker per GPU call: it inherits the model loaded here, once
        try:
            get_engine().load()
        except LipSyncError as e:  # the page still comes up and explains on Generate
            log.warning("model not loaded at start-up: %s", e)
    demo = build_demo()
    kwargs = dict(server_name=args.host, server_port=args.port, max_file_size="20mb", show_error=False)
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
