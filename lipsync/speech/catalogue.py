"""The voice catalogue: every voice's id and label, and whether it can be used on this machine now.

Every voice has an id ``<engine>:<name>``:

* ``coqui:vctk/<speaker>`` - the multi-speaker Coqui VITS model
  ``tts_models/en/vctk/vits``, a curated set of VCTK speakers labelled from
  the corpus' speaker metadata (gender, accent);
* ``coqui:ljspeech`` - the single-speaker Coqui VITS model ``tts_models/en/ljspeech/vits``;
* ``espeak:<voice>`` - espeak-ng (formant synthesis: robotic, but always
  there and offline), e.g. ``espeak:en-us``, ``espeak:en-gb``, ``espeak:en-us+f3``.

A Coqui model is available when it is complete in the TTS package's cache
(``$TTS_HOME/tts``), or when its download host answers. Nothing here loads
a model or imports torch or TTS.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import VoiceError
from ..weights import hub_url, offline_reason
from .espeak import espeak_exe

__all__ = [
    "Voice",
    "list_voices",
    "get_voice",
    "default_voice",
    "usable_voice",
    "FALLBACK_VOICE",
    "VCTK_SPEAKERS",
    "VCTK",
    "LJSPEECH",
    "LIST_HINT",
    "VoiceSpec",
    "CoquiModel",
    "spec_of",
    "is_default",
    "tts_home",
    "model_dir",
    "cache_key",
    "coqui_status",
    "note_failure",
    "clear_failure",
]

log = logging.getLogger("lipsync")

FAILURE_TTL_S = 300.0  #: a model that failed to load is not retried for this long
FALLBACK_VOICE = "espeak:en-us"  #: used when no neural voice can be had
LIST_HINT = "Run `python -m lipsync voices` to list them."


@dataclass(frozen=True)
class Voice:
    """One voice of the catalogue, with whether it can be used on this machine.

    Attributes:
        id: ``<engine>:<name>``, e.g. ``coqui:vctk/p225`` or ``espeak:en-us``.
        label: for people: engine, language, gender, accent.
        engine: ``coqui`` or ``espeak``.
        language: BCP 47 tag (``en``, ``en-US``, ``en-GB``).
        available: it can be used now (Coqui: cached, or downloadable).
        reason: why it is not available (None when it is).
        note: anything else worth telling (a download on first use, or why
            the default fell back to espeak-ng).
    """

    id: str
    label: str
    engine: str
    language: str
    available: bool = True
    reason: str | None = None
    note: str | None = None


# -- the catalogue ----------------------------------------------------------------------


@dataclass(frozen=True)
class CoquiModel:
    """A Coqui TTS model of the catalogue (:data:`VCTK`, :data:`LJSPEECH`)."""

    name: str  #: ModelManager name, e.g. tts_models/en/vctk/vits
    size: str  #: rough download size, for the note

    @property
    def folder(self) -> str:
        """The cache folder ModelManager uses: ``tts_models--en--vctk--vits``."""
        return self.name.replace("/", "--")


VCTK = CoquiModel("tts_models/en/vctk/vits", "150 MB")
LJSPEECH = CoquiModel("tts_models/en/ljspeech/vits", "150 MB")

#: Curated VCTK speakers: id -> (gender, accent, region), from the corpus' speaker-info.txt.
VCTK_SPEAKERS: dict[str, tuple[str, str, str]] = {
    "p225": ("female", "English", "Southern England"),
    "p226": ("male", "English", "Surrey"),
    "p243": ("male", "English", "London"),
    "p253": ("female", "Welsh", "Cardiff"),
    "p294": ("female", "American", "San Francisco"),
    "p301": ("female", "American", "North Carolina"),
    "p311": ("male", "American", "Iowa"),
    "p334": ("male", "American", "Chicago"),
    "p248": ("female", "Indian", ""),
    "p376": ("male", "Indian", ""),
}


@dataclass(frozen=True)
class VoiceSpec:
    """How a voice of the catalogue is spoken: what its engine needs (see :func:`spec_of`).

    Attributes:
        id, label, engine, language: as in :class:`Voice`.
        model: the Coqui model (Coqui voices).
        speaker: the speaker in a multi-speaker Coqui model (VCTK voices).
        espeak_voice: the espeak-ng voice name (espeak-ng voices).
    """

    id: str
    label: str
    engine: str
    language: str
    model: CoquiModel | None = None
    speaker: str | None = None
    espeak_voice: str | None = None


def _accent(accent: str, region: str) -> str:
    return f"{accent} accent" + (f", {region}" if region else "")


def _catalogue() -> list[VoiceSpec]:
    specs = [
        VoiceSpec(
            "coqui:ljspeech",
            "Coqui VITS neural, English, female, American accent, LJSpeech",
            "coqui",
            "en-US",
            model=LJSPEECH,
        )
    ]
    for spk, (gender, accent, region) in VCTK_SPEAKERS.items():
        specs.append(
            VoiceSpec(
                f"coqui:vctk/{spk}",
                f"Coqui VITS neural, English, {gender}, {_accent(accent, region)}, VCTK speaker {spk}",
                "coqui",
                "en",
                model=VCTK,
                speaker=spk,
            )
        )
    for name, lang, gender, accent in (
        ("en-us", "en-US", "male", "American"),
        ("en-us+f3", "en-US", "female", "American"),
        ("en-gb", "en-GB", "male", "British"),
        ("en-gb+f3", "en-GB", "female", "British"),
        ("en-gb-x-rp", "en-GB", "male", "British Received Pronunciation"),
        ("en-gb-scotland", "en-GB", "male", "Scottish"),
    ):
        specs.append(
            VoiceSpec(
                f"espeak:{name}",
                f"espeak-ng formant (robotic), English, {gender}, {accent} accent",
                "espeak",
                lang,
                espeak_voice=name,
            )
        )
    return specs


_SPECS: dict[str, VoiceSpec] = {s.id: s for s in _catalogue()}
#: best first: the order default_voice() prefers among available neural voices
_NEURAL_PREFERENCE = ("coqui:ljspeech", "coqui:vctk/p225", "coqui:vctk/p226")


# -- availability ------------------------------------------------------------------------


def tts_home() -> Path:
    """The TTS package's model cache, as :func:`trainer.io.get_user_data_dir` computes it."""
    for var in ("TTS_HOME", "XDG_DATA_HOME"):
        value = os.environ.get(var)
        if value:
            return Path(value).expanduser().resolve(strict=False) / "tts"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "tts"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "tts"
    return Path.home() / ".local" / "share" / "tts"


