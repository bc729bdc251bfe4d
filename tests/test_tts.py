"""Voices and text -> speech (lipsync.speech.tts), and length fitting (lipsync.speech.post.fit_length).

Everything runs offline: espeak-ng is the real binary; the Coqui path runs the
TTS package's own loading code (ModelManager, Synthesizer) on a small randomly
initialised VITS saved where a downloaded ``tts_models/en/vctk/vits`` lives.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import ffprobe
from lipsync import features, weights
from lipsync.media.audio import Speech, resample
from lipsync.speech import activity, catalogue, coqui as coqui_engine, espeak, post, tts
from lipsync.speech.post import fit_length
from lipsync.errors import InputError, TextError, VoiceError

SR = 22050
TINY = dict(
    hidden_channels=8,
    hidden_channels_ffn_text_encoder=16,
    num_layers_text_encoder=1,
    num_layers_posterior_encoder=1,
    num_layers_flow=1,
    upsample_initial_channel_decoder=16,
    resblock_type_decoder="2",
    resblock_kernel_sizes_decoder=[3],
    resblock_dilation_sizes_decoder=[[1, 3]],
    speaker_embedding_channels=8,
    use_sdp=False,
)


def build_random_vits(tts_home: Path, speakers: list[str], *, size: str = "tiny", seed: int = 0) -> Path:
    """Save a randomly initialised multi-speaker VITS as a downloaded ``tts_models/en/vctk/vits``.

    The folder is the one :class:`TTS.utils.manage.ModelManager` uses
    (``$TTS_HOME/tts/tts_models--en--vctk--vits``) with the files the released
    zip has: ``config.json``, ``model_file.pth`` and ``speaker_ids.json``.
    ``size="full"`` keeps the default (released) VITS architecture.
    """
    import torch
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    out = Path(tts_home) / "tts" / tts.VCTK.folder
    out.mkdir(parents=True, exist_ok=True)
    (out / "speaker_ids.json").write_text(json.dumps({s: i for i, s in enumerate(speakers)}))
    args = VitsArgs(
        use_speaker_embedding=True,
        speakers_file="speaker_ids.json",  # relative, as in a release: ModelManager rewrites it
        init_discriminator=False,
        **(TINY if size == "tiny" else {}),
    )
    config = VitsConfig(
        model_args=args, use_phonemes=True, phonemizer="espeak", phoneme_language="en", text_cleaner="english_cleaners"
    )
    cwd = os.getcwd()
    os.chdir(out)  # the speaker manager reads speakers_file relative to here
    try:
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # init_from_config's deprecation notice
            model = Vits.init_from_config(config)
    finally:
        os.chdir(cwd)
    torch.save({"model": model.state_dict()}, out / "model_file.pth")
    model.config.save_json(str(out / "config.json"))
    return out


#: why a Coqui voice is unavailable with an empty model cache: the model is not there, or
#: (an install without the [tts] extra) the package is not
_MISSING_MODEL = "not in the TTS cache" if catalogue._tts_installed() else "package is not installed"


def tone(seconds: float, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), np.float32)


def lead_tail(s: Speech) -> tuple[float, float]:
    start, end = activity.active_range(s.samples, s.sample_rate)
    return start / s.sample_rate, (len(s.samples) - end) / s.sample_rate


# -- text ----------------------------------------------------------------------------------


def test_clean_text_normalises():
    raw = "  Hello,\tworld!\n\nIt's\u00a0me\u200b\x00\x07 😀👍🏽 again. \u202eok\r\n"
    assert tts.clean_text(raw) == "Hello, world! It's me again. ok"
    assert tts.clean_text("ﬁne ２ go") == "fine 2 go"  # NFKC


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty"),
        ("  \n\t ", "empty"),
        ("\x00\x01\x1b\x7f\u200b\u202e", "empty"),  # control and format characters only
        ("\x1b[31m!!", "nothing to pronounce"),
        ("?!... --- ;;", "nothing to pronounce"),
        ("😀🎉👍🏽🇬🇧", "empty"),
        ("… ¿¡ ★ ♥", "nothing to pronounce"),
        ("a" * 1001, "limit is 1,000"),
        ("x" * 10**6, "limit is 1,000"),
    ],
)
def test_bad_text(text, needle):
    with pytest.raises(TextError) as e:
        tts.clean_text(text)
    assert needle in str(e.value)
    assert str(e.value).endswith(".")


def test_length_limit_is_an_option():
    assert tts.clean_text("a" * 1500, max_chars=2000) == "a" * 1500
    with pytest.raises(TextError, match="limit is 10"):
        tts.synthesize("hello world, again", "espeak:en-us", max_chars=10)
    with pytest.raises(InputError):
        tts.clean_text("hello", max_chars=0)


def test_split_sentences():
    chunks = tts.split_sentences("Hello there. How are you? Fine! ... " + "one, two, three, " * 30 + "end.")
    texts = [c for c, _ in chunks]
    assert texts[:3] == ["Hello there.", "How are you?", "Fine!"]
    assert "..." not in texts  # nothing to pronounce: dropped
    assert all(len(c) <= tts.MAX_CHUNK_CHARS for c in texts)
    assert len(texts) >= 5  # the long sentence was split at commas
    assert chunks[0][1] == tts.SENTENCE_PAUSE_S and chunks[3][1] == tts.CLAUSE_PAUSE_S


# -- catalogue --------------------------------------------------------------------------


def test_catalogue():
    voices = tts.list_voices()
    ids = [v.id for v in voices]
    assert len(ids) == len(set(ids))
    assert "espeak:en-us" in ids and "espeak:en-gb" in ids and "espeak:en-us+f3" in ids
    assert "coqui:ljspeech" in ids
    vctk = [v for v in voices if v.id.startswith("coqui:vctk/")]
    assert 6 <= len(vctk) <= 10
    for v in voices:
        assert v.id.split(":")[0] == v.engine and v.label and v.language.startswith("en")
        assert v.available == (v.reason is None)
    p225 = tts.get_voice("coqui:vctk/p225")
    assert "female" in p225.label and "Southern England" in p225.label
    assert tts.get_voice("ESPEAK:EN-US").id == "espeak:en-us"
    assert tts.get_voice("espeak:en-us").available  # espeak-ng is installed here


@pytest.mark.parametrize("bad", ["nope", "coqui:vctk/p999", "espeak:-i /etc/passwd", ""])
def test_unknown_voice(bad):
    with pytest.raises(VoiceError, match=r"python -m lipsync voices"):
        tts.get_voice(bad)
    with pytest.raises(VoiceError, match=r"python -m lipsync voices"):
        tts.synthesize("Hello.", bad or "x")


def test_voices_command(capsys):
    from lipsync.cli import main

    assert main(["voices"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(tts.list_voices())
    first = {line.split("\t")[0]: line for line in lines}
    assert "espeak:en-us" in first and "\tavailable" in first["espeak:en-us"]
    assert "unavailable: " in first["coqui:ljspeech"]  # not cached, downloads off in tests


# -- espeak-ng ---------------------------------------------------------------------------


@pytest.mark.parametrize("voice", ["espeak:en-us", "espeak:en-gb+f3"])
def test_espeak_end_to_end(voice):
    s = tts.synthesize("Hello there. This is a short test of the voice!", voice)
    assert s.sample_rate == 22050  # espeak-ng's native rate, not resampled
    assert s.samples.dtype == np.float32 and s.samples.ndim == 1
    assert np.max(np.abs(s.samples)) == pytest.approx(10 ** (-1 / 20), abs=1e-3)  # -1 dBFS peak
    lead, tail = lead_tail(s)
    assert lead <= tts.LEAD_S + 0.05 and tail <= tts.TAIL_S + 0.05  # trimmed to short margins
    assert lead >= 0.1 and tail >= 0.15  # ...but not to nothing
    pauses = activity.find_pauses(s.samples, s.sample_rate)
    assert any(0.3 <= (e - b) / SR <= 0.6 for b, e in pauses[:-1])  # between the sentences
    assert 1.5 < s.duration_s < 6
    assert np.count_nonzero(s.samples == 0) < 0.01 * s.samples.size  # dithered: no digital silence
    mel = features.melspectrogram(resample(s.samples, s.sample_rate))
    assert np.isfinite(mel).all()


def test_espeak_sentence_by_sentence(monkeypatch):
    calls = []
    real = espeak.run

    def spy(args, **kw):
        calls.append(args)
        return real(args, **kw)

    monkeypatch.setattr(espeak, "run", spy)
    s = tts.synthesize("One. Two! Three?", "espeak:en-us")
    assert len(calls) == 3
    assert len([p for p in activity.find_pauses(s.samples, SR) if (p[1] - p[0]) / SR >= 0.3]) >= 2


def test_trim_and_normalise_helpers():
    wav = np.concatenate([silence(2.0), tone(1.0, amp=0.1), silence(3.0)])
    out = post.trim_silence(wav, SR, lead_s=0.15, tail_s=0.25)
    assert len(out) / SR == pytest.approx(1.4, abs=0.03)
    peak = post.normalize_peak(out)
    assert np.max(np.abs(peak)) == pytest.approx(10 ** (-1 / 20), abs=1e-4)
    assert np.array_equal(post.normalize_peak(silence(0.1)), silence(0.1))
    d = post.add_dither(silence(1.0))
    assert 0 < np.max(np.abs(d)) <= post.DITHER and np.count_nonzero(d) > 0.99 * d.size
    assert np.isfinite(features.melspectrogram(d[:16000])).all()


def test_default_falls_back_to_espeak(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TTS_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(catalogue, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="lipsync"):
        v = tts.default_voice()
    assert v.id == tts.FALLBACK_VOICE and v.available
    assert "Neural voices are unavailable" in v.note and _MISSING_MODEL in v.note
    assert any("Neural voices are unavailable" in r.getMessage() for r in caplog.records)
    speech, used = tts.narrate("Hello there.")
    assert used.id == "espeak:en-us" and speech.sample_rate == 22050
    with pytest.raises(VoiceError, match=f"cannot be used here.*{_MISSING_MODEL}"):
        tts.synthesize("Hello.", "coqui:vctk/p225")


def test_unreachable_network_makes_coqui_unavailable(tmp_path, monkeypatch):
    pytest.importorskip("TTS")  # where a model would come from is read from the package
    monkeypatch.setenv("TTS_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LIPSYNC_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_probe_cache", {})
    hosts = []

    def no_network(address, *a, **k):
        hosts.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    v = tts.get_voice("coqui:ljspeech")
    assert not v.available and "github.com cannot be reached" in v.reason
    assert hosts == [("github.com", 443)]
    tts.list_voices()
    assert len(hosts) == 1  # the answer is remembered


# -- Coqui (offline, random VITS in the TTS cache) ---------------------------------------------


@pytest.fixture(scope="module")
def vctk_home(tmp_path_factory) -> Path:
    pytest.importorskip("TTS")  # the [tts] extra
    home = tmp_path_factory.mktemp("tts-home")
    build_random_vits(home, ["ED\n", *tts.VCTK_SPEAKERS, "p999x"])
    return home


@pytest.fixture
def coqui(vctk_home, monkeypatch):
    """TTS_HOME with the model; any network use or download attempt fails the test."""
    ModelManager = pytest.importorskip("TTS.utils.manage").ModelManager

    monkeypatch.setenv("TTS_HOME", str(vctk_home))

    def no_network(*a, **k):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(ModelManager, "create_dir_and_download_model", no_network)
    return vctk_home


def test_coqui_catalogue_and_default(coqui):
    from TTS.utils.manage import ModelManager

    # lipsync looks where the TTS package itself keeps (and would download) the model
    assert catalogue.model_dir(tts.VCTK) == Path(ModelManager().output_prefix) / "tts_models--en--vctk--vits"
    assert tts.get_voice("coqui:vctk/p225").available
    lj = tts.get_voice("coqui:ljspeech")
    assert not lj.available and "not in the TTS cache" in lj.reason
    assert tts.default_voice().id == "coqui:vctk/p225"  # the best one that is here


def test_coqui_end_to_end(coqui):
    speakers = json.loads((coqui / "tts" / tts.VCTK.folder / "speaker_ids.json").read_text())
    assert set(tts.VCTK_SPEAKERS) <= set(speakers)
    s = tts.synthesize("Hello there. How are you today?", "coqui:vctk/p225")
    assert s.sample_rate == 22050 and s.samples.dtype == np.float32
    assert np.max(np.abs(s.samples)) == pytest.approx(10 ** (-1 / 20), abs=1e-3)
    assert s.duration_s > 0.5 and np.isfinite(s.samples).all()
    # the loaded model is kept and reused; narration is reproducible
    loaded = coqui_engine.loaded_model(tts.VCTK)
    assert loaded is not None
    again, voice = tts.narrate("Hello there. How are you today?", "coqui:vctk/p225")
    assert coqui_engine.loaded_model(tts.VCTK) is loaded and voice.id == "coqui:vctk/p225"
    np.testing.assert_array_equal(again.samples, s.samples)
    other = tts.synthesize("Hello there. How are you today?", "coqui:vctk/p376")
    assert not np.array_equal(other.samples[: len(s.samples)], s.samples[: len(other.samples)])
    # the default voice is the cached neural one
    _, used = tts.narrate("Good morning.")
    assert used.id == "coqui:vctk/p225"


def test_coqui_shared_between_threads(coqui):
    results, errors = {}, []

    def work(i):
        try:
            results[i] = tts.synthesize(f"Request number {i}.", "coqui:vctk/p226" if i % 2 else "coqui:vctk/p253")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 4
    assert sum(k[1] == str(catalogue.tts_home()) for k in coqui_engine._models) == 1  # loaded once


def test_a_loading_model_holds_up_neither_other_voices_nor_the_list(coqui, monkeypatch):
    """While one model is loading (held inside the TTS package's loader, as during a long download),
    a voice of another model speaks and the voice list answers: only that model's own lock is held."""
    import TTS.api

    lj = coqui / "tts" / tts.LJSPEECH.folder  # looks cached; its loader is held, so the files are never read
    lj.mkdir()
    (lj / "config.json").write_text("{}")
    (lj / "model_file.pth").write_bytes(b"held")
    monkeypatch.setattr(catalogue, "_failures", {})
    real, entered, release = TTS.api.TTS, threading.Event(), threading.Event()

    def held(name, *a, **k):
        if name == tts.LJSPEECH.name:
            entered.set()
            release.wait(120)
            raise RuntimeError("released by the test")
        return real(name, *a, **k)

    monkeypatch.setattr(TTS.api, "TTS", held)
    outcome: dict[str, object] = {}

    def run(key, fn):
        try:
            outcome[key] = fn()
        except Exception as e:  # noqa: BLE001
            outcome[key] = e

    loading = threading.Thread(target=run, args=("lj", lambda: tts.synthesize("Hello.", "coqui:ljspeech")))
    loading.start()
    try:
        assert entered.wait(60)
        others = threading.Thread(target=lambda: (
            run("vctk", lambda: tts.synthesize("Hello there.", "coqui:vctk/p225")),
            run("list", tts.list_voices),
            run("voice", lambda: tts.get_voice("coqui:ljspeech")),
        ))
        others.start()
        others.join(60)  # a load that waited for the held one would wait for ever
        assert not others.is_alive(), "another voice or the voice list waited for the model being loaded"
        assert loading.is_alive() and not release.is_set()
        assert isinstance(outcome["vctk"], Speech) and outcome["vctk"].duration_s > 0.3
        assert len(outcome["list"]) == len(catalogue._SPECS) and outcome["voice"].available
    finally:
        release.set()
        loading.join(60)
        shutil.rmtree(lj)
    assert isinstance(outcome["lj"], VoiceError) and "released by the test" in str(outcome["lj"])


def test_coqui_missing_speaker(coqui, monkeypatch):
    monkeypatch.setitem(tts.VCTK_SPEAKERS, "p000", ("male", "English", ""))
    spec = catalogue.VoiceSpec("coqui:vctk/p000", "x", "coqui", "en", tts.VCTK, "p000")
    monkeypatch.setitem(catalogue._SPECS, spec.id, spec)
    with pytest.raises(VoiceError, match="not in the model"):
        tts.synthesize("Hello.", "coqui:vctk/p000")


def test_broken_cache_falls_back(tmp_path, monkeypatch, caplog):
    pytest.importorskip("TTS")  # the [tts] extra: without it the cache is never looked at
    home = tmp_path / "home"
    d = home / "tts" / tts.VCTK.folder
    d.mkdir(parents=True)
    (d / "config.json").write_text("{not json")
    (d / "model_file.pth").write_bytes(b"garbage")
    monkeypatch.setenv("TTS_HOME", str(home))
    monkeypatch.setattr(catalogue, "_failures", {})
    assert tts.default_voice().id == "coqui:vctk/p225"  # looks complete...
    with caplog.at_level(logging.WARNING, logger="lipsync"):
        speech, used = tts.narrate("Hello.")  # ...but does not load: espeak-ng speaks
    assert used.id == tts.FALLBACK_VOICE and "failed" in used.note
    assert speech.duration_s > 0.3
    v = tts.get_voice("coqui:vctk/p225")
    assert not v.available and "could not be loaded" in v.reason  # remembered


# -- no user text on any command line ---------------------------------------------------------


def test_user_text_never_reaches_an_argument(coqui, monkeypatch):
    seen: list[list[str]] = []
    real = subprocess.Popen

    def spy(args, *a, **k):
        seen.append([str(x) for x in (args if isinstance(args, (list, tuple)) else [args])])
        assert not k.get("shell"), "a shell was used"
        return real(args, *a, **k)

    monkeypatch.setattr(subprocess, "Popen", spy)
    evil = "-i /etc/passwd $(id) `whoami`; rm -rf ~ --version | cat > /tmp/pwned"
    for voice in ("espeak:en-us", "espeak:en-gb+f3", "coqui:vctk/p225"):
        s = tts.synthesize(evil, voice)
        assert s.duration_s > 0.5
    assert any("espeak" in Path(a[0]).name and "-w" in a for a in seen)  # lipsync's own espeak-ng runs
    assert any(any(x.startswith("--ipa") for x in a) for a in seen)  # the Coqui phonemizer's runs
    for args in seen:
        for arg in args:
            for needle in ("passwd", "$(id)", "whoami", "rm -rf", "pwned"):
                assert needle not in arg, args


# -- length --------------------------------------------------------------------------------


def test_fit_length_natural():
    s = Speech(tone(1.0), SR)
    assert fit_length(s, 0) is s
    assert fit_length(s, 1.0).samples.shape == s.samples.shape


def test_fit_length_pad():
    s = Speech(tone(1.0), SR)
    out = fit_length(s, 2.5)
    assert len(out.samples) == round(2.5 * SR) and out.sample_rate == SR
    np.testing.assert_array_equal(out.samples[: SR], s.samples)
    assert np.max(np.abs(out.samples[SR:])) <= post.DITHER


def test_fit_length_loop():
    s = Speech(np.concatenate([tone(0.8), silence(0.1)]), SR)  # 0.9 s
    out = fit_length(s, 3.5, loop=True)
    assert len(out.samples) == round(3.5 * SR)
    # 0.9 + (0.6 + 0.9) * 1 = 2.4 fits, a third copy (3.9 s) does not
    assert len(activity.find_pauses(out.samples, SR)) == 2  # after each copy (the last runs to the end)
    second = int(round((0.9 + post.LOOP_PAUSE_S) * SR))
    np.testing.assert_allclose(out.samples[second : second + len(s.samples)], s.samples, atol=1e-6)
    assert np.max(np.abs(out.samples[int(2.45 * SR) :])) <= post.DITHER
    # loop on speech longer than the target is a plain cut
    assert len(fit_length(s, 0.5, loop=True).samples) == round(0.5 * SR)


def test_fit_length_cuts_at_the_last_pause():
    wav = np.concatenate([tone(1.0), silence(0.5), tone(1.0), silence(0.5), tone(1.0)])  # pauses at 1.0 and 2.5 s
    out = fit_length(Speech(wav, SR), 2.8)
    assert len(out.samples) == round(2.8 * SR)
    np.testing.assert_array_equal(out.samples[: int(2.4 * SR)], wav[: int(2.4 * SR)])
    assert np.max(np.abs(out.samples[int(2.5 * SR) + int(post.CUT_FADE_S * SR) :])) <= post.DITHER
    # the pause at 1.0 s would lose more than half of a 2.3 s target: cut at the target with a fade
    out = fit_length(Speech(wav, SR), 2.3)
    n = round(2.3 * SR)
    assert len(out.samples) == n
    np.testing.assert_array_equal(out.samples[: int(2.1 * SR)], wav[: int(2.1 * SR)])
    assert abs(out.samples[-1]) < 1e-3 and np.max(np.abs(out.samples[n - 50 :])) < 0.01


def test_fit_length_hard_cut_without_pause():
    out = fit_length(Speech(tone(3.0), SR), 2.0)
    assert len(out.samples) == 2 * SR
    tail = out.samples[-int(post.HARD_CUT_FADE_S * SR) :]
    assert np.max(np.abs(tail[-20:])) < 1e-3 < np.max(np.abs(tail[:200]))


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), 0.1, 3601, "abc"])
def test_fit_length_rejects(bad):
    with pytest.raises(InputError, match="length"):
        fit_length(Speech(tone(1.0), SR), bad)


