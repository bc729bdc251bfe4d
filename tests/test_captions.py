"""Captions: timed by the synthesis, carried through length fitting, written as WebVTT,
segmented for HLS, burnt into frames, and offered by the library and the command line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLE, ROOT, in_process
from lipsync import GenerateOptions, InputError, Request
from lipsync.face import FaceBox
from lipsync.media.audio import Phrase, Speech
from lipsync.media.captions import (
    CaptionBurner,
    Cue,
    cues_for,
    hls_vtt_segment,
    read_vtt,
    vtt_time,
    write_vtt,
)
from lipsync.speech import tts
from lipsync.speech.activity import active_range
from lipsync.speech.post import LOOP_PAUSE_S, MIN_PHRASE_S, fit_length

SR = 16000


def bursts(spec: list[tuple[float, float]], total: float) -> Speech:
    """A tone in each (start, end) second range, silence (a little noise) elsewhere, with phrases for each."""
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(int(total * SR)) * 1e-4).astype(np.float32)
    phrases = []
    for i, (a, b) in enumerate(spec):
        t = np.arange(int(a * SR), int(b * SR))
        wav[t] = 0.4 * np.sin(2 * np.pi * 220 * t / SR)
        phrases.append(Phrase(f"phrase {i}", a, b))
    return Speech(wav, SR, tuple(phrases))


# ----------------------------------------------------------------------------- timing by the synthesis


def test_narration_times_each_sentence_where_it_is_heard():
    text = "Hello there, astronaut. How is the view today? It is breathtaking!"
    speech, voice = tts.narrate(text, "espeak:en-us")
    assert voice.id == "espeak:en-us"
    assert [p.text for p in speech.phrases] == [s for s, _ in tts.split_sentences(text)]
    sr, wav = speech.sample_rate, speech.samples
    ends = [0.0]
    for p in speech.phrases:
        assert ends[-1] <= p.start_s < p.end_s <= speech.duration_s
        a, b = int(p.start_s * sr), int(p.end_s * sr)
        # the voice starts and ends inside the phrase's span, within the trimming margins
        rng = active_range(wav[a:b], sr)
        assert rng is not None
        assert rng[0] / sr <= 0.05 and (b - a - rng[1]) / sr <= 0.1
        ends.append(p.end_s)
    # between phrases there is only the pause: no voice
    for p, q in zip(speech.phrases, speech.phrases[1:]):
        gap = wav[int(p.end_s * sr) : int(q.start_s * sr)]
        assert q.start_s - p.end_s == pytest.approx(tts.SENTENCE_PAUSE_S - sum(tts.EDGE_S), abs=0.002)
        assert np.abs(gap).max() < 0.01


def test_natural_and_padded_length_keep_the_phrases():
    speech = bursts([(0.2, 1.0), (1.5, 2.4)], 2.6)
    assert fit_length(speech, 0).phrases == speech.phrases
    padded = fit_length(speech, 5.0)
    assert padded.duration_s == pytest.approx(5.0) and padded.phrases == speech.phrases


def test_loop_repeats_the_phrases_with_the_speech():
    speech = bursts([(0.2, 1.0), (1.5, 2.4)], 2.6)
    looped = fit_length(speech, 10.0, loop=True)
    period = 2.6 + LOOP_PAUSE_S
    copies = int((10.0 + LOOP_PAUSE_S) // period)
    assert copies == 3 and len(looped.phrases) == 2 * copies
    for k in range(copies):
        for p, q in zip(speech.phrases, looped.phrases[2 * k : 2 * k + 2]):
            assert q.text == p.text
            assert q.start_s == pytest.approx(p.start_s + k * period, abs=1 / SR)
            assert q.end_s == pytest.approx(p.end_s + k * period, abs=1 / SR)
            # the audio really is there: the repeated tone starts where the repeated phrase does
            a = int(q.start_s * SR)
            np.testing.assert_array_equal(looped.samples[a : a + 100], speech.samples[int(p.start_s * SR) :][:100])


def test_a_cut_drops_later_phrases_and_trims_the_one_it_falls_in():
    speech = bursts([(0.2, 1.0), (1.5, 2.4), (2.8, 3.6)], 3.8)
    # a cut in the pause after the second phrase: the third is dropped, the others kept
    cut = fit_length(speech, 2.7)
    assert [p.text for p in cut.phrases] == ["phrase 0", "phrase 1"]
    assert cut.phrases[1].end_s <= 2.7
    # no pause late enough: a hard cut inside the last phrase trims it
    one = bursts([(0.1, 3.0)], 3.2)
    hard = fit_length(one, 2.0)
    assert len(hard.phrases) == 1 and hard.phrases[0].end_s == pytest.approx(2.0, abs=1 / SR)
    # a remainder too short to read is dropped
    short = fit_length(bursts([(0.1, 3.0), (3.05, 3.9)], 4.0), 3.1)
    assert all(p.end_s - p.start_s >= MIN_PHRASE_S for p in short.phrases)
    assert [p.text for p in short.phrases] == ["phrase 0"]


def test_cues_split_long_sentences_and_stay_within_the_video():
    long = "Good morning from the space station. " * 5
    cues = cues_for([Phrase(long, 1.0, 11.0), Phrase("Bye.", 11.5, 12.5)], duration_s=12.0)
    body = [c for c in cues if c.text != "Bye."]
    assert len(body) == 3 and all(len(c.text) <= 90 for c in body)
    assert " ".join(c.text for c in body) == " ".join(long.split())
    assert body[0].start_s == 1.0 and body[-1].end_s == pytest.approx(11.0)
    for a, b in zip(body, body[1:]):
        assert a.end_s == pytest.approx(b.start_s)
    assert cues[-1] == Cue(11.5, 12.0, "Bye.")  # clipped to the video
    assert cues_for([Phrase("Late.", 12.0, 13.0)], duration_s=12.0) == []


# ----------------------------------------------------------------------------- WebVTT


def test_webvtt_round_trip_escaping_and_ffmpeg_reads_it(tmp_path):
    cues = [Cue(0.13, 1.78, "Hello & welcome <everyone> --> here"), Cue(62.5, 3725.25, "Über-long 😀 cue")]
    path = write_vtt(cues, tmp_path / "talk.vtt")
    text = path.read_text("utf-8")
    assert text.startswith("WEBVTT\n\n00:00:00.130 --> 00:00:01.780\n")
    assert "&amp;" in text and "&lt;everyone&gt;" in text and "--&gt;" in text
    assert "01:02:05.250" in text and vtt_time(3725.25) == "01:02:05.250"
    assert read_vtt(path) == cues
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.vtt"]  # no part file left
    # an independent parser: ffmpeg's WebVTT demuxer turns it into SubRip
    srt = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "srt", "-"], check=True,
                         capture_output=True, text=True).stdout
    assert "00:00:00,130 --> 00:00:01,780" in srt and "01:02:05,250" in srt


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("00:00.000 --> 00:01.000\nno header\n", "WEBVTT"),
        ("WEBVTT\n\n00:00.000 -> 00:01.000\ntext\n", "malformed"),
        ("WEBVTT\n\n00:02.000 --> 00:01.000\ntext\n", "ends before"),
        ("WEBVTT\n\n00:61.000 --> 00:62.000\ntext\n", "malformed"),
    ],
)
def test_bad_webvtt_is_refused(bad, needle):
    with pytest.raises(InputError, match=needle):
        read_vtt(bad)


def test_webvtt_with_identifiers_notes_and_settings():
    text = "WEBVTT - made elsewhere\nX-TIMESTAMP-MAP=MPEGTS:900000,LOCAL:00:00:00.000\n\nNOTE a comment\n\n" \
           "cue-1\n00:01.000 --> 00:02.500 line:90%  align:start junk bad:x:y\n<b>bold</b> &amp; plain\n"
    assert read_vtt(text) == [Cue(1.0, 2.5, "bold & plain", "line:90% align:start")]  # settings kept, junk dropped


# ----------------------------------------------------------------------------- HLS subtitles


def test_hls_package_has_a_valid_subtitles_rendition(tmp_path):
    from lipsync.media.hls import package_hls
    from test_hls import make_clip, parse_m3u8

    clip = make_clip(tmp_path / "src.mp4", "640x360", 5)
    cues = [Cue(0.5, 1.5, "one"), Cue(1.8, 4.2, "two spans segments", "line:80.5%,end"), Cue(4.5, 4.9, "three")]
    r = package_hls(clip, tmp_path / "pkg", zip_path=tmp_path / "pkg.zip", captions=cues)
    master = parse_m3u8(r.master)
    media = master["tags"]["EXT-X-MEDIA"]
    assert len(media) == 1
    attrs = dict(re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', media[0]))
    assert attrs["TYPE"] == "SUBTITLES" and attrs["GROUP-ID"] == '"subs"' and attrs["URI"] == '"subs/index.m3u8"'
    assert attrs["DEFAULT"] == "YES" and attrs["AUTOSELECT"] == "YES" and attrs["LANGUAGE"] == '"en"'
    for stream_attrs, _uri in master["entries"]:
        assert stream_attrs["SUBTITLES"] == '"subs"'

    subs = parse_m3u8(r.subtitles)
    video = parse_m3u8(r.outdir / r.renditions[0].playlist)
    assert [d for d, _ in subs["entries"]] == [d for d, _ in video["entries"]]  # cut where the video is
    assert subs["tags"]["EXT-X-PLAYLIST-TYPE"] == ["VOD"] and "EXT-X-ENDLIST" in subs["tags"]
    target = int(subs["tags"]["EXT-X-TARGETDURATION"][0])
    assert all(round(d) <= target for d, _ in subs["entries"])
    seen, t = set(), 0.0
    for duration, uri in subs["entries"]:
        text = (r.subtitles.parent / uri).read_text("utf-8")
        assert re.search(r"^X-TIMESTAMP-MAP=MPEGTS:\d+,LOCAL:00:00:00\.000$", text, re.M)
        placed = "--> 00:00:04.200 line:80.5%,end\n" in text  # the cue's place travels with it
        assert placed == (1.8 < t + duration and t < 4.2)
        inside = read_vtt(text)
        assert all(c.start_s < t + duration and c.end_s > t for c in inside)
        seen.update(inside)
        t += duration
    assert seen == set(cues)
    import zipfile

    with zipfile.ZipFile(r.zip) as z:
        assert "subs/index.m3u8" in z.namelist() and z.read("master.m3u8") == r.master.read_bytes()


def test_captions_language_is_checked(tmp_path):
    from lipsync.media.hls import package_hls
    from test_hls import make_clip

    clip = make_clip(tmp_path / "src.mp4", "320x240", 2, audio=False)
    with pytest.raises(InputError, match="language"):
        package_hls(clip, tmp_path / "o", captions=[Cue(0, 1, "x")], captions_language='en",URI="x')
    assert not (tmp_path / "o").exists()


def test_cue_settings_keep_the_lines_above_a_label_at_the_bottom():
    from lipsync.media.captions import cue_settings, to_vtt

    assert cue_settings((400, 600, 3), None) == ""
    assert cue_settings((400, 600, 3), (8, 12, 120, 30)) == ""  # a label at the top: the bottom is clear
    s = cue_settings((400, 600, 3), (8, 360, 120, 30))
    m = re.fullmatch(r"line:([\d.]+)%,end", s)
    assert m and float(m.group(1)) * 400 / 100 <= 360 - 2 and float(m.group(1)) > 80  # just above it
    assert f"00:00:01.000 {s}\n" in to_vtt([Cue(0.5, 1.0, "x", s)])


def test_hls_segment_timestamp_map():
    text = hls_vtt_segment([Cue(0.5, 2.5, "a"), Cue(3.0, 4.0, "b")], 2.0, 4.0, 126000)
    assert text.splitlines()[1] == "X-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000"
    assert [c.text for c in read_vtt(text)] == ["a", "b"]


# ----------------------------------------------------------------------------- burnt in


class _Sink:
    def __init__(self):
        self.frames = []
        self.aborted = False

    def write(self, frame):
        self.frames.append(frame.copy())

    def close(self):
        return "closed"

    def abort(self):
        self.aborted = True


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.argwhere((a != b).any(axis=2))


@pytest.mark.parametrize(
    "face, where",
    [
        (FaceBox(40, 200, 150, 330), "bottom"),  # a face high in the picture: captions at the bottom
        (FaceBox(250, 400, 130, 350), "top"),  # a face low in the picture: captions go to the top
    ],
)
def test_burnt_captions_show_at_their_times_and_keep_off_the_face(face, where):
    frame = np.full((400, 480, 3), 90, np.uint8)
    label = (8, 360, 120, 30)  # x, y, w, h of a label to keep clear
    sink = _Sink()
    burner = CaptionBurner(sink, [Cue(0.2, 0.6, "Hello there, astronaut. How is the view today up there?")],
                           10, frame.shape, avoid=face, keep_clear=[label])
    for _ in range(10):
        burner.write(frame)
    assert burner.close() == "closed"
    shown = [len(_changed(f, frame)) > 200 for f in sink.frames]
    assert shown == [False, False, True, True, True, True, False, False, False, False]
    ys, xs = _changed(sink.frames[3], frame).T
    inside = (ys >= face.y1) & (ys < face.y2) & (xs >= face.x1) & (xs < face.x2)
    assert not inside.any(), "the caption covers the face"
    lx, ly, lw, lh = label
    assert not ((ys >= ly) & (ys < ly + lh) & (xs >= lx) & (xs < lx + lw)).any(), "the caption covers the label"
    assert (ys.mean() > 200) == (where == "bottom")
    assert xs.min() >= 0.04 * 480 and xs.max() <= 0.96 * 480  # wrapped to the width
    burner.abort()
    assert sink.aborted


# ----------------------------------------------------------------------------- library and command line


def test_captions_need_a_text(oracle_wav, tmp_path):
    with pytest.raises(InputError, match="no words"):
        Request(EXAMPLE, tmp_path / "a.mp4", audio=oracle_wav, options=GenerateOptions(captions=True))
    with pytest.raises(InputError, match="no words"):
        Request(EXAMPLE, tmp_path / "a.mp4", audio=bursts([], 1.0), options=GenerateOptions(burn_captions=True))
    # a Speech that carries its phrases can be captioned
    Request(EXAMPLE, tmp_path / "a.mp4", audio=bursts([(0.1, 0.5)], 1.0), options=GenerateOptions(captions=True))


def test_generate_writes_captions_beside_the_video(engine, tmp_path):
    opts = GenerateOptions(voice="espeak:en-us", captions=True, length_s=9, loop=True, frame_step=2)
    r = engine.run(Request(EXAMPLE, tmp_path / "talk.mp4", text="Hello there. Nice to meet you.", options=opts))
    assert r.captions == tmp_path / "talk.vtt" and r.to_dict()["captions"] == str(r.captions.absolute())
    cues = read_vtt(r.captions)
    texts = [c.text for c in cues]
    assert texts[:2] == ["Hello there.", "Nice to meet you."] and len(texts) % 2 == 0 and len(texts) >= 4
    assert texts[2:4] == texts[:2]  # looped
    assert cues[-1].end_s <= r.duration_s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4", "talk.vtt"]


def test_failed_generation_removes_the_captions(engine, tmp_path, monkeypatch):
    from lipsync import LipSyncError

    def broken(*a, **k):
        raise LipSyncError("simulated failure")
        yield  # pragma: no cover

    monkeypatch.setattr(engine.generator, "predict", broken)
    opts = GenerateOptions(voice="espeak:en-us", captions=True)
    with pytest.raises(LipSyncError, match="simulated"):
        engine.run(Request(EXAMPLE, tmp_path / "talk.mp4", text="Hello there.", options=opts))
    assert list(tmp_path.iterdir()) == []


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lipsync", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_cli_captions_and_burnt_captions(checkpoint, tmp_path, capsys, shared_engine):
    """The command line's own code path, in this process (one loaded engine for both runs)."""
    out = tmp_path / "talk.mp4"
    base = ["generate", "--image", EXAMPLE, "--text", "Hello there, astronaut. How is the view?",
            "--voice", "espeak:en-us", "--checkpoint", checkpoint, "--frame-step", "2"]
    r = in_process(capsys, *base, "--out", out, "--captions", "--hls-zip", tmp_path / "pkg.zip", "--json")
    assert r.returncode == 0, r.stderr
    import json
    import zipfile

    result = json.loads(r.stdout)
    assert result["captions"] == str(tmp_path / "talk.vtt")
    assert [c.text for c in read_vtt(tmp_path / "talk.vtt")] == ["Hello there, astronaut.", "How is the view?"]
    with zipfile.ZipFile(tmp_path / "pkg.zip") as z:
        assert "subs/index.m3u8" in z.namelist() and b"SUBTITLES=" in z.read("master.m3u8")

    burnt = tmp_path / "burnt.mp4"
    r = in_process(capsys, *base, "--out", burnt, "--burn-captions", "--no-label")
    assert r.returncode == 0, r.stderr
    assert not burnt.with_suffix(".vtt").exists()

    def frame(path: Path, t: float) -> np.ndarray:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", str(t), "-i", str(path), "-frames:v", "1",
                              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
        return np.frombuffer(raw, np.uint8).reshape(512, 512, 3)

    cue = read_vtt(tmp_path / "talk.vtt")[0]
    t = (cue.start_s + cue.end_s) / 2
    diff = np.abs(frame(burnt, t).astype(int) - frame(out, t).astype(int)).max(axis=2)
    rows = np.nonzero((diff > 60).sum(axis=1) > 20)[0]
    assert rows.size > 10 and rows.min() > 256, "captions belong at the bottom of this portrait"


