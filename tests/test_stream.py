"""Streaming generation: segments handed over while the video is made, and cancelling.

One streamed request and the same request run plainly are made once for the
module (a ~4 s espeak-ng narration, frame step 2); the tests compare them with
ffmpeg/ffprobe: frames by their decoded MD5s, audio by its packets' timestamps
and its decoded samples.

Ordering is proven, not raced: :func:`held_network` stops the network part-way
through a clip until an event is set (a segment delivered, a cancel), so
"a segment arrives before the last frame is made" and "ffmpeg is still
encoding when the consumer cancels" hold on any machine, however loaded.
"""

from __future__ import annotations

import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import EXAMPLE, temp_entries
from lipsync import Cancelled, GenerateOptions, LipSyncError, Request
from lipsync.media.encode import VideoWriter, keyframe_interval, write_wav
from lipsync.media.segments import SegmentOutput, SegmentStream

TEXT = "Hello there, astronaut. How is the view today? It is breathtaking."
OPTS = GenerateOptions(voice="espeak:en-us", frame_step=2, captions=True)


def frame_md5s(path: Path, *, copy: bool = False) -> list[str]:
    """MD5 of every decoded video frame (or, with ``copy``, of every packet as stored)."""
    args = ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v"]
    args += ["-c", "copy"] if copy else []
    out = subprocess.run(args + ["-f", "framemd5", "-"], check=True, capture_output=True, text=True).stdout
    return [line.rsplit(",", 1)[-1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def packets(path: Path, stream: str) -> list[tuple[float, float, str]]:
    """(pts, duration, flags) of every packet of one stream, in seconds."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries", "packet=pts_time,duration_time,flags",
         "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = []
    for line in out.split():
        pts, dur, flags = line.split(",")[:3]
        rows.append((float(pts), float(dur), flags))
    return rows


def pcm(source: str) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", source, "-map", "0:a", "-f", "s16le", "-ac", "1", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(out, np.int16)


def children() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if c.is_running() and c.status() != "zombie"]


#: the network is held (after at least this many frames) at most this long; a test that needs longer has failed
HOLD_TIMEOUT_S = 45.0


@contextmanager
def held_network(engine, until: threading.Event, on_hold=None):
    """While inside, the engine's network stops before it hands over the clip's last batch, until ``until`` is set.

    So the encoder cannot have the last frame before ``until``: whatever the
    machine's speed, anything that happens first happened while the video was
    still being made. Yields a dict: ``held_at`` (frames handed over when it
    stopped, None if it never did) and ``timed_out`` (``until`` was not set
    within :data:`HOLD_TIMEOUT_S`). ``on_hold()`` is called as it stops.
    """
    gen = engine.generator
    real = gen.predict
    state: dict = {"held_at": None, "timed_out": False}

    def predict(*args, **kwargs):
        it = iter(real(*args, **kwargs))
        last = next(it, None)
        made = 0
        for batch in it:  # one batch in hand: the one left when the network is done is the last
            yield last
            made += len(last)
            last = batch
        if last is not None:
            state["held_at"] = made
            if on_hold is not None:
                on_hold()
            state["timed_out"] = not until.wait(HOLD_TIMEOUT_S)
            yield last

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gen, "predict", predict)
        yield state


@pytest.fixture(scope="module")
def streamed(engine, tmp_path_factory):
    """A streamed run (segments kept), its progress and the order of events, and a plain run of the same request."""
    d = tmp_path_factory.mktemp("stream")
    events: list[tuple] = []
    lock = threading.Lock()

    def progress(stage, done, total):
        with lock:
            events.append(("progress", stage, done, total))

    def held():
        with lock:
            events.append(("held",))

    first = threading.Event()  # the network waits, part-way, until the first segment has been delivered
    def captions(cues):
        with lock:
            events.append(("captions", tuple(cues), (d / "streamed.vtt").exists()))

    stream = engine.stream(Request(EXAMPLE, d / "streamed.mp4", text=TEXT, options=OPTS), progress,
                           folder=d / "segs", on_captions=captions)
    segments = []
    with held_network(engine, first, held) as hold:
        for seg in stream:
            with lock:
                events.append(("segment", seg.index))
            segments.append(seg)
            first.set()
    assert hold["held_at"] is not None and not hold["timed_out"], hold
    plain = engine.run(Request(EXAMPLE, d / "plain.mp4", text=TEXT, options=OPTS))
    return stream.result, segments, events, plain, d


def test_segments_are_independent_one_second_pieces(streamed):
    result, segments, _events, _plain, _d = streamed
    gop = keyframe_interval(result.fps)
    assert len(segments) == -(-result.frames // gop) >= 3
    assert [s.index for s in segments] == list(range(len(segments)))
    for seg in segments:
        assert seg.path.is_file() and seg.path.suffix == ".ts"
        video = packets(seg.path, "v")
        assert video[0][2].startswith("K"), f"segment {seg.index} does not start on a keyframe"
        assert sum(1 for p in video if p[2].startswith("K")) == 1
        assert len(video) == seg.frames
        # it plays on its own: H.264 with its headers, and AAC, decoded without a complaint
        check = subprocess.run(["ffmpeg", "-v", "error", "-i", str(seg.path), "-f", "null", "-"],
                               capture_output=True, text=True)
        assert check.returncode == 0 and not check.stderr.strip(), check.stderr
        assert len(packets(seg.path, "a")) > 0
    assert [s.frames for s in segments[:-1]] == [gop] * (len(segments) - 1)
    assert sum(s.frames for s in segments) == result.frames
    assert segments[0].start_s == 0 and segments[-1].end_s == pytest.approx(result.duration_s)
    for a, b in zip(segments, segments[1:]):
        assert b.start_s == pytest.approx(a.end_s)


def test_joined_segments_are_the_mp4(streamed, tmp_path):
    """Concatenated, the segments decode to the MP4's frames, and their audio runs on without a gap."""
    result, segments, _events, _plain, _d = streamed
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(s.path.read_bytes() for s in segments))
    assert frame_md5s(joined) == frame_md5s(result.video)
    assert len(frame_md5s(joined)) == result.frames

    # audio: each segment's first packet starts where the previous segment's last one ended
    audio = [packets(s.path, "a") for s in segments]
    for prev, nxt in zip(audio, audio[1:]):
        end = prev[-1][0] + prev[-1][1]
        assert abs(nxt[0][0] - end) <= 0.001, f"gap of {nxt[0][0] - end:.4f} s at a join"
    # ...and it is the MP4's soundtrack, sample for sample (MPEG-TS keeps the encoder's
    # 1024 priming samples that the MP4's edit list hides)
    whole, stitched = pcm(str(result.video)), pcm(str(joined))
    assert len(stitched) == len(whole) + 1024
    np.testing.assert_array_equal(stitched[1024:], whole)
    assert len(whole) / result.sample_rate == pytest.approx(result.audio_duration_s, abs=0.1)


def test_streamed_mp4_is_the_plain_runs(streamed):
    """Making segments changes nothing in the MP4: the same packets as a run without them, faststart."""
    from test_encode import top_level_atoms

    result, _segments, _events, plain, _d = streamed
    assert frame_md5s(result.video, copy=True) == frame_md5s(plain.video, copy=True)
    assert frame_md5s(result.video) == frame_md5s(plain.video)
    atoms = top_level_atoms(result.video)
    assert atoms.index("moov") < atoms.index("mdat")
    assert result.captions is not None and result.captions.read_text() == plain.captions.read_text()


def test_segments_arrive_while_frames_are_still_being_made(streamed):
    """The first segment is handed over before the network has made the clip's last batch.

    The network stops before its last batch and resumes only once a segment
    has been delivered (the fixture fails if none comes within
    ``HOLD_TIMEOUT_S``): so the segment came before the last frame was made,
    on any machine, however loaded.
    """
    result, _segments, events, _plain, _d = streamed
    first = events.index(("segment", 0))
    assert ("held",) in events  # the network did stop before its last batch (and was let go by the segment)
    made = [e[2] for e in events[:first] if e[0] == "progress" and e[1] == "lipsync"]
    assert made and max(made) < result.frames
    later = [e[2] for e in events[first:] if e[0] == "progress" and e[1] == "lipsync"]
    assert later and max(later) == result.frames


def test_captions_reach_the_stream_before_the_first_segment(streamed):
    """A live preview gets the cues before any frame; the .vtt beside the MP4 appears only with the MP4."""
    from lipsync.media.captions import read_vtt, to_vtt

    result, _segments, events, _plain, _d = streamed
    given = [e for e in events if e[0] == "captions"]
    assert len(given) == 1
    _, cues, published_early = given[0]
    assert events.index(given[0]) < events.index(("segment", 0))
    assert not published_early
    assert read_vtt(to_vtt(cues)) == read_vtt(result.captions) and len(cues) >= 2  # the same, to the ms


def test_cancel_stops_the_run_and_leaves_nothing(engine, own_tempdir, tmp_path):
    before = temp_entries()
    out = tmp_path / "out" / "cancelled.mp4"
    cancel = threading.Event()
    seen = []
    stream = engine.stream(Request(EXAMPLE, out, text=TEXT, options=OPTS), cancel=cancel)
    with held_network(engine, cancel) as hold:  # held until the cancel
        with pytest.raises(Cancelled):
            for seg in stream:
                seen.append(seg)
                assert children(), "ffmpeg should still be encoding"  # it cannot have had the last frame
                cancel.set()
    assert len(seen) == 1 and not hold["timed_out"]
    assert stream.done.is_set()
    assert not children(), [c.cmdline() for c in children()]
    assert temp_entries() == before  # work folder, segments and TTS files removed
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no MP4, no part file, no captions

    # the engine is free for the next request
    r = engine.run(Request(EXAMPLE, out, audio=None, text="Next one.", options=OPTS))
    assert r.video.is_file() and r.captions.is_file()


def test_leaving_the_loop_cancels(engine, own_tempdir, tmp_path):
    before = temp_entries()
    cancel = threading.Event()
    stream = engine.stream(Request(EXAMPLE, tmp_path / "left.mp4", text=TEXT, options=OPTS), cancel=cancel)
    with held_network(engine, cancel) as hold:  # the run cannot finish first
        for _seg in stream:
            break  # closing the generator cancels the run and waits for it
    assert not hold["timed_out"]
    assert stream.done.is_set() and stream.cancel.is_set()
    assert not children()
    assert temp_entries() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_cancel_before_the_network_runs(engine, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="cancelled"):
        engine.run(Request(EXAMPLE, tmp_path / "x.mp4", text="Hi.", options=OPTS), cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_segment_callback_fails_the_run_cleanly(engine, own_tempdir, tmp_path):
    def refuse(seg):
        raise LipSyncError("no room for segments")

    before = temp_entries()
    with pytest.raises(LipSyncError, match="no room"):
        engine.run(Request(EXAMPLE, tmp_path / "y.mp4", text="Hi there.", options=OPTS), on_segment=refuse)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert temp_entries() == before and not children()


def test_stream_of_a_failing_job_raises_and_cleans_up(tmp_path):
    def job(on_segment, cancel):
        raise LipSyncError("broken job")

    stream = SegmentStream(job)
    with pytest.raises(LipSyncError, match="broken job"):
        list(stream)
    assert stream.folder is not None and not stream.folder.exists()
    with pytest.raises(RuntimeError):
        list(stream)  # one iteration only


def test_writer_segments_with_awkward_paths(tmp_path):
    """Quotes, pipes, brackets, colons and percent signs in the folders survive the tee muxer's parsing."""
    odd = tmp_path / "we ird'[x]|y:z,=%d q"
    odd.mkdir()
    wav = write_wav(odd / "a.wav", 0.3 * np.sin(np.linspace(0, 900, int(2.3 * 16000))), 16000)
    got = []
    seg_out = SegmentOutput(odd / "segs [1]|'x", got.append, fps=20, gop=keyframe_interval(20))
    with VideoWriter(odd / "out 'a'|b[c].mp4", 64, 48, 20, wav, segments=seg_out) as w:
        for i in range(46):
            w.write(np.full((48, 64, 3), i * 5, np.uint8))
    assert (odd / "out 'a'|b[c].mp4").is_file()
    assert [(s.index, s.frames) for s in got] == [(0, 20), (1, 20), (2, 6)]
    assert all(s.path.is_file() and s.path.parent == odd / "segs [1]|'x" for s in got)
    assert len(frame_md5s(odd / "out 'a'|b[c].mp4")) == 46


def test_segments_must_match_the_keyframes(tmp_path):
    from lipsync.errors import EncodeError

    with pytest.raises(EncodeError, match="keyframes"):
        VideoWriter(tmp_path / "v.mp4", 64, 48, 25, segments=SegmentOutput(tmp_path / "s", print, fps=25, gop=10))
    assert keyframe_interval(25) == 25 and keyframe_interval(2) == 4