def test_fit_length_on_speech():
    s = tts.synthesize("First sentence here. Second sentence here. Third one.", "espeak:en-us")
    for target in (1.7, 2.0, s.duration_s + 1.3):
        out = fit_length(s, target)
        assert len(out.samples) == round(target * SR)
    looped = fit_length(s, 2 * s.duration_s + 1.0, loop=True)
    np.testing.assert_array_equal(looped.samples[: len(s.samples)], s.samples)


# -- the pipeline -------------------------------------------------------------------------------


@pytest.mark.slow
def test_generate_from_text_to_length(engine, example_image, tmp_path):
    out = tmp_path / "said.mp4"
    r = engine.generate(example_image, out=out, text="Hello there!", voice="espeak:en-us+f3", length_s=2.0)
    assert r.voice == "espeak:en-us+f3" and "speech" in r.timings
    assert r.sample_rate == 22050 and r.frames == 50
    info = ffprobe(out)
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert abs(float(v["duration"]) - 2.0) <= 1 / 25
    assert abs(float(info["format"]["duration"]) - 2.0) <= 1 / 25


@pytest.mark.slow
def test_generate_audio_file_to_length(engine, example_image, tmp_path, oracle_wav):
    out = tmp_path / "cut.mp4"
    r = engine.generate(example_image, oracle_wav, out, length_s=1.3)
    assert r.voice is None and r.frames == round(1.3 * 25)
    info = ffprobe(out)
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert abs(float(v["duration"]) - 1.3) <= 1 / 25


