"""lipsync batch: the jobs file, local workers, resuming, interrupts, and the same jobs on Ray.

The jobs run end to end on the real engine (the scratch checkpoint), real espeak-ng and ffmpeg:
a photo with a recording, a text, a text with captions and an HLS package, a driving video.
Short clips (1.5 s, 256 px) keep the module to a couple of minutes on two cores.
One local Ray instance (2 CPUs) is shared by the Ray tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import ROOT, ffprobe
from lipsync.errors import InputError

ROWS = [
    {"id": "photo", "image": "face.jpg", "audio": "speech.wav", "hls": "yes"},
    {"id": "speak", "image": "face.jpg", "text": "Hello from the batch.", "voice": "espeak:en-us"},
    {"id": "nofile", "image": "missing.jpg", "text": "Hi there.", "voice": "espeak:en-us"},
    {"id": "corrupt", "image": "face.jpg", "audio": "corrupt.wav"},
    {"id": "captioned", "image": "face.jpg", "text": "Hello with captions.", "voice": "espeak:en-us",
     "captions": "yes", "hls": "yes"},
    {"id": "moving", "video": "clip.mp4", "audio": "speech.wav"},
]
COLUMNS = ["id", "image", "video", "text", "voice", "audio", "captions", "hls", "max_side", "fps"]
OK_IDS = ["captioned", "moving", "photo", "speak"]
#: the workers' precision: batching is tested here, int8 in test_int8.py (its one-off calibration,
#: a minute or two on a loaded 2-core machine, would land on whichever batch test ran first)
PRECISION = "fp32"


@pytest.fixture(scope="module", autouse=True)
def _fp32_workers():
    """Every `lipsync batch` this module starts reads LIPSYNC_PRECISION (see add_engine_args)."""
    saved = os.environ.get("LIPSYNC_PRECISION")
    os.environ["LIPSYNC_PRECISION"] = PRECISION
    yield
    if saved is None:
        os.environ.pop("LIPSYNC_PRECISION", None)
    else:
        os.environ["LIPSYNC_PRECISION"] = saved


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({"max_side": 256, "fps": 25, **r})
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, example_image, oracle_wav):
    """A folder with the portrait, a 1 s driving video of it, a 1.5 s speech clip, a corrupt 'wav' and jobs.csv."""
    import soundfile as sf
    from videos import pan_frames, write_video

    d = tmp_path_factory.mktemp("jobs")
    shutil.copy(example_image, d / "face.jpg")
    samples, rate = sf.read(oracle_wav, dtype="float32")
    sf.write(d / "speech.wav", samples[: int(1.5 * rate)], rate)
    (d / "corrupt.wav").write_bytes(b"RIFF" + np.random.default_rng(0).bytes(4000))
    write_video(d / "clip.mp4", pan_frames(25))
    write_csv(d / "jobs.csv", ROWS)
    return d


def cli(*args, env_extra=None, timeout=300, **kw):
    env = dict(os.environ, LIPSYNC_OFFLINE="1")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "lipsync", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, **kw,
    )


def lines(out: Path) -> list[dict]:
    text = (out / "results.jsonl").read_text("utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry of the folder: (inode, size, mtime_ns)."""
    return {p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def no_temporaries(out: Path) -> None:
    left = [p.name for p in out.iterdir() if p.name.startswith(".") or ".part" in p.name]
    assert left == [], left


def check_files(out: Path, rec: dict) -> None:
    """Each file a results line lists is there with its recorded size and sha256."""
    import hashlib

    for entry in rec["files"].values():
        data = (out / entry["name"]).read_bytes()
        assert len(data) == entry["size"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def zip_members(path: Path) -> dict[str, int]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: i.CRC for i in z.infolist()}


def fake_ffmpeg(folder: Path, fired: Path) -> Path:
    """An ffmpeg that, the first time it is asked to encode job 'crashme', kills the
    process that started it (the worker) with SIGKILL; otherwise the real ffmpeg."""
    from lipsync.proc import ffmpeg_exe

    exe = folder / "ffmpeg"
    exe.write_text(
        "#!/bin/sh\n"
        'case "$*" in *crashme*)\n'
        f'  if [ ! -e "{fired}" ]; then : > "{fired}"; kill -9 $PPID; exit 1; fi;;\n'
        "esac\n"
        f'exec "{ffmpeg_exe()}" "$@"\n'
    )
    exe.chmod(0o755)
    return exe


# ----------------------------------------------------------------------------- the jobs file


def test_manifest_rows_are_checked_one_by_one(tmp_path, inputs):
    from lipsync.batch import load_manifest

    for name in ("face.jpg", "speech.wav"):
        shutil.copy(inputs / name, tmp_path / name)
    rows = [
        {"id": "good", "image": "face.jpg", "text": "Hello.", "voice": "espeak:en-us", "pads": "0 20 0 0"},
        {"id": "", "image": "face.jpg", "text": "Hello."},
        {"id": "../escape", "image": "face.jpg", "text": "Hello."},
        {"id": "twin", "image": "face.jpg", "text": "Hello."},
        {"id": "TWIN", "image": "face.jpg", "text": "Hello."},
        {"id": "both", "image": "face.jpg", "text": "Hello.", "audio": "speech.wav"},
        {"id": "neither", "image": "face.jpg"},
        {"id": "voiceless", "image": "face.jpg", "text": "Hello.", "voice": "klingon:warrior"},
        {"id": "fast", "image": "face.jpg", "audio": "speech.wav", "fps": "500"},
        {"id": "twoface", "image": "face.jpg", "video": "clip.mp4", "audio": "speech.wav"},
        {"id": "hlsmaybe", "image": "face.jpg", "audio": "speech.wav", "hls": "perhaps"},
        {"id": "voiced", "image": "face.jpg", "audio": "speech.wav", "voice": "espeak:en-us"},
        {"id": "moving", "video": "clip.mp4", "audio": "speech.wav"},
    ]
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=128x128:rate=25:duration=1",
                    "-pix_fmt", "yuv420p", str(tmp_path / "clip.mp4")], check=True)
    cols = ["id", "image", "video", "text", "voice", "audio", "fps", "max_side", "pads", "hls", "_note"]
    m = load_manifest(write_csv(tmp_path / "jobs.csv", rows, cols))
    assert [j.id for j in m.jobs] == ["good", "moving"]
    moving = m.jobs[1]
    assert moving.is_video and moving.generate_kwargs(tmp_path / "m.mp4")["video"] == (tmp_path / "clip.mp4").resolve()
    good = m.jobs[0]
    assert good.options.pads == (0, 20, 0, 0) and good.options.max_side == 256 and good.row == 2
    assert good.image == (tmp_path / "face.jpg").resolve()
    why = {e.row: e.message for e in m.errors}
    assert "id is empty" in why[3]
    assert "cannot be a file name" in why[4]
    assert "used again on line(s) 6" in why[5] and "used again on line(s) 5" in why[6]
    assert "exactly one" in why[7] and "exactly one" in why[8]
    assert "klingon" in why[9].lower()
    assert "fps must be between 1 and 60" in why[10]
    assert "either an image (a photo) or a video, exactly one" in why[11]
    assert "yes or no" in why[12]
    assert "only be chosen for text" in why[13]
    assert all(e.id is None for e in m.errors if e.row in (3, 4, 5, 6))  # no usable id to file them under

    # the same job as JSON Lines, typed values: the same job, the same fingerprint
    (tmp_path / "jobs.jsonl").write_text(json.dumps(
        {"id": "good", "image": "face.jpg", "text": "Hello.", "voice": "espeak:en-us", "pads": [0, 20, 0, 0],
         "max_side": 256, "fps": 25}
    ) + "\n\nnot json\n")
    j = load_manifest(tmp_path / "jobs.jsonl")
    assert j.jobs[0].fingerprint() == good.fingerprint()
    assert [e.row for e in j.errors] == [3] and "not valid JSON" in j.errors[0].message
    # the fingerprint follows the input file's contents
    (tmp_path / "face.jpg").write_bytes((tmp_path / "face.jpg").read_bytes() + b"\0")
    assert load_manifest(tmp_path / "jobs.jsonl").jobs[0].fingerprint() != good.fingerprint()


