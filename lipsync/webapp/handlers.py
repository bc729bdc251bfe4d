"""The two Generate handlers: the page's (streams a preview, then the results) and the API's (``/generate``).

Both take their parameters from :data:`lipsync.webapp.form.FIELDS`, make a
:class:`~lipsync.Request` of them, run the library, and turn what it made (or
why it could not) into what the page shows: plain messages, details in the log.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import shutil
import threading
import time
from pathlib import Path

import anyio
import gradio as gr

from lipsync import Cancelled, LipSync, LipSyncError
from lipsync.media.captions import write_vtt
from lipsync.memory import release_memory

from . import form, jobs, state, voices
from .messages import CANCELLED, GENERIC_ERROR, plain_message

try:  # Hugging Face ZeroGPU: a GPU is attached only while a decorated function runs
    import spaces  # type: ignore[import-not-found]
except ImportError:  # everywhere else the decorator is not needed
    spaces = None

__all__ = ["make_generate", "make_generate_live", "STAGES", "GPU_SECONDS"]

log = logging.getLogger("lipsync.app")

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
STAGE_NAMES = {"lipsync": "lip-sync", "hls": "HLS", "image": "photo"}


def progress_reporter(progress):
    """Map the library's ``(stage, done, total)`` onto one Gradio progress bar."""
    starts, acc = {}, 0.0
    for name, (_, share) in STAGES.items():
        starts[name] = acc
        acc += share
    state_ = {"frac": 0.0}

    def report(stage: str, done: int, total: int) -> None:
        label, share = STAGES.get(stage, (stage, 0.0))
        part = min(max(done / total, 0.0), 1.0) if total else 0.0
        frac = min(max(starts.get(stage, state_["frac"]) + share * part, state_["frac"]), 0.999)
        state_["frac"] = frac
        if stage == "lipsync" and total > 1:
            label = f"{label}: frame {done} of {total}"
        try:
            progress(frac, desc=label)
        except Exception:  # noqa: BLE001 - progress must never break a request
            log.debug("progress update failed", exc_info=True)

    return report


def summary(result, hls, voice_label: str, used_audio: bool, total_s: float) -> str:
    """The Markdown under the video: what was made, how, and how long each stage took."""
    busy = result.network_busy
    stages = " · ".join(f"{STAGE_NAMES.get(k, k)} {v:.1f} s" for k, v in result.timings.items() if "." not in k)
    source = "your audio file" if used_audio else voice_label
    lines = [
        f"**{result.duration_s:.1f} s** of video, {result.frames} frames at {result.fps:g} fps, "
        f"{result.width}×{result.height} px",
        f"**Voice:** {source}",
        f"**Face found by:** {result.detector}"
        + (f" in {result.face_frames} of {result.frames} frames of your video" if result.source == "video" else "")
        + (f" · **head motion:** {result.motion:g}" if result.motion else "")
        + (f" · **mouth:** {result.enhance.split(':')[0]}" if result.enhance else "")
        + (f" · **blinks:** {result.blink}" if result.blink else "")
        + f" · **model ran on:** {result.device}",
        f"**Time per stage:** {stages}" + (f" (network busy {busy:.0%} of the lip-sync stage)" if busy is not None else ""),
        f"**Total:** {total_s:.1f} s",
    ]
    if isinstance(hls, str):
        lines.append(f"**No HLS package:** {hls}")
    elif hls is not None:
        ladder = ", ".join(f"{r.name} ({r.width}×{r.height})" for r in hls.renditions)
        lines.append(f"**HLS renditions:** {ladder}" + (" · with captions" if hls.subtitles else ""))
    if used_audio:
        lines.append("**No captions:** an uploaded recording has no text to show.")
    elif result.captions:
        lines.append("**Captions:** shown in the player, in the HLS package, and as a WebVTT file below.")
    lines.append("_This video was generated with AI; the MP4 says so in its metadata._")
    return "\n\n".join(lines)


# ----------------------------------------------------------------------------- ZeroGPU


def _gpu(fn):
    """On a ZeroGPU Space, hold a GPU while ``fn`` runs; elsewhere return ``fn`` unchanged."""
    if spaces is not None and hasattr(spaces, "GPU"):
        return spaces.GPU(duration=GPU_SECONDS)(fn)
    return fn


def mouths(parts):
    """The network alone: all mouth crops of a prepared clip (uint8, about 27 kB a frame).

    On ZeroGPU this is the only code that holds the GPU; it runs in a forked
    worker, which inherits the engine (and its loaded model) of this process;
    ``parts`` is pickled on its way there.
    """
    return state.get_engine().predict_mouths(parts)


