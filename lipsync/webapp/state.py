"""The engine of this process and the model's status line on the page.

One :class:`~lipsync.LipSync` per process, made on first use from the command
line's settings (or the environment), loaded on a background thread when the
app starts so the page comes up at once and says when the model is ready.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from lipsync import LipSync, LipSyncError

from .messages import plain_message

__all__ = ["ENGINE_CONFIG", "get_engine", "set_engine", "clip_engine", "set_clip_engine", "model_status",
           "start_model_loading", "plain_mode"]

log = logging.getLogger("lipsync.app")

_engine: LipSync | None = None
_engine_lock = threading.Lock()
#: how the engine is made: set from the command line (``--checkpoint``, ``--device``, ``--precision``)
ENGINE_CONFIG: dict[str, str | None] = {"checkpoint": None, "s3fd": None, "device": None, "precision": None}


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
            _engine = LipSync(ENGINE_CONFIG.get("checkpoint"), device=device, precision=precision, s3fd=ENGINE_CONFIG.get("s3fd"))
        return _engine


def set_engine(engine: LipSync | None) -> None:
    """Use ``engine`` as this process's engine (None: make one again on the next use)."""
    global _engine
    with _engine_lock:
        _engine = engine


#: where the Generate tab's clips are made when not here: a cluster's workers (``app.py --ray``)
_clips = None


def set_clip_engine(clips) -> None:
    """Make the Generate tab's clips with ``clips`` (a :class:`~lipsync.cluster.clips.ClusterClips`; None: here)."""
    global _clips
    _clips = clips


def clip_engine():
    """What makes the Generate tab's clips: the cluster's workers where the app runs on one, else this process's
    engine (both have ``run`` and ``stream``)."""
    return _clips if _clips is not None else get_engine()


#: the model's state, shown on the page: loading starts in the background when the app starts
_model_state: dict[str, str] = {"state": "idle", "detail": "", "message": ""}
_model_lock = threading.Lock()


def plain_mode(generator) -> str:
    """What runs, in words a visitor understands: "fast CPU mode", "GPU", ..."""
    device = getattr(getattr(generator, "device", None), "type", "cpu")
    precision = getattr(generator, "precision", "fp32")
    if device == "cuda":
        return "GPU"
    if precision == "int8":
        return "fast CPU mode"
    return "CPU mode"


def start_model_loading() -> threading.Thread:
    """Load the model and the face detector on a background thread, so the first Generate does not wait."""

    def load() -> None:
        with _model_lock:
            _model_state.update(state="loading", detail="", message="")
        t0 = time.perf_counter()
        try:
            engine = get_engine().load()
            detail = f"{engine.generator.description}, face detector {engine.detector.name}"
            log.info("model ready: %s; loaded in %.1f s", detail, time.perf_counter() - t0)
            with _model_lock:
                _model_state.update(state="ready", detail=detail, message=plain_mode(engine.generator))
        except LipSyncError as e:
            log.warning("model not loaded at start-up: %s", e)
            with _model_lock:
                _model_state.update(state="error", detail=str(e), message=plain_message(e))
        except Exception as e:  # noqa: BLE001 - shown on the page; Generate tries again
            log.exception("model loading failed")
            with _model_lock:
                _model_state.update(state="error", detail=f"{type(e).__name__}: {e}", message="")

    thread = threading.Thread(target=load, name="lipsync-load", daemon=True)
    thread.start()
    return thread


def model_status() -> str:
    """One plain line for the page: is the model loading, ready, or missing (the details go to the log)."""
    if _clips is not None:  # the model runs on the cluster's machines
        state, message = _clips.status()
    else:
        with _model_lock:
            state, message = _model_state["state"], _model_state["message"]
    if state == "ready":
        return f"✅ **Ready:** {message}"
    if state == "loading":
        return "⏳ **Loading the lip-sync model…** You can prepare your photo and text meanwhile."
    if state == "error":
        reason = f" {message}" if message else " The details are in the server's log; Generate will try again."
        return f"⚠️ **The model could not be loaded.**{reason}"
    return "The model loads on the first Generate."


def model_loading() -> bool:
    if _clips is not None:
        return _clips.status()[0] == "loading"
    with _model_lock:
        return _model_state["state"] == "loading"