def test_jobs_columns_are_the_options_columns(tmp_path, inputs):
    """The option columns come from GenerateOptions' metadata (length sets length_s), and reach the job."""
    import dataclasses

    from lipsync.batch import load_manifest
    from lipsync.batch.manifest import JOB_COLUMNS, option_columns
    from lipsync.options import GenerateOptions, option_column

    cols = option_columns()
    assert set(cols) == {option_column(f) for f in dataclasses.fields(GenerateOptions)}
    assert cols["length"].name == "length_s" and "length_s" not in cols and not set(cols) & set(JOB_COLUMNS)
    (tmp_path / "jobs.jsonl").write_text(json.dumps({
        "id": "all", "image": str(inputs / "face.jpg"), "text": "Hello.", "voice": "espeak:en-us", "length": 2,
        "loop": "yes", "max_chars": 20, "captions": True, "preset": "fast", "frame_step": 2, "label": "no",
        "metadata": {"title": "T"}, "video_loop": "loop",
    }) + "\n")
    job = load_manifest(tmp_path / "jobs.jsonl").jobs[0]
    assert job.options == GenerateOptions(
        voice="espeak:en-us", length_s=2.0, loop=True, max_chars=20, captions=True, preset="fast", frame_step=2,
        label=False, video_loop="loop",
    ) and job.options.metadata == {"title": "T"}


