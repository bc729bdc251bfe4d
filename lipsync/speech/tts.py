"""Voices: a catalogue of text-to-speech engines, and text -> :class:`~lipsync.media.audio.Speech`.

Every voice has an id ``<engine>:<name>``:

* ``coqui:vctk/<speaker>`` - the multi-speaker Coqui VITS model
  ``tts_models/en/vctk/vits``, a curated set of VCTK speakers labelled from
  the corpus' speaker metadata (gender, accent);
* ``coqui:ljspeech`` - the single-speaker Coqui VITS model ``tts_models/en/ljspeech/vits``;
* ``espeak:<voice>`` - espeak-ng (formant synthesis: robotic, but always
  there and offline), e.g. ``espeak:en-us``, ``espeak:en-gb``, ``espeak:en-us+f3``.

Coqui models are downloaded on first use by the TTS package itself
(:class:`TTS.utils.manage.ModelManager`) into its cache, ``$TTS_HOME/tts``
(default ``~/.local/share/tts``). A model already in that cache is available
offline; one that is not is available only when its download host answers.
Loaded models are kept once per process and shared between requests; a lock
serialises loading and another each model's inference.

Text is cleaned (:func:`clean_text`), split into sentences, synthesised
sentence by sentence and joined with :data:`SENTENCE_PAUSE_S` pauses (the
result's ``phrases`` say where each sentence is heard: captions are timed by
them); the
result is trimmed to short silent margins, peak-normalised to -1 dBFS
(:data:`lipsync.speech.post.PEAK_DBFS`) and dithered so it is never digital
silence. It keeps the voice's native sample rate (22050 Hz for the VITS
models and espeak-ng).

Nothing here imports torch or TTS until a Coqui voice is actually used.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import unicodedata
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..media.audio import Phrase, Speech
from .post import add_dither, normalize_peak, trim_silence
from ..errors import InputError, TextError, VoiceError
from ..proc import run
from ..weights import hub_url, offline_reason

__all__ = [
    "Voice",
    "list_voices",
    "get_voice",
    "default_voice",
    "usable_voice",
    "synthesize",
    "narrate",
    "clean_text",
    "split_sentences",
    "DEFAULT_MAX_CHARS",
    "FALLBACK_VOICE",
    "VCTK_SPEAKERS",
]

log = logging.getLogger("lipsync")

from ..options import MAX_CHARS as DEFAULT_MAX_CHARS  # the one home of the limit
SENTENCE_PAUSE_S = 0.35  #: silence between sentences
CLAUSE_PAUSE_S = 0.15  #: silence where an over-long sentence had to be split
LEAD_S = 0.15  #: silence before the first word
TAIL_S = 0.25  #: silence after the last word
_EDGE_S = (0.02, 0.05)  #: what trimming leaves around each sentence (onset, decay), part of the pauses
MAX_CHUNK_CHARS = 250  #: longer sentences are split at commas, then spaces
ESPEAK_SPEED_WPM = 160
ESPEAK_TIMEOUT_S = 60.0
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
class _CoquiModel:
    name: str  #: ModelManager name, e.g. tts_models/en/vctk/vits
    size: str  #: rough download size, for the note

    @property
    def folder(self) -> str:
        """The cache folder ModelManager uses: ``tts_models--en--vctk--vits``."""
        return self.name.replace("/", "--")


VCTK = _CoquiModel("tts_models/en/vctk/vits", "150 MB")
LJSPEECH = _CoquiModel("tts_models/en/ljspeech/vits", "150 MB")

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
class _Spec:
    id: str
    label: str
    engine: str
    language: str
    model: _CoquiModel | None = None
    speaker: str | None = None
    espeak_voice: str | None = None


def _accent(accent: str, region: str) -> str:
    return f"{accent} accent" + (f", {region}" if region else "")


def _catalogue() -> list[_Spec]:
    specs = [
        _Spec(
            "coqui:ljspeech",
            "Coqui VITS neural, English, female, American accent, LJSpeech",
            "coqui",
            "en-US",
            model=LJSPEECH,
        )
    ]
    for spk, (gender, accent, region) in VCTK_SPEAKERS.items():
        specs.append(
            _Spec(
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
            _Spec(
                f"espeak:{name}",
                f"espeak-ng formant (robotic), English, {gender}, {accent} accent",
                "espeak",
                lang,
                espeak_voice=name,
            )
        )
    return specs


_SPECS: dict[str, _Spec] = {s.id: s for s in _catalogue()}
#: best first: the order default_voice() prefers among available neural voices
_NEURAL_PREFERENCE = ("coqui:ljspeech", "coqui:vctk/p225", "coqui:vctk/p226")


# -- availability ------------------------------------------------------------------------


def _tts_home() -> Path:
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


def _model_dir(model: _CoquiModel) -> Path:
    return _tts_home() / model.folder


def _cached(model: _CoquiModel) -> bool | None:
    """True: complete in the cache; False: absent; None: a folder without its files."""
    d = _model_dir(model)
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


def _download_url(model: _CoquiModel) -> str:
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


def _offline_reason(model: _CoquiModel) -> str | None:
    """None when ``model`` could be downloaded now, else why not."""
    return offline_reason(_download_url(model))


def _espeak_exe() -> str | None:
    return os.environ.get("LIPSYNC_ESPEAK") or shutil.which("espeak-ng")


# models that failed to load: (name, cache dir) -> (when, reason)
_failures: dict[tuple[str, str], tuple[float, str]] = {}


def _coqui_status(model: _CoquiModel) -> tuple[bool, str | None, str | None]:
    """(available, reason, note) for a Coqui model."""
    if not _tts_installed():
        return False, "the Coqui TTS package is not installed (pip install coqui-tts)", None
    key = (model.name, str(_tts_home()))
    failed = _failures.get(key)
    if failed and time.monotonic() - failed[0] < FAILURE_TTL_S:
        return False, failed[1], None
    cached = _cached(model)
    if cached:
        return True, None, None
    d = _model_dir(model)
    if cached is None:
        return False, f"the cached model folder {d} is incomplete; delete it so it can be downloaded again", None
    offline = _offline_reason(model)
    if offline:
        return False, f"the model {model.name} is not in the TTS cache ({d}) and cannot be downloaded: {offline}", None
    return True, None, f"downloads about {model.size} into {d} on first use"


def _status(spec: _Spec, coqui: dict[str, tuple[bool, str | None, str | None]]) -> Voice:
    if spec.engine == "coqui":
        assert spec.model is not None
        if spec.model.name not in coqui:
            coqui[spec.model.name] = _coqui_status(spec.model)
        available, reason, note = coqui[spec.model.name]
    else:
        exe = _espeak_exe()
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


def _lookup(voice_id: str) -> _Spec:
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
    return _status(_lookup(voice_id), {})


def _is_default(voice_id: str | None) -> bool:
    return voice_id is None or (isinstance(voice_id, str) and voice_id.strip().lower() in ("", "default"))


def usable_voice(voice_id: str | None) -> Voice:
    """The voice to use for ``voice_id``: :func:`default_voice` for None (or
    ``""``/``"default"``), else :func:`get_voice`, refusing one that cannot be
    used here.

    Raises:
        VoiceError: unknown id, or not available (the message gives the reason
            and points to the list and to the offline espeak-ng voices).
    """
    if _is_default(voice_id):
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


# -- text ----------------------------------------------------------------------------------


def _is_emoji_part(ch: str, cat: str) -> bool:
    cp = ord(ch)
    return (
        cat in ("So", "Sk")  # pictographs, dingbats, emoji, skin-tone modifiers
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F1E6 <= cp <= 0x1F1FF  # regional indicators (flags)
        or cp == 0x20E3  # combining keycap
    )


#: terminal escape sequences (colours, cursor moves): removed whole, not just their ESC
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def clean_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Normalise ``text`` for speaking and check it.

    Unicode NFKC; line breaks, tabs and other whitespace become single spaces;
    control and format characters (NUL, escape, zero-width, bidi overrides)
    are removed, and so are terminal escape sequences; emoji and pictographs
    are dropped (they are not spoken).

    Args:
        text: what the portrait should say.
        max_chars: the longest accepted cleaned text (default 1,000 characters).

    Returns:
        The cleaned text, at most ``max_chars`` characters.

    Raises:
        TextError: not a string, empty, nothing pronounceable (only
            punctuation, symbols or emoji), or longer than ``max_chars``.
        InputError: ``max_chars`` is not a positive whole number.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise InputError(f"max_chars must be a positive whole number, got {max_chars!r}.")
    if not isinstance(text, str):
        raise TextError(f"The text must be a string, got {type(text).__name__}.")

    def too_long(n: int) -> TextError:
        return TextError(
            f"The text is {n:,} characters long; the limit is {max_chars:,}. "
            "Shorten it or split it into several videos."
        )

    if len(text) > 4 * max_chars + 1000:  # refuse megabytes before looking at them
        raise too_long(len(text))
    out = []
    for ch in unicodedata.normalize("NFKC", _ANSI_ESCAPE.sub("", text)):
        cat = unicodedata.category(ch)
        if ch.isspace() or cat in ("Zs", "Zl", "Zp"):
            out.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue  # control, format (zero-width, bidi), surrogate, private, unassigned
        elif _is_emoji_part(ch, cat):
            out.append(" ")
        else:
            out.append(ch)
    cleaned = re.sub(r" {2,}", " ", "".join(out)).strip()
    if not cleaned:
        raise TextError("The text is empty. Type the words the portrait should say.")
    if not any(c.isalnum() for c in cleaned):
        raise TextError(
            "The text has nothing to pronounce: it holds only punctuation, symbols or emoji. "
            "Type the words the portrait should say."
        )
    if len(cleaned) > max_chars:
        raise too_long(len(cleaned))
    return cleaned


_SENTENCE_END = re.compile(r"(?<=[.!?…;])[\"'”’)\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,:–—])\s+")


def _split_long(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence]
    parts: list[str] = []
    for clause in _CLAUSE_END.split(sentence):
        while len(clause) > limit:  # no comma: break at the last space that fits
            cut = clause.rfind(" ", 0, limit)
            cut = cut if cut > limit // 3 else limit
            parts.append(clause[:cut].strip())
            clause = clause[cut:].strip()
        if parts and len(parts[-1]) + 1 + len(clause) <= limit:
            parts[-1] = f"{parts[-1]} {clause}"
        elif clause:
            parts.append(clause)
    return parts


def split_sentences(text: str, max_chunk: int = MAX_CHUNK_CHARS) -> list[tuple[str, float]]:
    """Split cleaned text into chunks to synthesise: [(chunk, pause after it in seconds)].

    Sentences end at ``. ! ? … ;``; a sentence longer than ``max_chunk`` is
    split at commas (then spaces) with shorter pauses. Chunks with nothing to
    pronounce (a stray "...") are dropped.
    """
    chunks: list[tuple[str, float]] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        pieces = _split_long(sentence, max_chunk)
        for i, piece in enumerate(pieces):
            if any(c.isalnum() for c in piece):
                chunks.append((piece, CLAUSE_PAUSE_S if i < len(pieces) - 1 else SENTENCE_PAUSE_S))
    return chunks


# -- engines -------------------------------------------------------------------------------


class _Loaded:
    """A Coqui model loaded once per process (and TTS cache)."""

    def __init__(self, tts, sample_rate: int, speakers: list[str]):
        self.tts = tts
        self.sample_rate = sample_rate
        self.speakers = speakers
        self.lock = threading.Lock()  # one inference at a time per model


_models: dict[tuple[str, str], _Loaded] = {}
_load_lock = threading.Lock()


def _load_coqui(model: _CoquiModel) -> _Loaded:
    """Load (downloading first if needed, through ModelManager) and cache ``model``.

    Raises:
        VoiceError: the package, the model or the network is missing, or loading failed.
    """
    key = (model.name, str(_tts_home()))
    with _load_lock:
        loaded = _models.get(key)
        if loaded is not None:
            return loaded
        available, reason, note = _coqui_status(model)
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
            reason = f"it could not be loaded from {_model_dir(model)} ({type(e).__name__}: {msg})"
            _failures[key] = (time.monotonic(), reason)
            raise VoiceError(f"The Coqui model {model.name} cannot be used: {reason}.") from None
        _failures.pop(key, None)
        loaded = _models[key] = _Loaded(tts, rate, speakers)
        log.info("Coqui model %s loaded in %.1f s (%d Hz)", model.name, time.perf_counter() - t0, rate)
        return loaded


def _coqui_chunks(spec: _Spec, chunks: list[tuple[str, float]]) -> tuple[list[np.ndarray], int]:
    import torch

    assert spec.model is not None
    m = _load_coqui(spec.model)
    if spec.speaker is not None and spec.speaker not in m.speakers:
        raise VoiceError(
            f"The voice {spec.id} is not in the model {spec.model.name} "
            f"(found {len(m.speakers)} speakers in {_model_dir(spec.model)}). {LIST_HINT}"
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


def _espeak_chunks(spec: _Spec, chunks: list[tuple[str, float]]) -> tuple[list[np.ndarray], int]:
    """One espeak-ng run per chunk: the text goes in a file (``-f``), never on the command line."""
    import soundfile as sf

    exe = _espeak_exe()
    if exe is None:
        raise VoiceError("espeak-ng is not installed (apt-get install espeak-ng, brew install espeak-ng).")
    assert spec.espeak_voice is not None
    work = Path(tempfile.mkdtemp(prefix="lipsync-tts-"))
    try:
        wavs, rate = [], 22050
        for i, (text, _pause) in enumerate(chunks):
            txt, wav = work / f"{i}.txt", work / f"{i}.wav"
            txt.write_text(text, encoding="utf-8")
            # -b 1: the file is UTF-8; the voice name comes from the catalogue, never from the user
            args = [exe, "-b", "1", "-v", spec.espeak_voice, "-s", str(ESPEAK_SPEED_WPM)]
            args += ["-w", str(wav), "-f", str(txt)]
            run(args, timeout=ESPEAK_TIMEOUT_S, what="espeak-ng", error=VoiceError)
            try:
                data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
            except Exception as e:  # noqa: BLE001 - empty or truncated output
                raise VoiceError(f"espeak-ng wrote no usable audio ({e}).") from None
            wavs.append(data.mean(axis=1))
        return wavs, int(rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _speak(text: str, spec: _Spec) -> Speech:
    chunks = split_sentences(text)
    if not chunks:
        raise TextError("The text has nothing to pronounce. Type the words the portrait should say.")
    engine = _coqui_chunks if spec.engine == "coqui" else _espeak_chunks
    wavs, rate = engine(spec, chunks)
    lead, tail = _EDGE_S

    def gap(seconds: float) -> np.ndarray:
        return np.zeros(int(round(max(0.0, seconds - lead - tail) * rate)), np.float32)

    pieces = [gap(LEAD_S + tail)]
    at = pieces[0].size  # where the next piece starts, in samples
    spans: list[tuple[str, int, int]] = []  # (chunk, first sample, end sample) of each spoken chunk
    for wav, (chunk, pause) in zip(wavs, chunks):
        tight = trim_silence(wav, rate, lead_s=lead, tail_s=tail)
        if tight.size == 0:
            continue
        spans.append((chunk, at, at + tight.size))
        pause_samples = gap(pause)
        pieces += [tight, pause_samples]
        at += tight.size + pause_samples.size
    if not spans:
        raise VoiceError(f"The voice {spec.id} produced no audio for this text.")
    pieces[-1] = gap(TAIL_S + lead)  # the last pause becomes the tail
    samples = normalize_peak(np.concatenate(pieces))
    samples = add_dither(samples, seed=zlib.crc32(text.encode()))
    # each chunk is heard from the start to the end of its trimmed audio (its short margins included)
    phrases = tuple(Phrase(chunk, start / rate, end / rate) for chunk, start, end in spans)
    return Speech(samples, rate, phrases)


def narrate(text: str, voice_id: str | None = None, *, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[Speech, Voice]:
    """Like :func:`synthesize`, and also return the voice that actually spoke.

    With ``voice_id=None`` the :func:`default_voice` is used; if that neural
    voice then fails to load (a download error, a corrupt cache), a warning is
    logged and :data:`FALLBACK_VOICE` speaks instead.
    """
    cleaned = clean_text(text, max_chars)
    voice = usable_voice(voice_id)
    try:
        return _speak(cleaned, _SPECS[voice.id]), voice
    except VoiceError as e:
        if not _is_default(voice_id) or voice.engine != "coqui":
            raise
        fallback = get_voice(FALLBACK_VOICE)
        if not fallback.available:
            raise
        message = f"The default voice {voice.id} failed ({e}); using {FALLBACK_VOICE} (espeak-ng) instead."
        log.warning("%s", message)
        fallback = replace(fallback, note=message)
        return _speak(cleaned, _SPECS[fallback.id]), fallback


def synthesize(text: str, voice_id: str | None = None, *, max_chars: int = DEFAULT_MAX_CHARS) -> Speech:
    """Speak ``text`` with a voice of the catalogue.

    Args:
        text: what to say; cleaned and checked by :func:`clean_text`.
        voice_id: a catalogue id (``python -m lipsync voices``); None = :func:`default_voice`.
        max_chars: the text length limit.

    Returns:
        :class:`Speech` at the voice's native rate (22050 Hz for VITS and
        espeak-ng): float32 mono, peak -1 dBFS, short silent margins, dithered;
        its ``phrases`` hold each sentence (or clause of a long one) with the
        time it is heard, in seconds from the start.

    Raises:
        TextError: empty, unpronounceable or too long text.
        VoiceError: unknown voice, or the voice cannot be used here (the message says why).
    """
    return narrate(text, voice_id, max_chars=max_chars)[0]
