"""The command line end to end, and its answers to bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, ffprobe


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
    r = cli("generate", "--image", example_image, "--audio", oracle_wav, "--out", out, "--checkpoint", checkpoint,
            "--json")
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


def test_missing_image(tmp_path, oracle_wav, out, checkpoint):
    r = cli(*_base(tmp_path / "nope.jpg", oracle_wav, out, checkpoint))
    assert_clean_failure(r, out, "does not exist")


def test_text_file_named_png(tmp_path, oracle_wav, out, checkpoint):
    fake = tmp_path / "photo.png"
    fake.write_text("this is not a picture\n")
    r = cli(*_base(fake, oracle_wav, out, checkpoint))
    assert_clean_failure(r, out, "not a picture")


def test_image_without_a_face(tmp_path, oracle_wav, out, checkpoint):
    from PIL import Image

    img = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 300, 3), 180, np.uint8)).save(img)
    r = cli(*_base(img, oracle_wav, out, checkpoint))
    assert_clean_failure(r, out, "no face", "portrait")


def test_empty_audio(tmp_path, example_image, out, checkpoint):
    empty = tmp_path / "speech.wav"
    empty.write_bytes(b"")
    r = cli(*_base(example_image, empty, out, checkpoint))
    assert_clean_failure(r, out, "empty")


def test_corrupt_audio(tmp_path, example_image, out, checkpoint):
    bad = tmp_path / "speech.mp3"
    bad.write_bytes(b"ID3" + bytes(range(256)) * 20)
    r = cli(*_base(example_image, bad, out, checkpoint))
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
def test_image_corpus_through_the_command_line(name, tmp_path, short_wav, checkpoint, capsys):
    """The CLI's own code path, in process: exit 0 with a video, or 2 with one clean line."""
    from bad_inputs import CORPUS
    from lipsync.cli import main

    fname, make, expect = CORPUS[name]
    img = tmp_path / fname
    img.write_bytes(make())
    out = tmp_path / "out" / "v.mp4"
    code = main(["generate", "--image", str(img), "--audio", str(short_wav), "--out", str(out),
                 "--checkpoint", str(checkpoint), "--device", "cpu"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if expect == "ok":
        assert code == 0, err
        assert out.is_file()
    else:
        assert code == 2, err
        assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
        assert not out.exists()