_mouths_on_gpu = _gpu(mouths)


def predictor():
    """On a ZeroGPU Space only the network runs inside the GPU slot; elsewhere it streams (None)."""
    return _mouths_on_gpu if spaces is not None else None


# ----------------------------------------------------------------------------- running


def _run(engine, request, progress, workdir: Path, cancel: threading.Event | None = None):
    """The library calls: speak, find the face, lip-sync and encode, then package the HLS.

    ``engine`` None means this process's engine. On a ZeroGPU Space only the
    network runs inside the GPU slot: speech, face detection, pasting, encoding
    and HLS packaging run here, on the CPU, before and after it.
    """
    report = progress_reporter(progress)
    if engine is None:  # this process's engine, or the cluster's workers (``app.py --ray``)
        engine = state.clip_engine()
        result = engine.run(request, report, predict=predictor(), cancel=cancel)
    else:
        result = engine.run(request, report, cancel=cancel)
    return result, package(result, workdir, report, engine)


def package(result, workdir: Path, report, engine=None):
    """The HLS package (with the captions as subtitles), or the plain reason it could not be made.

    A clip made on a cluster's worker (``engine`` has ``package``) is packaged there.
    """
    from lipsync.media.hls import package_hls

    t = time.perf_counter()
    try:
        if hasattr(engine, "package"):
            hls = engine.package(result, workdir, report)
        else:
            hls = package_hls(
                result.video, workdir / "hls", zip_path=workdir / "lipsync_hls.zip", progress=report,
                captions=result.captions,
            )
    except LipSyncError as e:  # the MP4 is still worth having
        log.warning("HLS packaging failed: %s", e)
        hls = plain_message(e)
    result.timings.setdefault("hls", time.perf_counter() - t)
    return hls


def finished(result, hls, workdir: Path, voice, audio, started: float):
    """(MP4, zip, captions, summary) of a finished request; the HLS folder is dropped (the zip holds it)."""
    zip_path = None if isinstance(hls, str) else getattr(hls, "zip", None)
    shutil.rmtree(workdir / "hls", ignore_errors=True)
    spoke = result.voice or voice
    total = time.perf_counter() - started
    text = summary(result, hls, voices.voice_label(spoke), bool(audio), total)
    captions = result.captions
    return str(result.video), (str(zip_path) if zip_path else None), (str(captions) if captions else None), text


def _refused(e: LipSyncError) -> gr.Error:
    """A library error as the page shows it; the full text goes to the log."""
    log.info("request refused: %s", e)
    return gr.Error(plain_message(e), print_exception=False)


# positional-or-keyword: Gradio injects its request and progress only into such parameters
_PROGRESS = inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress())
_REQUEST = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)


def make_generate(engine: LipSync | None = None):
    """The API handler (no streaming); ``engine`` None means the process-wide lazily made one.

    The work runs on a worker thread; when Gradio cancels the request (a
    script's ``job.cancel()``), the run is stopped at its next check and the
    handler waits for it to end, so a cancelled request never runs on beside
    the next one.
    """
    sig = form.signature(_PROGRESS)

    def work(values: dict, progress, cancel: threading.Event):
        form.check_first(values)
        workdir = jobs.new_workdir()
        started = time.perf_counter()
        try:
            request = form.to_request(values, workdir)
            result, hls = _run(engine, request, progress, workdir, cancel)
            video, zip_path, captions, text = finished(result, hls, workdir, values["voice"], values["audio"], started)
            log.info("made %.1f s of video in %.1f s", result.duration_s, time.perf_counter() - started)
        except Cancelled:
            shutil.rmtree(workdir, ignore_errors=True)
            log.info("request cancelled")
            raise gr.Error("Cancelled. Nothing was saved.", title="Cancelled", print_exception=False) from None
        except LipSyncError as e:
            shutil.rmtree(workdir, ignore_errors=True)
            raise _refused(e) from None
        except gr.Error:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        except Exception:  # noqa: BLE001 - never show a traceback to the user
            shutil.rmtree(workdir, ignore_errors=True)
            log.exception("generation failed")
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None
        finally:
            release_memory()
        jobs.keep_workdir(workdir)
        return video, zip_path, text, captions

    async def generate(*args, **kwargs):
        """Make a lip-synced video of the portrait (or the uploaded video) saying the text (or the uploaded audio).

        Returns the MP4, a zip of the HLS package, a Markdown summary and the
        WebVTT captions (None for uploaded audio, which has no text).
        """
        values = form.bind(sig, args, kwargs)
        progress = values.pop("progress")
        cancel = threading.Event()
        ended = threading.Event()

        def run():
            try:
                return work(values, progress, cancel)
            finally:
                ended.set()

        try:
            return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except BaseException:
            if not ended.is_set():  # cancelled by Gradio: stop the run, and wait until it has
                cancel.set()
                await asyncio.get_running_loop().run_in_executor(None, ended.wait, 120)
            raise

    return form.with_signature(generate, sig)