def test_cli_refuses_captions_for_an_audio_file(oracle_wav, tmp_path):
    out = tmp_path / "a.mp4"
    r = _cli("generate", "--image", EXAMPLE, "--audio", oracle_wav, "--out", out, "--captions")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error:") and "no words" in r.stderr
    assert not out.exists()


def test_cli_hls_with_captions(tmp_path):
    from test_hls import make_clip

    clip = make_clip(tmp_path / "src.mp4", "320x240", 3)
    vtt = write_vtt([Cue(0.2, 1.0, "hi")], tmp_path / "c.vtt")
    r = _cli("hls", clip, tmp_path / "out", "--captions", vtt)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "subs" / "index.m3u8").is_file()
    r = _cli("hls", clip, tmp_path / "out2", "--captions", tmp_path / "missing.vtt")
    assert r.returncode == 2 and "cannot be read" in r.stderr


# ----------------------------------------------------------------------------- publishing and placement


@pytest.mark.parametrize("where", ["network", "encoder"])
def test_a_failed_run_keeps_the_earlier_video_and_captions(engine, tmp_path, monkeypatch, where):
    """OUT.mp4 and OUT.vtt from an earlier run survive a failed one byte for byte; no part file is left."""
    import lipsync.proc as proc
    from lipsync import LipSyncError

    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "talk.mp4"
    out.write_bytes(b"an earlier video \x00\x01\x02")
    out.with_suffix(".vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nearlier words\n", "utf-8")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    if where == "network":

        def broken(*a, **k):
            yield np.zeros((4, 96, 96, 3), np.float32)
            raise LipSyncError("simulated failure")

        monkeypatch.setattr(engine.generator, "predict", broken)
    else:  # an encoder that takes every frame, then fails at the end
        fake = tmp_path / "bin" / "ffmpeg"
        fake.parent.mkdir()
        fake.write_text("#!/bin/sh\ncat > /dev/null\necho 'simulated failure at the end' >&2\nexit 1\n")
        fake.chmod(0o755)
        monkeypatch.setenv("LIPSYNC_FFMPEG", str(fake))
        proc.ffmpeg_exe.cache_clear()
    try:
        with pytest.raises(LipSyncError, match="simulated failure"):
            engine.run(Request(EXAMPLE, out, audio=bursts([(0.1, 0.6), (0.8, 1.3)], 1.5),
                               options=GenerateOptions(captions=True, frame_step=2)))
    finally:
        monkeypatch.undo()
        proc.ffmpeg_exe.cache_clear()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_published_captions_keep_off_the_label(engine, tmp_path):
    """The WebVTT written beside the MP4 places every cue above the label's rows (and says nothing without one)."""
    speech = bursts([(0.1, 0.7), (0.9, 1.4)], 1.5)
    opts = GenerateOptions(captions=True, frame_step=2, motion=0)
    r = engine.run(Request(EXAMPLE, tmp_path / "a.mp4", audio=speech, options=opts))
    plain = engine.run(Request(EXAMPLE, tmp_path / "b.mp4", audio=speech, options=opts.updated(label=False)))
    from videos import decode_frames

    a, b = decode_frames(r.video)[0].astype(int), decode_frames(plain.video)[0].astype(int)
    rows = np.flatnonzero((np.abs(a - b).max(axis=2) > 60).any(axis=1))  # where the label is drawn
    assert rows.size and rows.min() > r.height / 2  # the label sits low in this portrait
    cues = read_vtt(r.captions)
    assert [c.text for c in cues] == ["phrase 0", "phrase 1"]
    for c in cues:
        m = re.fullmatch(r"line:([\d.]+)%,end", c.settings)
        assert m, c.settings
        assert float(m.group(1)) / 100 * r.height < rows.min()  # the cue's bottom edge is above the label
    assert all(c.settings == "" for c in read_vtt(plain.captions))


