"""The voice list, the line about the chosen voice, and voice samples.

Also the process's folder for small shared files (voice samples, the empty
captions file), removed at exit. Locks are per resource and short: making a
sample (which may download a voice) holds only that voice's lock, never the one
a Generate takes for the shared folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr

from lipsync import LipSyncError
from lipsync.speech import tts

from .messages import plain_message

__all__ = [
    "VOICE_SAMPLE_TEXT", "voice_choices", "voice_info", "refresh_voices", "voice_sample", "voice_label",
    "process_dir", "no_captions", "remove_process_dir",
]

log = logging.getLogger("lipsync.app")

VOICE_SAMPLE_TEXT = "Hello! This is how I sound. Type your own words and press Generate."


def voice_choices() -> tuple[list[tuple[str, str]], str | None]:
    """Dropdown choices (label, id), unavailable voices included and marked, and the default id."""
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
        elif v.note:
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
    if not voice_id:
        return ""
    try:
        v = tts.get_voice(voice_id)
    except LipSyncError as e:
        return f"⚠️ {plain_message(e)}"
    if not v.available:
        return f"⚠️ This voice cannot be used here: {v.reason}. Pick another one."
    return f"ℹ️ {v.note}" if v.note else ""


def refresh_voices(current: str | None = None):
    """The voice list as it is now (a model downloaded or a network lost since start-up): for page loads."""
    choices, default = voice_choices()
    ids = [v for _, v in choices]
    value = current if current in ids else default
    return gr.Dropdown(choices=choices, value=value), voice_info(value)


def voice_label(voice_id: str | None) -> str:
    if not voice_id:
        return "-"
    try:
        return tts.get_voice(voice_id).label
    except Exception:  # noqa: BLE001
        return voice_id


# ----------------------------------------------------------------------------- the process's small files

_process_folder: Path | None = None
_folder_lock = threading.Lock()  # only for making the folder: nothing slow runs under it


def process_dir() -> Path:
    """A folder for this process's small files (voice samples, the empty captions file), removed at exit."""
    global _process_folder
    with _folder_lock:
        if _process_folder is None:
            _process_folder = Path(tempfile.mkdtemp(prefix="lipsync-app-files-"))
        return _process_folder


def remove_process_dir() -> None:
    global _process_folder
    with _folder_lock:
        if _process_folder is not None:
            shutil.rmtree(_process_folder, ignore_errors=True)
            _process_folder = None


def no_captions() -> str:
    """An empty WebVTT file.

    Gradio keeps a video component's ``subtitles`` in the session and checks the
    file again on every later update of that component; an update with
    ``subtitles=None`` leaves the old value in place. So every update names a
    file that exists: this one when there are no captions (yet).
    """
    path = process_dir() / "no-captions.vtt"
    if not path.is_file():
        tmp = path.with_suffix(f".{threading.get_ident()}.part")
        tmp.write_text("WEBVTT\n", "utf-8")
        os.replace(tmp, path)
    return str(path)


_sample_locks: dict[str, threading.Lock] = {}
_sample_locks_lock = threading.Lock()  # the registry of per-voice locks: no I/O under it


def _sample_lock(voice_id: str) -> threading.Lock:
    with _sample_locks_lock:
        return _sample_locks.setdefault(voice_id, threading.Lock())


def voice_sample(voice_id: str | None) -> str:
    """A short sample of the voice, as a wav file (made once per voice and kept for the process).

    Only this voice's lock is held while it is synthesised (which may download
    the voice): other samples and every Generate go on meanwhile.
    """
    from lipsync import synthesize
    from lipsync.media.encode import write_wav

    if not voice_id:
        raise gr.Error("Pick a voice first.", print_exception=False)
    name = "voice-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in voice_id) + ".wav"
    path = process_dir() / name
    with _sample_lock(voice_id):  # two clicks on one voice make one sample
        if path.is_file():
            return str(path)
        try:
            speech = synthesize(VOICE_SAMPLE_TEXT, voice_id)
        except LipSyncError as e:
            log.info("no voice sample for %s: %s", voice_id, e)
            raise gr.Error(plain_message(e), print_exception=False) from None
        tmp = path.with_suffix(".part.wav")
        write_wav(tmp, speech.samples, speech.sample_rate)
        os.replace(tmp, path)
        return str(path)