def test_manifest_problems_with_the_whole_file(tmp_path):
    from lipsync.batch import load_manifest

    with pytest.raises(InputError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv")
    (tmp_path / "typo.csv").write_text("id,imgae,text\na,face.jpg,Hi\n")
    with pytest.raises(InputError, match="unknown column.*imgae"):
        load_manifest(tmp_path / "typo.csv")
    (tmp_path / "empty.csv").write_text("id,image,text\n")
    with pytest.raises(InputError, match="no jobs"):
        load_manifest(tmp_path / "empty.csv")
    (tmp_path / "jobs.xlsx").write_bytes(b"PK")
    with pytest.raises(InputError, match=r"\.csv, \.tsv or \.jsonl"):
        load_manifest(tmp_path / "jobs.xlsx")


def test_an_output_may_not_replace_an_input(tmp_path, inputs):
    """Writing into the jobs folder, job 'speech' would overwrite speech.mp4, an input: refused up front."""
    from lipsync.batch import run_batch

    shutil.copy(inputs / "face.jpg", tmp_path / "face.jpg")
    shutil.copy(inputs / "speech.wav", tmp_path / "speech.mp4")  # ffmpeg reads it by content
    jobs = write_csv(tmp_path / "jobs.csv", [{"id": "speech", "image": "face.jpg", "audio": "speech.mp4"}])
    with pytest.raises(InputError, match="speech.mp4 would replace an input file"):
        run_batch(jobs, tmp_path, strict=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.jpg", "jobs.csv", "speech.mp4"]


def test_ray_workers_are_planned_per_gpu_or_per_cpus():
    from lipsync.batch.ray_backend import plan_workers

    def node(cpu, gpu=0, alive=True):
        return {"Alive": alive, "Resources": {"CPU": cpu, **({"GPU": gpu} if gpu else {})}}

    gpus = [node(16, 2), node(16, 1), node(64, 4, alive=False)]
    assert plan_workers(gpus, workers=None, cpus_per_worker=None, device="auto") == (3, 1, 1)
    assert plan_workers(gpus, workers=2, cpus_per_worker=4, device="auto") == (2, 4, 1)
    assert plan_workers(gpus, workers=None, cpus_per_worker=None, device="cpu") == (8, 4, 0)
    assert plan_workers(gpus, workers=None, cpus_per_worker=2, device="auto", per_gpu=4) == (12, 2, 0.25)
    assert plan_workers(gpus, workers=5, cpus_per_worker=None, device="auto", per_gpu=3) == (5, 1, 0.3333)
    cpus = [node(8), node(6), node(2)]
    assert plan_workers(cpus, workers=None, cpus_per_worker=None, device="auto") == (3, 4, 0)  # 2 + 1 + 0
    assert plan_workers(cpus, workers=None, cpus_per_worker=2, device="auto") == (8, 2, 0)
    assert plan_workers([node(2)], workers=None, cpus_per_worker=None, device="auto") == (1, 2, 0)
    assert plan_workers([node(2)], workers=2, cpus_per_worker=None, device="auto") == (2, 1, 0)
    with pytest.raises(Exception, match="no CPUs"):
        plan_workers([node(0)], workers=None, cpus_per_worker=None, device="auto")


# ----------------------------------------------------------------------------- local workers


@pytest.fixture(scope="module")
def local_run(inputs, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    r = cli("batch", inputs / "jobs.csv", "--out-dir", out, "--workers", 2, "--checkpoint", checkpoint)
    return r, out


def test_local_batch_writes_each_job_and_its_line(local_run):
    r, out = local_run
    assert r.returncode == 3, r.stderr  # ran, but some jobs failed
    assert "Traceback" not in r.stderr
    assert "4 of 6 ok" in r.stdout and "2 failed" in r.stdout
    assert "nofile" in r.stderr and "corrupt" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "captioned.mp4", "captioned.vtt", "captioned_hls.zip", "moving.mp4", "photo.mp4", "photo_hls.zip",
        "results.jsonl", "speak.mp4",
    ]
    recs = lines(out)
    assert sorted(x["id"] for x in recs) == sorted(["corrupt", "nofile", *OK_IDS])
    by = {x["id"]: x for x in recs}
    for ok in OK_IDS:
        rec = by[ok]
        assert rec["status"] == "ok" and rec["error"] is None and rec["attempts"] == 1 and rec["wall_s"] > 0
        check_files(out, rec)
        res = rec["result"]
        assert res["video"] == f"{ok}.mp4" and res["fps"] == 25.0 and res["width"] == 256
        assert isinstance(res["box"], list) and len(res["box"]) == 4
        assert res["frames"] == round(res["duration_s"] * 25)
        info = ffprobe(out / f"{ok}.mp4")
        assert {s["codec_name"] for s in info["streams"]} == {"h264", "aac"}
    assert by["photo"]["result"]["frames"] == 38 and by["photo"]["result"]["voice"] is None
    assert by["photo"]["result"]["detector"] == "mtcnn" and by["photo"]["result"]["source"] == "photo"
    assert by["speak"]["result"]["voice"] == "espeak:en-us"
    assert set(by["photo"]["files"]) == {"video", "hls_zip"} and set(by["speak"]["files"]) == {"video"}
    assert {"master.m3u8", "player.html"} <= set(zip_members(out / "photo_hls.zip"))
    assert not any(n.startswith("subs/") for n in zip_members(out / "photo_hls.zip"))  # no text, no captions
    # the driving video: its 1 s of frames played back and forth under the 1.5 s recording
    moving = by["moving"]["result"]
    assert moving["source"] == "video" and moving["frames"] == 38 and moving["face_frames"] > 1
    # captions: the cues of the spoken text beside the MP4, and the same subtitles inside the HLS package
    cap = by["captioned"]
    assert set(cap["files"]) == {"video", "hls_zip", "captions"} and cap["result"]["captions"] == "captioned.vtt"
    vtt = (out / "captioned.vtt").read_text("utf-8")
    assert vtt.startswith("WEBVTT") and "-->" in vtt and "captions" in vtt.lower()
    with zipfile.ZipFile(out / "captioned_hls.zip") as z:
        names = set(z.namelist())
        assert "subs/index.m3u8" in names and any(n.startswith("subs/") and n.endswith(".vtt") for n in names)
        master = z.read("master.m3u8").decode()
        assert "TYPE=SUBTITLES" in master and 'SUBTITLES="' in master
        subs = "".join(z.read(n).decode() for n in sorted(names) if n.startswith("subs/") and n.endswith(".vtt"))
        assert "captions" in subs.lower()
    assert by["nofile"]["status"] == "error" and "missing.jpg does not exist" in by["nofile"]["error"]
    assert by["nofile"]["job"] is None and by["nofile"]["attempts"] == 0  # refused before any work
    assert by["corrupt"]["status"] == "error" and "corrupt.wav is not an audio file this tool can read" in by["corrupt"]["error"]
    assert by["corrupt"]["files"] == {} and by["corrupt"]["result"] is None
    no_temporaries(out)


def test_rerun_does_no_work_and_rewrites_nothing(local_run, inputs, checkpoint):
    _, out = local_run
    before = snapshot(out)
    r = cli("-v", "batch", inputs / "jobs.csv", "--out-dir", out, "--workers", 2, "--checkpoint", checkpoint)
    assert r.returncode == 3, r.stderr  # the failures are still failures
    assert "4 finished before" in r.stdout and "run in" not in r.stdout
    assert "corrupt" in r.stderr and "--retry-failed" in r.stderr
    assert snapshot(out) == before
    # no worker was started: with -v the runner logs every start ("starting N local worker(s)")
    assert "starting" not in r.stderr and "worker" not in r.stderr, r.stderr


def test_retry_failed_and_verified_resume(local_run, inputs, checkpoint, tmp_path):
    """A damaged output is made again; --retry-failed runs the failed job again; the rest stays."""
    _, first = local_run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    n_before = len(lines(out))
    photo = out / "photo.mp4"
    photo.write_bytes(photo.read_bytes()[:-1] + b"\0")  # same size, different bytes
    speak = snapshot(out)["speak.mp4"]
    r = cli("batch", inputs / "jobs.csv", "--out-dir", out, "--checkpoint", checkpoint, "--retry-failed")
    assert r.returncode == 3, r.stderr
    recs = lines(out)
    new = recs[n_before:]
    assert sorted(x["id"] for x in new) == ["corrupt", "photo"]  # nofile is known bad: not recorded again
    by = {x["id"]: x for x in new}
    assert by["photo"]["status"] == "ok" and by["corrupt"]["status"] == "error"
    check_files(out, by["photo"])
    assert snapshot(out)["speak.mp4"] == speak
    no_temporaries(out)


def test_strict_stops_before_any_work(inputs, checkpoint, tmp_path):
    out = tmp_path / "out"
    r = cli("batch", inputs / "jobs.csv", "--out-dir", out, "--checkpoint", checkpoint, "--strict")
    assert r.returncode == 2, r.stderr
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "1 bad row" in errors[0] and "missing.jpg" in errors[0], r.stderr
    assert not out.exists()


def test_missing_weights_stop_the_batch_with_one_clear_line(inputs, tmp_path):
    out = tmp_path / "out"
    r = cli("batch", inputs / "jobs.csv", "--out-dir", out, "--checkpoint", tmp_path / "nope.pth")
    assert r.returncode == 2, r.stderr
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "--checkpoint" in errors[0] and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl"]  # only the bad row's line
    assert [x["id"] for x in lines(out)] == ["nofile"]


def _long_jobs(inputs: Path, n: int = 1) -> Path:
    text = "This sentence is long enough to keep one worker busy for a few seconds of video."
    return write_csv(inputs / "long.csv", [
        {"id": f"long{i}", "image": "face.jpg", "text": text, "voice": "espeak:en-us"} for i in range(n)
    ])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_no_partial_file(inputs, checkpoint, tmp_path, signum):
    jobs = _long_jobs(inputs)
    out = tmp_path / "out"
    env = dict(os.environ, LIPSYNC_OFFLINE="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "lipsync", "batch", str(jobs), "--out-dir", str(out), "--checkpoint", str(checkpoint)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".lipsync-staging-*/*/*.part.mp4")):  # a job is encoding
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        family = psutil.Process(p.pid).children(recursive=True)
        assert family, "no worker process"
        p.send_signal(signum)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signum, err
    assert "interrupted" in err and "Traceback" not in err
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert alive == []  # workers and their encoders are gone
    no_temporaries(out)
    names = {p.name for p in out.iterdir()}
    recs = lines(out) if (out / "results.jsonl").exists() else []
    for rec in recs:  # whatever finished is whole and recorded
        assert rec["status"] == "ok"
        check_files(out, rec)
    assert names - {"results.jsonl"} == {f"{x['id']}.mp4" for x in recs}
    if signum == signal.SIGTERM:  # and the next run finishes the rest
        r = cli("batch", jobs, "--out-dir", out, "--checkpoint", checkpoint)
        assert r.returncode == 0, r.stderr
        assert [x["id"] for x in lines(out)] == ["long0"]


def test_local_worker_killed_mid_job_is_retried(inputs, checkpoint, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", [
        {"id": "before", "image": inputs / "face.jpg", "text": "One.", "voice": "espeak:en-us"},
        {"id": "crashme", "image": inputs / "face.jpg", "text": "Two.", "voice": "espeak:en-us"},
        {"id": "after", "image": inputs / "face.jpg", "text": "Three.", "voice": "espeak:en-us"},
    ])
    fired = tmp_path / "fired"
    exe = fake_ffmpeg(tmp_path, fired)
    out = tmp_path / "out"
    r = cli("batch", jobs, "--out-dir", out, "--checkpoint", checkpoint, "--workers", 2,
            env_extra={"LIPSYNC_FFMPEG": str(exe)})
    assert r.returncode == 0, r.stderr  # every job done in the end: exit 0
    assert "3 of 3 ok" in r.stdout
    assert fired.exists()  # a worker really died
    recs = lines(out)
    assert sorted(x["id"] for x in recs) == ["after", "before", "crashme"]  # one line each
    assert {x["id"]: x["attempts"] for x in recs} == {"before": 1, "crashme": 2, "after": 1}
    assert sorted(p.name for p in out.iterdir()) == ["after.mp4", "before.mp4", "crashme.mp4", "results.jsonl"]
    for rec in recs:
        check_files(out, rec)


# ----------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray instance with 2 CPUs for this module. Its workers run offline, import
    lipsync from this checkout, and use an ffmpeg that kills its worker on job 'crashme' once."""
    ray = pytest.importorskip("ray")
    d = tmp_path_factory.mktemp("ray")
    fired = d / "fired"
    saved = {k: os.environ.get(k) for k in ("LIPSYNC_OFFLINE", "LIPSYNC_FFMPEG", "PYTHONPATH")}
    os.environ["LIPSYNC_OFFLINE"] = "1"
    os.environ["LIPSYNC_FFMPEG"] = str(fake_ffmpeg(d, fired))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved["PYTHONPATH"]) if p)
    import lipsync.proc

    lipsync.proc.ffmpeg_exe.cache_clear()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, logging_level="WARNING")
    try:
        yield {"address": ray.get_runtime_context().gcs_address, "fired": fired}
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        lipsync.proc.ffmpeg_exe.cache_clear()


def _decoded(mp4: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp4), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8)


def _audio_md5(mp4: Path) -> str:
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp4), "-map", "0:a", "-f", "md5", "-"],
                          capture_output=True, check=True, text=True).stdout.strip()


#: the rows the Ray run repeats: each kind of outcome and file (video, HLS zip with subtitles, captions)
RAY_IDS = ("photo", "nofile", "corrupt", "captioned")


def test_ray_gives_the_same_results(ray_cluster, local_run, inputs, checkpoint, tmp_path):
    """The CLI joins the running cluster by address; the same rows, the same outcome and bytes."""
    _, local_out = local_run
    out = tmp_path / "out"
    jobs = write_csv(inputs / "ray.csv", [r for r in ROWS if r["id"] in RAY_IDS], COLUMNS)
    r = cli("batch", jobs, "--out-dir", out, "--checkpoint", checkpoint,
            f"--ray={ray_cluster['address']}", "--cpus-per-worker", 1)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    here = {x["id"]: x for x in lines(local_out)[: len(ROWS)] if x["id"] in RAY_IDS}
    there = {x["id"]: x for x in lines(out)}
    assert set(here) == set(there)
    for job_id, a in here.items():
        b = there[job_id]
        assert (b["status"], b["error"], b["job"]) == (a["status"], a["error"], a["job"]), job_id
        if a["status"] == "ok":
            check_files(out, b)
            # the same video: frames equal up to float rounding (kernels may round a few pixels
            # differently in another process layout), the same length and soundtrack
            va, vb = _decoded(local_out / f"{job_id}.mp4"), _decoded(out / f"{job_id}.mp4")
            assert va.shape == vb.shape and np.abs(va.astype(int) - vb.astype(int)).max() <= 3
            assert _audio_md5(local_out / f"{job_id}.mp4") == _audio_md5(out / f"{job_id}.mp4")
            assert {k: v for k, v in b["result"].items() if k not in ("timings", "network_busy")} == {
                k: v for k, v in a["result"].items() if k not in ("timings", "network_busy")
            }
    for name in ("photo_hls.zip", "captioned_hls.zip"):
        assert zip_members(out / name) == zip_members(local_out / name)
    made_here = [p.name for p in local_out.iterdir() if p.name.split(".")[0].removesuffix("_hls") in RAY_IDS]
    assert sorted(p.name for p in out.iterdir()) == sorted(made_here + ["results.jsonl"])


def test_ray_worker_killed_mid_job_is_retried(ray_cluster, inputs, checkpoint, tmp_path):
    from lipsync.batch import EngineSettings, run_batch

    jobs = write_csv(tmp_path / "jobs.csv", [
        {"id": f"job{i}" if i != 1 else "crashme", "image": inputs / "face.jpg", "text": f"Number {i}.",
         "voice": "espeak:en-us"} for i in range(4)
    ])
    out = tmp_path / "out"
    s = run_batch(jobs, out, ray=True, cpus_per_worker=1, settings=EngineSettings(checkpoint=str(checkpoint), precision=PRECISION))
    assert ray_cluster["fired"].exists()  # an actor really died mid-job
    assert s.success and s.ok == 4 and s.ran == 4
    recs = lines(out)
    assert sorted(x["id"] for x in recs) == ["crashme", "job0", "job2", "job3"]  # one line each
    assert {x["id"]: x["attempts"] for x in recs}["crashme"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{x['id']}.mp4" for x in recs] + ["results.jsonl"])
    for rec in recs:
        assert rec["status"] == "ok"
        check_files(out, rec)
    # and a re-run through Ray has nothing to do
    again = run_batch(jobs, out, ray=True, cpus_per_worker=1, settings=EngineSettings(checkpoint=str(checkpoint), precision=PRECISION))
    assert again.ran == 0 and again.already_done == 4 and len(lines(out)) == 4