def _moving_face_video(path: Path, n: int) -> tuple[Path, list[tuple[int, int, int, int]]]:
    """A 300x300 video of the example face sliding down from y=79 to y=219; and its (x1, y1, x2, y2) per frame."""
    import cv2
    from videos import EXAMPLE_FACE, portrait, write_video

    small = cv2.resize(portrait(), (300, 300), interpolation=cv2.INTER_AREA)
    k = 300 / 512
    frames, faces = [], []
    for i in range(n):
        dy = round(40 + 140 * i / (n - 1))
        canvas = np.full((300, 300, 3), 110, np.uint8)
        canvas[dy:] = small[: 300 - dy]
        frames.append(canvas)
        x1, y1, x2, y2 = EXAMPLE_FACE
        faces.append((round(x1 * k), round(y1 * k) + dy, round(x2 * k), round(y2 * k) + dy))
    return write_video(path, frames, 25), faces


def test_burned_captions_keep_off_a_moving_face(engine, tmp_path):
    """On a video, burned captions avoid every face box used (as the label does), not only the first frame's."""
    from videos import decode_frames

    video, faces = _moving_face_video(tmp_path / "moving.mp4", 40)
    speech = bursts([(0.1, 1.5)], 1.6)
    opts = GenerateOptions(burn_captions=True, frame_step=2)
    burnt = engine.run(Request(None, tmp_path / "burnt.mp4", audio=speech, options=opts, video=video))
    plain = engine.run(
        Request(None, tmp_path / "plain.mp4", audio=speech, options=opts.updated(burn_captions=False), video=video)
    )
    assert burnt.source == "video" and burnt.frames == 40
    a, b = decode_frames(burnt.video).astype(int), decode_frames(plain.video).astype(int)
    shown = 0
    for i in range(40):
        ys, xs = np.nonzero(np.abs(a[i] - b[i]).max(axis=2) > 80)  # the caption's pixels
        if len(ys) < 50:
            continue
        shown += 1
        x1, y1, x2, y2 = faces[i]
        inside = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)
        assert not inside.any(), f"frame {i}: the caption covers the face"
    assert shown >= 30  # the cue runs from 0.1 to 1.5 s