def model_dir(model: CoquiModel) -> Path:
    """The folder of ``model`` in the TTS package's cache (:func:`tts_home`)."""
    return tts_home() / model.folder


def cache_key(model: CoquiModel) -> tuple[str, str]:
    """(model name, TTS cache folder): one model in one cache, the key its load and its failures are kept by."""
    return (model.name, str(tts_home()))


def _cached(model: CoquiModel) -> bool | None:
    """True: complete in the cache; False: absent; None: a folder without its files."""
    d = model_dir(model)
    if not d.is_dir():
        return False
    has_config = (d / "config.json").is_file()
    has_weights = any(d.glob("*.pth")) or any(d.glob("*.pth.tar"))
    return True if has_config and has_weights else None


def _tts_installed() -> bool:
    try:
        return importlib.util.find_spec("TTS") is not None
    except (ImportError, ValueError):  # pragma: no cover
        return False


def _download_url(model: CoquiModel) -> str:
    """Where ModelManager will fetch ``model`` from (read from the package's .models.json)."""
    url = "https://github.com"
    try:
        spec = importlib.util.find_spec("TTS")
        root = Path(next(iter(spec.submodule_search_locations)))  # type: ignore[union-attr]
        models = json.loads((root / ".models.json").read_text(encoding="utf-8"))
        _, lang, dataset, name = model.name.split("/")
        item = models["tts_models"][lang][dataset][name]
        if "repo_id" in item:
            url = hub_url()
        elif item.get("github_rls_url"):
            u = item["github_rls_url"]
            url = u[0] if isinstance(u, list) else u
    except Exception:  # noqa: BLE001 - fall back to GitHub, where the VITS models live
        pass
    return url


def _offline_reason(model: CoquiModel) -> str | None:
    """None when ``model`` could be downloaded now, else why not."""
    return offline_reason(_download_url(model))


#: models that failed to load: :func:`cache_key` -> (when, reason); see :func:`note_failure`
_failures: dict[tuple[str, str], tuple[float, str]] = {}


def note_failure(key: tuple[str, str], reason: str) -> None:
    """Remember that the model ``key`` (:func:`cache_key`) failed to load, and why.

    For :data:`FAILURE_TTL_S` seconds its voices are listed as unavailable with ``reason``
    and not tried again (the engine, :mod:`.coqui`, calls this).
    """
    _failures[key] = (time.monotonic(), reason)


def clear_failure(key: tuple[str, str]) -> None:
    """Forget a failure of the model ``key`` (:func:`cache_key`): it loaded after all."""
    _failures.pop(key, None)


