"""The Coqui TTS engine: VITS models loaded once per process and shared between requests.

Models are downloaded on first use by the TTS package itself
(:class:`TTS.utils.manage.ModelManager`) into its cache (see
:mod:`.catalogue`). Locks, one per resource:

* the registry lock guards only the table of models; it is held for
  dictionary look-ups, never for I/O;
* each model has its own load lock, held while that model is downloaded
  and loaded: a request for another model, or for the voice list, does not
  wait for it, and two requests for the same model load it once;
* each loaded model has its own inference lock (one synthesis at a time per model).

Nothing here imports torch or TTS until a Coqui voice is actually used.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib

import numpy as np

from ..errors import VoiceError
from .catalogue import (
    LIST_HINT,
    CoquiModel,
    VoiceSpec,
    cache_key,
    clear_failure,
    coqui_status,
    model_dir,
    note_failure,
)

__all__ = ["load_model", "coqui_chunks", "loaded_model"]

log = logging.getLogger("lipsync")


class _Loaded:
    """A Coqui model loaded once per process (and TTS cache)."""

    def __init__(self, tts, sample_rate: int, speakers: list[str]):
        self.tts = tts
        self.sample_rate = sample_rate
        self.speakers = speakers
        self.lock = threading.Lock()  # one inference at a time per model


_Key = tuple[str, str]  # (model name, TTS cache folder): catalogue.cache_key

_models: dict[_Key, _Loaded] = {}  #: loaded models
_load_locks: dict[_Key, threading.Lock] = {}  #: one per model, held while it loads
_registry_lock = threading.Lock()  #: guards the two tables above; never held during I/O


def loaded_model(model: CoquiModel) -> _Loaded | None:
    """The loaded ``model`` (for the current TTS cache), or None when it is not loaded."""
    with _registry_lock:
        return _models.get(cache_key(model))


def load_model(model: CoquiModel) -> _Loaded:
    """Load (downloading first if needed, through ModelManager) and keep ``model``.

    Only this model's own lock is held while it loads.

    Raises:
        VoiceError: the package, the model or the network is missing, or loading failed.
    """
    key = cache_key(model)
    with _registry_lock:
        loaded = _models.get(key)
        if loaded is not None:
            return loaded
        model_lock = _load_locks.setdefault(key, threading.Lock())
    with model_lock:
        with _registry_lock:
            loaded = _models.get(key)  # loaded by the request we waited for
        if loaded is not None:
            return loaded
        loaded = _load(model, key)
        with _registry_lock:
            _models[key] = loaded
        return loaded


def _load(model: CoquiModel, key: _Key) -> _Loaded:
    available, reason, note = coqui_status(model)
    if not available:
        raise VoiceError(f"The Coqui model {model.name} cannot be used: {reason}.")
    if note:
        log.warning("Coqui model %s: %s", model.name, note)
    t0 = time.perf_counter()
    try:
        from TTS.api import TTS
    except Exception as e:  # noqa: BLE001 - broken install (torch, torchcodec...)
        raise VoiceError(f"The Coqui TTS package cannot be imported ({type(e).__name__}: {e}).") from None
    try:
        tts = TTS(model.name, progress_bar=False)  # ModelManager: cache, else download
        synth = tts.synthesizer
        speakers = list(tts.speakers or []) if tts.is_multi_speaker else []
        rate = int(synth.output_sample_rate)
    except Exception as e:  # noqa: BLE001 - network, corrupt file, bad config...
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        reason = f"it could not be loaded from {model_dir(model)} ({type(e).__name__}: {msg})"
        note_failure(key, reason)
        raise VoiceError(f"The Coqui model {model.name} cannot be used: {reason}.") from None
    clear_failure(key)
    log.info("Coqui model %s loaded in %.1f s (%d Hz)", model.name, time.perf_counter() - t0, rate)
    return _Loaded(tts, rate, speakers)


def coqui_chunks(spec: VoiceSpec, chunks: list[tuple[str, float]]) -> tuple[list[np.ndarray], int]:
    """Each chunk spoken by the Coqui voice ``spec``: (mono float32 waves, sample rate)."""
    import torch

    assert spec.model is not None
    m = load_model(spec.model)
    if spec.speaker is not None and spec.speaker not in m.speakers:
        raise VoiceError(
            f"The voice {spec.id} is not in the model {spec.model.name} "
            f"(found {len(m.speakers)} speakers in {model_dir(spec.model)}). {LIST_HINT}"
        )
    wavs = []
    with m.lock, torch.inference_mode():
        for text, _pause in chunks:
            # VITS samples noise: a seed per sentence makes a narration reproducible
            # without touching the process's random state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(zlib.crc32(f"{spec.id}|{text}".encode()))
                wav = m.tts.tts(text, speaker=spec.speaker, split_sentences=False)
            wavs.append(np.nan_to_num(np.asarray(wav, np.float32).reshape(-1)))
    return wavs, m.sample_rate
