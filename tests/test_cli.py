"""The command line end to end, and its answers to bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED_ENGINE, ffprobe, in_process


def cli(*args, env_extra=None, timeout=300):
    import os

    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "lipsync", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_clean_failure(r, out: Path, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    assert not out.exists()
    assert not list(out.parent.glob("*.part.mp4"))


@pytest.mark.slow
def test_generate_end_to_end(tmp_path, example_image, oracle_wav, checkpoint):
    out = tmp_path / "talk.mp4"
    # fp32: int8's one-off calibration (minutes on a loaded 2-core machine) is test_int8.py's
    r = cli("generate", "--image", example_image, "--audio", oracle_wav, "--out", out, "--checkpoint", checkpoint,
            "--json", "--precision", "fp32")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "by mtcnn" in r.stderr  # the offline detector: no S3FD weights in tests
    import json

    result = json.loads(r.stdout)  # stdout holds the one JSON object and nothing else
    assert result["video"] == str(out) and result["frames"] == 181 and result["detector"] == "mtcnn"
    assert len(result["box"]) == 4 and result["timings"]["lipsync"] > 0
    info = ffprobe(out)
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    a = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert v["codec_name"] == "h264" and a["codec_name"] == "aac"
    audio_s = 115879 / 16000
    assert abs(float(v["duration"]) - audio_s) <= 1 / 25
    assert abs(float(info["format"]["duration"]) - audio_s) <= 1 / 25
    assert int(v["nb_frames"]) == 181


@pytest.fixture
def out(tmp_path):
    return tmp_path / "result" / "out.mp4"


def _base(example_image, oracle_wav, out, checkpoint):
    return ["generate", "--image", example_image, "--audio", oracle_wav, "--out", out, "--checkpoint", checkpoint]


#: the engine flags of the in-process runs (fp32: they are about inputs; int8 is tested in test_int8.py)
def test_missing_image(tmp_path, oracle_wav, out, checkpoint):
    r = cli(*_base(tmp_path / "nope.jpg", oracle_wav, out, checkpoint))
    assert_clean_failure(r, out, "does not exist")


def test_text_file_named_png(tmp_path, oracle_wav, out, checkpoint, capsys, shared_engine):
    fake = tmp_path / "photo.png"
    fake.write_text("this is not a picture\n")
    r = in_process(capsys, *_base(fake, oracle_wav, out, checkpoint))
    assert_clean_failure(r, out, "not a picture")


def test_image_without_a_face(tmp_path, oracle_wav, out, checkpoint, capsys, shared_engine):
    from PIL import Image

    img = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 300, 3), 180, np.uint8)).save(img)
    r = in_process(capsys, *_base(img, oracle_wav, out, checkpoint))
    assert_clean_failure(r, out, "no face", "portrait")


def test_empty_audio(tmp_path, example_image, out, checkpoint, capsys, shared_engine):
    empty = tmp_path / "speech.wav"
    empty.write_bytes(b"")
    r = in_process(capsys, *_base(example_image, empty, out, checkpoint))
    assert_clean_failure(r, out, "empty")


def test_corrupt_audio(tmp_path, example_image, out, checkpoint, capsys, shared_engine):
    bad = tmp_path / "speech.mp3"
    bad.write_bytes(b"ID3" + bytes(range(256)) * 20)
    r = in_process(capsys, *_base(example_image, bad, out, checkpoint))
    assert_clean_failure(r, out, "audio")


def test_missing_checkpoint_says_how_to_provide_it(example_image, oracle_wav, out):
    r = cli("generate", "--image", example_image, "--audio", oracle_wav, "--out", out)
    assert_clean_failure(r, out, "LIPSYNC_CHECKPOINT", "--checkpoint")


def test_output_must_be_mp4(example_image, oracle_wav, tmp_path, checkpoint):
    out = tmp_path / "out.avi"
    r = cli(*_base(example_image, oracle_wav, out, checkpoint))
    assert_clean_failure(r, out, ".mp4")


def test_bad_option_values(example_image, oracle_wav, out, checkpoint):
    r = cli(*_base(example_image, oracle_wav, out, checkpoint), "--fps", "0")
    assert_clean_failure(r, out, "fps")


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory):
    from lipsync.media.encode import write_wav

    t = np.arange(16000) / 16000
    return write_wav(tmp_path_factory.mktemp("wav") / "short.wav", 0.3 * np.sin(2 * np.pi * 180 * t), 16000)


def _corpus_names():
    from bad_inputs import CORPUS

    return sorted(CORPUS)


@pytest.mark.parametrize("name", _corpus_names())
def test_image_corpus_through_the_command_line(name, tmp_path, short_wav, checkpoint, capsys, shared_engine):
    """The CLI's own code path, in process: exit 0 with a video, or 2 with one clean line."""
    from bad_inputs import CORPUS
    from lipsync.cli import main

    fname, make, expect = CORPUS[name]
    img = tmp_path / fname
    img.write_bytes(make())
    out = tmp_path / "out" / "v.mp4"
    code = main(["generate", "--image", str(img), "--audio", str(short_wav), "--out", str(out),
                 "--checkpoint", str(checkpoint), *SHARED_ENGINE])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if expect == "ok":
        assert code == 0, err
        assert out.is_file()
    else:
        assert code == 2, err
        assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
        assert not out.exists()


# ----------------------------------------------------------------------------- flags from the options


