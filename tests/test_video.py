"""A driving video as the face source: probing, decoding, tracking, looping, generation, hostile files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bad_videos import CORPUS, child_processes, make
from conftest import ffprobe, in_process
from conftest import temp_entries as _temp_entries
from lipsync import GenerateOptions, LipSyncError, NoFaceError, Request, Speech, VideoError
from lipsync.face import FaceBox
from lipsync.media.video import VideoDecoder, probe_video, working_size
from lipsync.sources import edge_fade, loop_indices
from videos import SIZE, decode_frames, pan_frames, pan_truth, psnr, speechlike, write_video

FPS = 25
N_PAN = 50  #: the pan video: 2 s at 25 fps


@pytest.fixture(scope="module")
def pan(tmp_path_factory):
    """(path, frames as written) of the example portrait panned and zoomed over 2 s, 256x256."""
    frames = pan_frames(N_PAN)
    path = write_video(tmp_path_factory.mktemp("pan") / "pan.mp4", frames)
    return path, frames


@pytest.fixture(scope="module")
def decoded_pan(pan):
    """The pan video as this library decodes it (the reference for "the video's own pixels")."""
    info = probe_video(pan[0])
    with VideoDecoder(info, FPS, working_size(info, 1280)) as dec:
        return np.stack(list(dec))


def _speech(seconds: float, pauses=()) -> Speech:
    return Speech(speechlike(seconds, pauses=pauses), 16000)


def _clean(out: Path, before: set) -> None:
    assert not out.exists()
    assert not list(out.parent.glob("*.part.mp4"))
    assert _temp_entries() == before
    assert child_processes() == []


# ----------------------------------------------------------------------------- probing and decoding


def test_probe_reports_container_codec_size_and_duration(pan):
    info = probe_video(pan[0])
    assert (info.container, info.codec, info.width, info.height) == ("mp4", "h264", SIZE, SIZE)
    assert info.duration_s == pytest.approx(2.0, abs=0.05) and info.frames == N_PAN and info.rotation == 0


def test_decoded_frames_match_the_written_ones(pan, decoded_pan):
    assert decoded_pan.shape == (N_PAN, SIZE, SIZE, 3)
    assert min(psnr(a, b) for a, b in zip(decoded_pan, pan[1])) > 35


@pytest.mark.parametrize("container, codec", [
    ("mov", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    ("webm", ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "30", "-deadline", "realtime", "-cpu-used", "8"]),
    ("mkv", ["-c:v", "mpeg4", "-q:v", "2"]),
    # AVI as cameras and older tools write it: MPEG-4 Part 2 (XviD/DivX), MJPEG, H.264
    ("avi", ["-c:v", "mpeg4", "-vtag", "XVID", "-q:v", "2"]),
    ("avi", ["-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj420p"]),
    ("avi", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
])
def test_common_containers_and_codecs(tmp_path, pan, container, codec):
    path = write_video(tmp_path / f"clip.{container}", pan[1][:10], codec=codec)
    info = probe_video(path)
    assert info.container == {"mov": "mp4", "webm": "matroska", "mkv": "matroska", "avi": "avi"}[container]
    assert info.codec == {"mpeg4": "mpeg4", "mjpeg": "mjpeg", "libx264": "h264", "libvpx-vp9": "vp9"}[codec[1]]
    with VideoDecoder(info, FPS, (info.width, info.height)) as dec:
        frames = list(dec)
    assert len(frames) == 10
    assert psnr(frames[5], pan[1][5]) > 28


def test_rotation_metadata_is_honoured(tmp_path, pan):
    plain = write_video(tmp_path / "plain.mp4", [f[:, :192] for f in pan[1][:5]])  # 192 wide, 256 high
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(rotated)], check=True)
    info = probe_video(rotated)
    assert info.rotation in (90, 270) and (info.width, info.height) == (256, 192)
    with VideoDecoder(info, FPS, (info.width, info.height)) as dec:
        first = next(iter(dec))
    upright = pan[1][0][:, :192]
    turned = [np.rot90(upright, k) for k in (1, 3)]  # the display matrix turns it one way or the other
    assert max(psnr(first, t) for t in turned) > 30
    assert first.shape == (192, 256, 3)


def test_variable_frame_rate_comes_out_at_the_chosen_rate(tmp_path):
    """Ten frames held for uneven times (0.1 s to 0.5 s): decoded at 25 fps, each shows for its own time."""
    holds = [0.1, 0.3, 0.1, 0.5, 0.2, 0.1, 0.4, 0.1, 0.2, 0.3]  # seconds; 2.3 s in all
    starts = np.r_[0.0, np.cumsum(holds)[:-1]]
    frames = [np.full((64, 64, 3), 20 * k + 10, np.uint8) for k in range(len(holds))]
    expr = "+".join(f"{s:.2f}*eq(N\\,{k})" for k, s in enumerate(starts))  # "\\," : a comma inside a filter
    path = write_video(tmp_path / "vfr.mkv", frames, fps=25, extra=["-vf", f"setpts=({expr})/TB"],
                       codec=["-c:v", "libx264", "-crf", "0", "-pix_fmt", "yuv444p", "-fps_mode", "vfr"])
    info = probe_video(path)
    with VideoDecoder(info, FPS, (64, 64)) as dec:
        shown = [int(round((f[..., 0].mean() - 10) / 20)) for f in dec]
    assert info.duration_s is not None and abs(len(shown) - info.duration_s * FPS) <= 1
    counts = np.bincount(shown, minlength=len(holds))
    assert np.all(np.diff(shown) >= 0) and counts.min() >= 1  # in order, none skipped
    # each frame shows for its own time (the file cannot say how long the last one lasts)
    assert np.abs(counts[:-1] - np.array(holds[:-1]) * FPS).max() <= 1


def test_a_stalled_decoder_is_stopped(tmp_path, pan, monkeypatch):
    import lipsync.proc as proc

    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(0o755)
    info = probe_video(pan[0])
    monkeypatch.setenv("LIPSYNC_FFMPEG", str(fake))
    proc.ffmpeg_exe.cache_clear()
    try:
        with pytest.raises(VideoError, match="no frame for 1 s"):
            with VideoDecoder(info, FPS, (SIZE, SIZE), stall_timeout=1.0) as dec:
                list(dec)
    finally:
        monkeypatch.delenv("LIPSYNC_FFMPEG")
        proc.ffmpeg_exe.cache_clear()
    assert child_processes() == []


# ----------------------------------------------------------------------------- planning


def test_loop_indices_cut_pingpong_and_loop():
    assert loop_indices(3, 5).tolist() == [0, 1, 2]
    assert loop_indices(11, 4, "pingpong").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert loop_indices(9, 4, "loop").tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert loop_indices(4, 1).tolist() == [0, 0, 0, 0]
    idx = loop_indices(500, 37)
    assert np.abs(np.diff(idx)).max() == 1  # back and forth: never a jump, never a repeated frame
    with pytest.raises(ValueError):
        loop_indices(5, 3, "bounce")


def test_edge_fade_ramps_only_next_to_missing_faces():
    present = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1], bool)
    w = edge_fade(present, 2)
    assert w[0] == 1.0 and w[-1] == 1.0  # the clip's own ends are not faded
    assert w[4] == w[5] == 0.0
    np.testing.assert_allclose(w[[2, 3, 6, 7, 8]], [2 / 3, 1 / 3, 1 / 3, 2 / 3, 1.0])


def test_request_takes_exactly_one_of_image_and_video(tmp_path, example_image, pan):
    from lipsync.errors import InputError

    with pytest.raises(InputError, match="not both"):
        Request(example_image, tmp_path / "o.mp4", text="Hi", video=pan[0])
    with pytest.raises(InputError, match="photo"):
        Request(None, tmp_path / "o.mp4", text="Hi")
    with pytest.raises(InputError, match="does not exist"):
        Request(None, tmp_path / "o.mp4", text="Hi", video=tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="video_loop"):
        GenerateOptions(video_loop="bounce")
    assert Request(None, tmp_path / "o.mp4", text="Hi", video=str(pan[0])).video == pan[0]


# ----------------------------------------------------------------------------- end to end


@pytest.mark.usefixtures("own_tempdir")
def test_video_source_follows_the_face_and_keeps_the_rest(engine, pan, decoded_pan, tmp_path):
    """3 s of speech over the 2 s pan video: ping-pong, the face followed, everything else the video's own."""
    speech = _speech(3.0, pauses=((1.2, 1.8),))
    opts = GenerateOptions(label=False, fps=FPS)
    before = _temp_entries()
    with engine.prepare(Request(None, tmp_path / "pan_talk.mp4", audio=speech, options=opts, video=pan[0])) as parts:
        src = parts.source
        assert src.kind == "video" and src.frames == N_PAN and src.still_face is None
        n = len(parts.mels)
        assert n == 75
        index = src.index.copy()
        boxes = [src.box_at(i) for i in range(n)]
        engine.render(parts)
        result = engine.result(parts)
    assert _temp_entries() == before  # the frame spool is gone with the request
    assert result.source == "video" and result.motion == 0.0 and result.face_frames == n
    assert result.detector == "opencv-haar" and (result.width, result.height) == (SIZE, SIZE)

    # the face box follows the known path within a few pixels, in every output frame
    for i, box in enumerate(boxes):
        truth = pan_truth(int(index[i]), N_PAN) + np.array([0, 0, 0, 10])  # the default pads: 10 px down
        centre = np.array([(box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2])
        want = np.array([(truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2])
        assert np.hypot(*(centre - want)) <= 3.0, (i, box, truth)
        assert 0.9 <= box.width / (truth[2] - truth[0]) <= 1.15, (i, box, truth)

    # the duration is the audio's
    info = ffprobe(result.video)
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert int(v["nb_frames"]) == n and abs(float(info["format"]["duration"]) - 3.0) <= 1 / FPS
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}  # the speech replaced its sound

    out = decode_frames(result.video)
    assert len(out) == n
    # far from the face (outside the box grown by 16 px), each frame is the input frame it shows
    for i in range(n):
        b = boxes[i]
        keep = np.ones((SIZE, SIZE), bool)
        keep[max(0, b.y1 - 16) : b.y2 + 16, max(0, b.x1 - 16) : b.x2 + 16] = False
        assert psnr(out[i][keep], decoded_pan[index[i]][keep]) >= 30, i
    # pauses keep the video's own mouth (no paste); speaking frames get the network's
    def lower_face(i):
        b = boxes[i]
        rows, cols = slice(b.y1 + b.height // 2, b.y2), slice(b.x1, b.x2)
        return psnr(out[i][rows, cols], decoded_pan[index[i]][rows, cols])

    silent, speaking = np.flatnonzero(parts.weights == 0), np.flatnonzero(parts.weights == 1)
    assert len(silent) >= 5 and len(speaking) >= 50
    assert min(lower_face(i) for i in silent) >= 32
    assert max(lower_face(i) for i in speaking) < 25  # (the random-weight mouth differs a lot)

    # the loop point: where the source frame turns back, no bigger step than between neighbours
    step = np.array([np.abs(out[i + 1].astype(float) - out[i]).mean() for i in range(n - 1)])
    d = np.diff(index)
    turns = [i for i in range(1, n - 1) if d[i] != d[i - 1]]  # the direction changes (or the index jumps)
    assert turns[:1] == [49]  # 2 s of video, 3 s of speech: the turn (a plain loop would also resume at 50)
    for i in turns:
        assert step[i] <= np.delete(step, turns).max() + 0.5, (i, step[i], np.delete(step, turns).max())


@pytest.mark.usefixtures("own_tempdir")
def test_prepared_video_survives_pickling_for_a_gpu_worker(engine, pan, tmp_path):
    """ZeroGPU may hand the prepared request to another process: a pickled copy reads the same
    frames, and only the original removes the spool."""
    import pickle

    before = _temp_entries()
    speech = _speech(1.0)
    with engine.prepare(Request(None, tmp_path / "z.mp4", audio=speech, video=pan[0])) as parts:
        copy = pickle.loads(pickle.dumps(parts))
        np.testing.assert_array_equal(copy.source.face_at(7), parts.source.face_at(7))
        np.testing.assert_array_equal(engine.predict_mouths(copy), engine.predict_mouths(parts))
        copy.close()  # the copy does not own the spool
        assert parts.source.spool.path.is_file()
        del copy
        engine.render(parts)
    assert _temp_entries() == before


@pytest.mark.usefixtures("own_tempdir")
def test_video_is_cut_to_a_shorter_soundtrack(engine, pan, tmp_path):
    r = engine.generate(None, _speech(1.0), tmp_path / "short.mp4", GenerateOptions(label=False), video=pan[0])
    parts = {k: v for k, v in r.timings.items() if k.startswith("face.")}
    assert set(parts) == {"face.load", "face.decode", "face.spool", "face.detect", "face.track"}  # where it went
    assert r.timings["face.detect"] > 0 and sum(parts.values()) <= r.timings["face"]
    assert r.frames == 25 and r.source == "video" and r.face_frames == 25
    assert abs(float(ffprobe(r.video)["format"]["duration"]) - 1.0) <= 1 / FPS


@pytest.mark.usefixtures("own_tempdir")
def test_frames_without_a_face_keep_their_own_pixels(engine, pan, tmp_path):
    """Frames 20-29 show a grey wall: no face there, so they come out as they went in; the run succeeds."""
    frames = [f if not 20 <= i < 30 else np.full_like(f, 128) for i, f in enumerate(pan[1])]
    path = write_video(tmp_path / "gap.mp4", frames)
    r = engine.generate(None, _speech(2.0), tmp_path / "gap_talk.mp4", GenerateOptions(label=False), video=path)
    assert r.face_frames == 40 and r.frames == 50
    out = decode_frames(r.video)
    for i in range(20, 30):
        assert psnr(out[i], np.full_like(out[i], 128)) > 40


@pytest.mark.usefixtures("own_tempdir")
def test_too_few_faces_fail_and_say_how_many(engine, pan, tmp_path):
    frames = [f if i < 5 else np.full_like(f, 128) for i, f in enumerate(pan[1])]
    path = write_video(tmp_path / "brief.mp4", frames)
    before = _temp_entries()
    out = tmp_path / "brief_talk.mp4"
    with pytest.raises(NoFaceError, match=r"only 5 of the 50 video frames used \(10%\)"):
        engine.generate(None, _speech(2.0), out, video=path)
    _clean(out, before)
    grey = write_video(tmp_path / "grey.mp4", [np.full_like(pan[1][0], 128)] * 10)
    with pytest.raises(NoFaceError, match="No face was found in any of the 25 video frames"):
        engine.generate(None, _speech(1.0), out, video=grey)
    _clean(out, before)


@pytest.mark.usefixtures("own_tempdir")
def test_given_box_skips_detection_on_video(engine, pan, tmp_path):
    r = engine.generate(None, _speech(1.0), tmp_path / "boxed.mp4", GenerateOptions(box=(30, 140, 80, 180)), video=pan[0])
    assert r.detector == "given" and r.box == FaceBox(30, 140, 80, 180) and r.face_frames == 25


@pytest.mark.usefixtures("own_tempdir")
def test_frame_step_on_video_and_label(engine, pan, tmp_path):
    """Every 2nd frame through the network, blended between; the visible label drawn on every frame."""
    r = engine.generate(None, _speech(1.0), tmp_path / "step.mp4", GenerateOptions(frame_step=2), video=pan[0])
    assert r.frames == 25
    plain = engine.generate(None, _speech(1.0), tmp_path / "nolabel.mp4", GenerateOptions(frame_step=2, label=False),
                            video=pan[0])
    a, b = decode_frames(r.video), decode_frames(plain.video)
    differs = np.abs(a.astype(int) - b).max(axis=(0, 3)) > 40
    ys, xs = np.nonzero(differs)
    assert len(ys) > 50  # the label is there
    face = r.box
    assert not ((ys >= face.y1) & (ys < face.y2) & (xs >= face.x1) & (xs < face.x2)).any()


@pytest.mark.usefixtures("own_tempdir")
def test_failure_midway_leaves_nothing(engine, pan, tmp_path, monkeypatch):
    gen = engine.generator

    def broken(*a, **k):
        yield np.zeros((4, 96, 96, 3), np.float32)
        raise LipSyncError("simulated failure")

    monkeypatch.setattr(gen, "predict", broken)
    before = _temp_entries()
    out = tmp_path / "broken.mp4"
    with pytest.raises(LipSyncError, match="simulated"):
        engine.generate(None, _speech(1.0), out, video=pan[0])
    _clean(out, before)


@pytest.mark.parametrize("memory_mb", [0, 8])
def test_memory_does_not_grow_with_the_clip(tmp_path, pan, memory_mb):
    """Decoding, spooling and compositing 40 s of output from a 10 s video holds no more than 4 s does:
    on disk (a live session's frames, a long clip's) about a frame; in memory, the frames up to the budget."""
    import tracemalloc

    from lipsync.sources import scan_video

    path = write_video(tmp_path / "ten.mp4", [f for f in pan[1] for _ in range(5)])  # 250 frames, 10 s
    info = probe_video(path)
    opts = GenerateOptions(box=(30, 140, 80, 180), label=False)

    def peak(n: int) -> int:
        tracemalloc.start()
        source = scan_video(info, opts, n, memory_mb=memory_mb)
        assert not source.spool.in_memory  # 250 frames of 0.2 MB outgrow 8 MB: moved to the disk
        comp = source.compositor(type("P", (), {"weights": None})())
        pred = np.full((96, 96, 3), 0.5, np.float32)
        frame = np.empty_like(comp.image)
        for i in range(n):
            comp.paste(pred, out=frame)
            if i % 7 == 0:
                source.face_at(i)
        source.close()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    peak(10)  # first use: lazy imports and caches
    short, long = peak(100), peak(1000)
    budget = memory_mb * 2**20  # held until the budget ran out, then moved to the file
    assert short < budget + 8_000_000 and long < short + 1_000_000, (short, long)  # one 256x256 frame is 0.2 MB


def test_a_short_clip_stays_in_memory_exactly_and_a_long_one_goes_to_disk(tmp_path):
    """Frames held in memory come back bit for bit; past the budget they move to the JPEG file
    (all of them, in order), and a pickled copy (a GPU worker) reads the file."""
    import pickle

    from lipsync.sources import FrameSpool

    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) // 16 * 16 for _ in range(6)]
    one = frames[0].nbytes
    held = FrameSpool(tmp_path / "a.jpgs", memory_bytes=6 * one)
    spilled = FrameSpool(tmp_path / "b.jpgs", memory_bytes=3 * one)
    for f in frames:
        held.append(f)
        spilled.append(f)
    assert held.in_memory and held.nbytes == 6 * one and (tmp_path / "a.jpgs").stat().st_size == 0
    assert not spilled.in_memory and len(spilled) == 6 and 0 < spilled.nbytes < 6 * one
    out = np.empty_like(frames[0])
    for i, f in enumerate(frames):
        got = held.read(i)
        np.testing.assert_array_equal(got, f)
        got[:] = 0  # the caller's own copy
        assert held.read(i, out=out) is out and np.array_equal(out, f)
        assert np.abs(spilled.read(i).astype(int) - f).mean() < 8  # JPEG, in order
    copy = pickle.loads(pickle.dumps(held))  # written to the file first
    assert not held.in_memory and not copy.in_memory and len(copy) == 6
    np.testing.assert_array_equal(copy.read(4), held.read(4))
    for s in (held, spilled, copy):
        s.close()


# ----------------------------------------------------------------------------- hostile videos


def _names():
    return sorted(CORPUS)


@pytest.mark.usefixtures("own_tempdir")
@pytest.mark.parametrize("name", _names())
def test_video_corpus_through_the_api(engine, tmp_path, name):
    fname, _, expect, needles = CORPUS[name]
    path = tmp_path / "in" / fname
    path.parent.mkdir()
    path.write_bytes(make(name))
    out = tmp_path / "out" / "talk.mp4"
    before = _temp_entries()
    if expect == "photo":
        r = engine.generate(None, _speech(1.0), out, video=path)
        assert r.source == "photo" and r.motion > 0 and r.frames == 25 and out.is_file()
        assert child_processes() == []
        return
    with pytest.raises(VideoError) as e:
        engine.generate(None, _speech(1.0), out, video=path)
    msg = str(e.value)
    for needle in needles:
        assert needle.lower() in msg.lower(), msg
    assert "Traceback" not in msg and len(msg) < 400
    _clean(out, before)


@pytest.mark.parametrize("name", _names())
def test_video_corpus_through_the_command_line(name, tmp_path, checkpoint, capsys, shared_engine):
    """The command line's own code path, in this process, on one engine loaded for the module."""
    from lipsync.media.encode import write_wav

    fname, _, expect, needles = CORPUS[name]
    path = tmp_path / fname
    path.write_bytes(make(name))
    wav = write_wav(tmp_path / "speech.wav", speechlike(1.0), 16000)
    out = tmp_path / "out" / "v.mp4"
    r = in_process(capsys, "generate", "--video", path, "--audio", wav, "--out", out, "--checkpoint", checkpoint)
    code, err = r.returncode, r.stderr
    assert "Traceback" not in err
    if expect == "photo":
        assert code == 0, err
        assert out.is_file()
    else:
        assert code == 2, err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1, err
        assert all(n.lower() in lines[0].lower() for n in needles), lines[0]
        assert not out.exists()
    assert child_processes() == []


def test_an_avi_header_does_not_decide_the_picture_size(tmp_path):
    """An AVI whose header claims 30000x30000 pictures: the size comes from the pictures themselves."""
    from bad_videos import avi, patch_avi

    path = tmp_path / "claims_huge.avi"
    path.write_bytes(patch_avi(avi("mjpeg"), size=(30000, 30000)))
    info = probe_video(path)
    assert (info.container, info.codec, info.width, info.height, info.frames) == ("avi", "mjpeg", 128, 96, 25)
    with VideoDecoder(info, FPS, (128, 96)) as dec:
        assert sum(1 for _ in dec) == 25
    assert child_processes() == []


@pytest.mark.parametrize("fname, head", [("clip.mp4", b""), ("clip.avi", b""), ("clip.avi", None)])
def test_video_playlists_follow_nothing(tmp_path, fname, head):
    """A playlist as a video, bare or behind an AVI header: refused, and no reference is followed."""
    from bad_audio import Bait
    from bad_videos import AVI_THEN_PLAYLIST

    with Bait(tmp_path) as bait:
        playlist = (f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{bait.file.name}\n#EXTINF:1,\n{bait.url}/x.ts\n"
                    "#EXT-X-ENDLIST\n").encode()
        if head is None:
            head = AVI_THEN_PLAYLIST[: AVI_THEN_PLAYLIST.index(b"#EXTM3U")]
        (tmp_path / fname).write_bytes(head + playlist)
        with pytest.raises(VideoError, match="playlist|no video track"):
            probe_video(tmp_path / fname)
    assert bait.hits == []


# ----------------------------------------------------------------------------- command line and app


@pytest.mark.slow
def test_command_line_video_end_to_end(tmp_path, pan, checkpoint, shared_engine, capsys):
    """`lipsync generate --video` through main() in this process, on the shared engine (test_cli.py starts
    the command as a user does)."""
    from lipsync.media.encode import write_wav

    wav = write_wav(tmp_path / "speech.wav", speechlike(3.0), 16000)
    out = tmp_path / "talk.mp4"
    r = in_process(capsys, "generate", "--video", pan[0], "--audio", wav, "--out", out, "--checkpoint", checkpoint,
                   "--video-loop", "loop", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["source"] == "video" and result["face_frames"] == 75 and result["frames"] == 75
    assert result["motion"] == 0.0
    assert ffprobe(out)["streams"]
    both = in_process(capsys, "generate", "--video", pan[0], "--image", pan[0], "--audio", wav, "--out", out,
                      "--checkpoint", checkpoint)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    bad = in_process(capsys, "generate", "--image", pan[0], "--audio", wav, "--out", tmp_path / "m.mp4", "--motion", "2",
                     "--checkpoint", checkpoint)
    assert bad.returncode == 2 and "motion must be between 0" in bad.stderr