def test_generate_input_checks(engine, example_image, oracle_wav, tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_HOME", str(tmp_path / "no-models"))
    out = tmp_path / "x.mp4"
    with pytest.raises(VoiceError, match=f"cannot be used here.*{_MISSING_MODEL}"):
        engine.generate(example_image, out=out, text="Hello", voice="coqui:ljspeech")
    with pytest.raises(InputError, match="exactly one"):
        engine.generate(example_image, out=out)
    with pytest.raises(InputError, match="exactly one"):
        engine.generate(example_image, oracle_wav, out, text="Hello")
    with pytest.raises(TextError, match="nothing to pronounce"):
        engine.generate(example_image, out=out, text="🙂!!")
    with pytest.raises(VoiceError, match="python -m lipsync voices"):
        engine.generate(example_image, out=out, text="Hello", voice="robot")
    with pytest.raises(InputError, match="length"):
        engine.generate(example_image, out=out, text="Hello", length_s=-2)
    with pytest.raises(InputError, match="voice"):
        engine.generate(example_image, oracle_wav, out, voice="espeak:en-us")
    assert not out.exists()


def test_cli_text_and_audio_are_exclusive(example_image, oracle_wav, tmp_path, capsys):
    from lipsync.cli import main

    out = tmp_path / "x.mp4"
    with pytest.raises(SystemExit) as e:
        main(["generate", "--image", str(example_image), "--audio", str(oracle_wav), "--text", "hi", "--out", str(out)])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--image", str(example_image), "--out", str(out)])
    assert "one of the arguments --audio --text is required" in capsys.readouterr().err
    code = main(["generate", "--image", str(example_image), "--text", "   ", "--out", str(out)])
    assert code == 2 and "empty" in capsys.readouterr().err
    code = main(["generate", "--image", str(example_image), "--text", "Hi", "--voice", "x:y", "--out", str(out)])
    assert code == 2 and "python -m lipsync voices" in capsys.readouterr().err