def make_generate_live(engine: LipSync | None = None):
    """The page's handler: a generator that streams the preview, then shows the results.

    It yields ``(preview, video, hls_zip, captions, summary)``: segment files
    for the streaming preview while the video is made (the captions are set on
    the preview first), then the MP4 with its captions, the zip, the WebVTT
    file and the summary. The Cancel button stops it through the session's
    job: it then ends quietly, with a neutral notice (a cancel is the user's
    choice, not an error). The preview's segments stay in the job's folder
    until Gradio has finished serving them.
    """
    sig = form.signature(_REQUEST, _PROGRESS)

    def generate_live(*args, **kwargs):
        values = form.bind(sig, args, kwargs)
        progress, request = values.pop("progress"), values.pop("request")
        form.check_first(values)
        skip = gr.skip()
        workdir = jobs.new_workdir()
        job = jobs.start_job(request, workdir)
        started = time.perf_counter()
        kept = False
        try:
            req = form.to_request(values, workdir)
            # a fresh page: no old preview, no old results
            none = voices.no_captions()
            yield (gr.update(value=None, subtitles=none), gr.update(value=None, subtitles=none), None, None,
                   "_Generating… the preview starts in a moment._")
            report = progress_reporter(progress)
            eng = engine or state.clip_engine()
            vtt = workdir / "preview.vtt"  # the MP4's own .vtt is published only with the MP4; this one outlives the segments
            stream = eng.stream(
                req, report, cancel=job.cancel, folder=workdir / "preview",
                predict=None if engine else predictor(),
                on_captions=lambda cues: write_vtt(cues, vtt),
            )
            for i, seg in enumerate(stream):
                if i == 0 and vtt.is_file():  # captions are known before the first frame is drawn
                    yield gr.update(subtitles=str(vtt)), skip, skip, skip, skip
                jobs.segment_seconds[str(seg.path)] = seg.duration_s  # the page's player needs no probe
                yield str(seg.path), skip, skip, skip, skip
            result = stream.result
            preview = workdir / "preview"
            if jobs.in_use.wait_free(preview):  # every segment has been served: the MP4 holds the same frames
                shutil.rmtree(preview, ignore_errors=True)
            if job.cancel.is_set():
                raise Cancelled()
            # the MP4 first (it is finished), then the HLS package
            video, _, captions, text = finished(result, None, workdir, values["voice"], values["audio"], started)
            note = "\n\n_Packaging for streaming (HLS)…_"
            yield skip, gr.update(value=video, subtitles=captions or none), skip, captions, text + note
            hls = package(result, workdir, report, eng)
            video, zip_path, captions, text = finished(result, hls, workdir, values["voice"], values["audio"], started)
            log.info("made %.1f s of video in %.1f s", result.duration_s, time.perf_counter() - started)
            if job.cancel.is_set():
                raise Cancelled()
            kept = True
            yield skip, skip, zip_path, skip, text
        except Cancelled:
            log.info("generation cancelled")
            gr.Info("Cancelled. Nothing was saved.", title="Cancelled")
            none = voices.no_captions()
            yield (gr.update(value=None, subtitles=none), gr.update(value=None, subtitles=none), None, None,
                   CANCELLED)
        except LipSyncError as e:
            raise _refused(e) from None
        except gr.Error:
            raise
        except GeneratorExit:  # the page went away or Gradio stopped the event
            job.cancel.set()
            raise
        except Exception:  # noqa: BLE001 - never show a traceback to the user
            log.exception("generation failed")
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None
        finally:
            for path in [p for p in list(jobs.segment_seconds) if p.startswith(str(workdir))]:
                jobs.segment_seconds.pop(path, None)  # announced, never taken (a cancel): forgotten
            if kept:
                jobs.keep_workdir(workdir)
                job.end(keep=True)
            else:
                # the stream's worker has stopped (leaving its loop waits for it); the folder goes once
                # Gradio has finished reading the segments it was given, on a thread of its own
                job.cancel.set()
                threading.Thread(target=job.end, args=(False,), name="lipsync-clean-up", daemon=True).start()
            release_memory()

    return form.with_signature(generate_live, sig)
