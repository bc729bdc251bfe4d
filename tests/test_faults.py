"""Injected faults: each gives a clean error, leaves no process, file or temp dir, and
the next request works."""

from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

import lipsync.proc as proc
from conftest import temp_entries as _temp_dirs
from lipsync import GenerateOptions, LipSyncError, Speech
from lipsync.errors import AudioError, EncodeError, ResourceError

REAL_FFMPEG = proc.ffmpeg_exe()


pytestmark = pytest.mark.usefixtures("own_tempdir")


def _children():
    return [c for c in psutil.Process().children(recursive=True) if c.is_running() and c.status() != "zombie"]


@pytest.fixture
def fake_ffmpeg(tmp_path, monkeypatch):
    """Put a fake ffmpeg in front of everything; returns a function to write its script."""

    def install(body: str) -> Path:
        exe = tmp_path / "fakebin" / "ffmpeg"
        exe.parent.mkdir(exist_ok=True)
        exe.write_text("#!/bin/sh\n" + body + "\n")
        exe.chmod(0o755)
        monkeypatch.setenv("LIPSYNC_FFMPEG", str(exe))
        proc.ffmpeg_exe.cache_clear()
        return exe

    yield install
    monkeypatch.delenv("LIPSYNC_FFMPEG", raising=False)
    proc.ffmpeg_exe.cache_clear()


def _check_clean(out: Path, before: set):
    assert not out.exists()
    assert not list(out.parent.glob("*.part.mp4"))
    assert _temp_dirs() == before
    assert _children() == []


def _next_request_works(engine, example_image, speech, tmp_path):
    proc.ffmpeg_exe.cache_clear()
    r = engine.generate(example_image, speech, tmp_path / "next.mp4", GenerateOptions(label=False))
    assert r.video.is_file() and r.frames == 25


def test_encoder_exits_1(engine, example_image, speech, tmp_path, fake_ffmpeg, monkeypatch):
    fake_ffmpeg("echo 'Error: simulated encoder crash' >&2\nexit 1")
    before = _temp_dirs()
    out = tmp_path / "out.mp4"
    with pytest.raises(EncodeError, match="simulated encoder crash"):
        engine.generate(example_image, speech, out)
    _check_clean(out, before)
    monkeypatch.delenv("LIPSYNC_FFMPEG")
    _next_request_works(engine, example_image, speech, tmp_path)


def test_encoder_hangs_and_is_killed(engine, example_image, speech, tmp_path, fake_ffmpeg, monkeypatch):
    fake_ffmpeg("sleep 600 & sleep 600")  # a child of its own too: the whole group must die
    before = _temp_dirs()
    out = tmp_path / "out.mp4"
    with pytest.raises(EncodeError, match="did not finish within 3 s"):
        engine.generate(example_image, speech, out, GenerateOptions(timeout_s=3))
    _check_clean(out, before)
    monkeypatch.delenv("LIPSYNC_FFMPEG")
    _next_request_works(engine, example_image, speech, tmp_path)


def test_encoder_floods_stderr_but_works(engine, example_image, speech, tmp_path, fake_ffmpeg):
    fake_ffmpeg(f"head -c 20000000 /dev/zero | tr '\\0' 'x' >&2\nexec {REAL_FFMPEG} \"$@\"")
    r = engine.generate(example_image, speech, tmp_path / "flood.mp4")
    assert r.video.is_file()
    assert _children() == []


def test_audio_decoder_hangs(engine, example_image, oracle_wav, tmp_path, fake_ffmpeg, monkeypatch):
    import lipsync.media.audio as audio

    fake_ffmpeg("sleep 600")
    monkeypatch.setattr(audio, "DECODE_TIMEOUT_S", 2.0)
    before = _temp_dirs()
    out = tmp_path / "out.mp4"
    with pytest.raises(AudioError):
        engine.generate(example_image, oracle_wav, out)
    _check_clean(out, before)


def test_missing_ffmpeg_is_a_clear_error(engine, example_image, speech, tmp_path, fake_ffmpeg, monkeypatch):
    monkeypatch.setenv("LIPSYNC_FFMPEG", str(tmp_path / "no" / "ffmpeg"))
    proc.ffmpeg_exe.cache_clear()
    out = tmp_path / "out.mp4"
    with pytest.raises(EncodeError, match="Could not start"):
        engine.generate(example_image, speech, out)
    assert not out.exists()


def test_out_of_memory_at_every_batch_size(engine, example_image, speech, tmp_path, monkeypatch):
    gen = engine.generator
    old = gen.batch_size

    def oom(prep, m):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(gen, "_forward", oom)
    before = _temp_dirs()
    out = tmp_path / "out.mp4"
    with pytest.raises(ResourceError, match="ran out of memory"):
        engine.generate(example_image, speech, out)
    _check_clean(out, before)
    monkeypatch.undo()
    assert gen.batch_size == old
    _next_request_works(engine, example_image, speech, tmp_path)


def test_forced_oom_at_batch_n_still_finishes(engine, example_image, speech, tmp_path, monkeypatch):
    gen = engine.generator
    old = gen.batch_size
    real = gen._forward

    def limited(prep, m):
        if len(m) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(prep, m)

    monkeypatch.setattr(gen, "_forward", limited)
    r = engine.generate(
        example_image, speech, tmp_path / "oom.mp4", GenerateOptions(skip_silence=False, batch_size=16)
    )
    assert r.video.is_file() and r.frames > 16
    assert gen.batch_size == old  # a request's batch size and its back-off never stick to the engine


@pytest.mark.parametrize(
    "samples",
    [np.zeros(0, np.float32), np.full(16000, np.nan, np.float32)],
    ids=["empty", "nan"],
)
def test_bad_speech_from_a_tts_engine(engine, example_image, tmp_path, samples):
    out = tmp_path / "out.mp4"
    with pytest.raises(LipSyncError):
        engine.generate(example_image, Speech(samples, 16000), out)
    assert not out.exists()