def _subparser(name: str):
    import argparse

    from lipsync.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_every_option_has_a_described_flag():
    """Each GenerateOptions field carries its help and --help section, and `generate` has its flag
    (a new field without metadata, or a type the CLI has no rule for, fails here)."""
    import dataclasses

    from lipsync.options import OPTION_GROUPS, GenerateOptions, option_flag

    flags = _subparser("generate")._option_string_actions
    for f in dataclasses.fields(GenerateOptions):
        assert f.metadata.get("help"), f"GenerateOptions.{f.name} has no help"
        assert f.metadata.get("group") in OPTION_GROUPS, f.name
        flag = option_flag(f)
        assert flag in flags, f"no {flag} for GenerateOptions.{f.name}"
        assert flags[flag].dest == f.name
    help_text = _subparser("generate").format_help()
    for title in OPTION_GROUPS.values():
        assert f"\n{title}:\n" in help_text
    assert "(default 25)" in help_text and "--no-label" in help_text and "--length SECONDS" in help_text


def test_flags_reach_the_options_and_left_out_flags_keep_the_defaults():
    from lipsync.cli import _parser, options_from_args
    from lipsync.options import GenerateOptions

    base = ["generate", "--image", "a.jpg", "--text", "Hi.", "--out", "o.mp4"]
    assert options_from_args(_parser().parse_args(base)) == GenerateOptions()
    a = _parser().parse_args(base + [
        "--fps", "30", "--pads", "1", "2", "3", "4", "--box", "0", "10", "0", "10", "--no-label", "--loop",
        "--length", "2.5", "--max-chars", "50", "--preset", "fast", "--frame-step", "2", "--no-skip-silence",
        "--video-loop", "loop", "--motion", "0", "--meta", "title=Hello", "--meta", "artist=me", "--captions",
        "--max-audio-seconds", "30", "--timeout", "60", "--batch-size", "8",
    ])
    o = options_from_args(a)
    assert (o.fps, o.pads, o.box, o.label, o.loop, o.length_s, o.max_chars) == (
        30.0, (1, 2, 3, 4), (0, 10, 0, 10), False, True, 2.5, 50)
    assert (o.preset, o.frame_step, o.skip_silence, o.video_loop, o.motion, o.captions) == (
        "fast", 2, False, "loop", 0.0, True)
    assert (o.max_audio_s, o.timeout_s, o.batch_size) == (30.0, 60.0, 8)
    assert o.metadata == {"title": "Hello", "artist": "me"}


def test_generate_and_batch_share_the_engine_flags(monkeypatch):
    """One add_engine_args: the same flags and choices in generate and batch; batch takes int8 too."""
    from lipsync.cli import _parser, engine_settings
    from lipsync.options import PRECISIONS

    def engine_flags(name):
        acts = _subparser(name)._option_string_actions
        return {f: (acts[f].dest, acts[f].choices) for f in ("--checkpoint", "--s3fd", "--device", "--precision")}

    assert engine_flags("generate") == engine_flags("batch")
    pytest.importorskip("gradio")
    from lipsync.webapp.server import parser as app_parser

    app_acts = app_parser()._option_string_actions  # the web app takes the same engine flags
    assert {f: (app_acts[f].dest, app_acts[f].choices) for f in engine_flags("batch")} == engine_flags("batch")
    assert tuple(engine_flags("batch")["--precision"][1]) == PRECISIONS and "int8" in PRECISIONS
    a = _parser().parse_args(["batch", "jobs.csv", "--out-dir", "out", "--precision", "int8", "--device", "cpu"])
    assert engine_settings(a) == {"checkpoint": None, "s3fd": None, "device": "cpu", "precision": "int8"}
    monkeypatch.setenv("LIPSYNC_PRECISION", "fp32")
    monkeypatch.delenv("LIPSYNC_DEVICE", raising=False)
    a = _parser().parse_args(["batch", "jobs.csv", "--out-dir", "out"])
    assert engine_settings(a)["precision"] == "fp32" and engine_settings(a)["device"] == "auto"


def test_batch_passes_int8_to_its_workers(tmp_path, monkeypatch):
    """`batch --precision int8` (refused by the parser before) reaches the workers' engine settings."""
    import lipsync.batch
    from lipsync.batch import EngineSettings
    from lipsync.cli import main

    seen = {}

    def run_batch(jobs, out_dir, *, settings, **kw):
        seen["settings"] = settings
        raise lipsync.batch.Interrupted(2)

    monkeypatch.setattr(lipsync.batch, "run_batch", run_batch)
    code = main(["batch", str(tmp_path / "jobs.csv"), "--out-dir", str(tmp_path / "out"), "--precision", "int8",
                 "--device", "cpu", "--checkpoint", "w.pth"])
    assert code == 130
    assert seen["settings"] == EngineSettings(checkpoint="w.pth", device="cpu", precision="int8", s3fd=None)


def test_batch_shares_gpus_between_ray_workers_only_when_asked_well(tmp_path, capsys):
    """`batch --workers-per-gpu N` is for Ray's workers (local --workers share the GPU already): without --ray,
    or with N < 1, one line says what to do and nothing is written."""
    from lipsync.cli import main

    jobs = tmp_path / "jobs.csv"
    jobs.write_text("id,image,audio\n")
    for extra, said in ((["--workers-per-gpu", "2"], "add --ray"), (["--ray", "--workers-per-gpu", "0"], "1 or more")):
        code = main(["batch", str(jobs), "--out-dir", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