def coqui_status(model: CoquiModel) -> tuple[bool, str | None, str | None]:
    """(available, reason, note) for a Coqui model: as :class:`Voice` says them for its voices."""
    if not _tts_installed():
        return False, "the Coqui TTS package is not installed (pip install coqui-tts)", None
    failed = _failures.get(cache_key(model))
    if failed and time.monotonic() - failed[0] < FAILURE_TTL_S:
        return False, failed[1], None
    cached = _cached(model)
    if cached:
        return True, None, None
    d = model_dir(model)
    if cached is None:
        return False, f"the cached model folder {d} is incomplete; delete it so it can be downloaded again", None
    offline = _offline_reason(model)
    if offline:
        return False, f"the model {model.name} is not in the TTS cache ({d}) and cannot be downloaded: {offline}", None
    return True, None, f"downloads about {model.size} into {d} on first use"


def _status(spec: VoiceSpec, coqui: dict[str, tuple[bool, str | None, str | None]]) -> Voice:
    if spec.engine == "coqui":
        assert spec.model is not None
        if spec.model.name not in coqui:
            coqui[spec.model.name] = coqui_status(spec.model)
        available, reason, note = coqui[spec.model.name]
    else:
        exe = espeak_exe()
        available, note = exe is not None, None
        reason = None if exe else "espeak-ng is not installed (apt-get install espeak-ng, brew install espeak-ng)"
    return Voice(spec.id, spec.label, spec.engine, spec.language, available, reason, note)


def list_voices() -> list[Voice]:
    """Every voice of the catalogue, with its availability on this machine now.

    Neural (Coqui) voices come first, then espeak-ng. Cheap: no model is
    loaded; at most one short TCP connect checks whether a missing model could
    be downloaded (remembered for five minutes).
    """
    coqui: dict[str, tuple[bool, str | None, str | None]] = {}
    return [_status(s, coqui) for s in _SPECS.values()]


def spec_of(voice_id: str) -> VoiceSpec:
    """How the voice ``voice_id`` (case-insensitive) is spoken.

    Raises:
        VoiceError: no id, or an unknown one; the message says how to list the valid ones.
    """
    if not isinstance(voice_id, str) or not voice_id.strip():
        raise VoiceError(f"No voice was given. {LIST_HINT}")
    key = voice_id.strip().lower()
    spec = _SPECS.get(key)
    if spec is None:
        shown = voice_id.strip()[:60]
        raise VoiceError(f"Unknown voice {shown!r}. {LIST_HINT}")
    return spec


def get_voice(voice_id: str) -> Voice:
    """The catalogue entry for ``voice_id`` (case-insensitive), with its availability.

    Raises:
        VoiceError: unknown id; the message says how to list the valid ones.
    """
    return _status(spec_of(voice_id), {})


def is_default(voice_id: str | None) -> bool:
    """Whether ``voice_id`` asks for :func:`default_voice`: None, ``""`` or ``"default"``."""
    return voice_id is None or (isinstance(voice_id, str) and voice_id.strip().lower() in ("", "default"))


def usable_voice(voice_id: str | None) -> Voice:
    """The voice to use for ``voice_id``: :func:`default_voice` for None (or
    ``""``/``"default"``), else :func:`get_voice`, refusing one that cannot be
    used here.

    Raises:
        VoiceError: unknown id, or not available (the message gives the reason
            and points to the list and to the offline espeak-ng voices).
    """
    if is_default(voice_id):
        return default_voice()
    voice = get_voice(voice_id)  # type: ignore[arg-type]
    if not voice.available:
        raise VoiceError(
            f"The voice {voice.id} cannot be used here: {voice.reason}. {LIST_HINT} "
            f"The espeak-ng voices (e.g. {FALLBACK_VOICE}) work offline."
        )
    return voice


_warned: set[str] = set()


def default_voice() -> Voice:
    """The best available neural voice, else :data:`FALLBACK_VOICE` (espeak-ng).

    A Coqui model already in the cache wins over one that must be downloaded.
    When the fallback is used, a warning is logged (once per reason) and the
    returned Voice's ``note`` says why the neural voices are missing.
    """
    voices = {v.id: v for v in list_voices()}
    neural = [voices[i] for i in _NEURAL_PREFERENCE] + [
        v for v in voices.values() if v.engine == "coqui" and v.id not in _NEURAL_PREFERENCE
    ]
    usable = [v for v in neural if v.available]
    cached = [v for v in usable if v.note is None]  # a note means: downloads first
    if cached or usable:
        return (cached or usable)[0]
    reasons = sorted({v.reason for v in neural if v.reason})
    why = "; ".join(reasons) or "no neural voice is configured"
    fallback = voices[FALLBACK_VOICE]
    if not fallback.available:
        raise VoiceError(f"No voice can be used on this machine: {fallback.reason}; neural voices: {why}.")
    message = f"Neural voices are unavailable ({why}); using {FALLBACK_VOICE} (espeak-ng) instead."
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)
    return replace(fallback, note=message)
