"""Decoding untrusted audio (lipsync.media.audio.load_audio): real formats in, hostile files refused.

Real files are written by real ffmpeg; the hostile ones come from ``bad_audio``.
A bait (a web server on 127.0.0.1 and a named pipe) records any reference a
decoder follows: a refused file must leave it untouched.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from bad_audio import CORPUS, Bait, tone
from bad_videos import child_processes
from lipsync.errors import AudioError
from lipsync.media.audio import MAX_SAMPLE_RATE, load_audio


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


# ----------------------------------------------------------------------------- real formats


@pytest.mark.parametrize("suffix, codec, rate", [
    (".wav", ["-c:a", "pcm_s16le"], 48000),
    (".wav", ["-c:a", "pcm_f32le"], 48000),
    (".mp3", ["-c:a", "libmp3lame", "-b:a", "128k"], 48000),
    (".m4a", ["-c:a", "aac", "-b:a", "96k"], 48000),
    (".aac", ["-c:a", "aac", "-b:a", "96k"], 48000),  # raw ADTS
    (".m4a", ["-c:a", "alac"], 48000),
    (".ogg", ["-c:a", "libvorbis"], 48000),
    (".ogg", ["-c:a", "libopus"], 48000),
    (".opus", ["-c:a", "libopus"], 48000),
    (".flac", ["-c:a", "flac"], 48000),
    (".webm", ["-c:a", "libopus"], 48000),
    (".aiff", ["-c:a", "pcm_s16be"], 48000),
])
def test_real_formats_decode(tmp_path, suffix, codec, rate):
    path = tmp_path / f"speech{suffix}"
    path.write_bytes(tone(suffix, *codec))
    wav, got = load_audio(path, sample_rate=None)
    assert got == rate and wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) / got == pytest.approx(1.0, abs=0.05)
    assert _peak_hz(wav, got) == pytest.approx(440, abs=5)
    assert 0.1 < np.abs(wav).max() < 0.2  # the sine source is at 1/8 of full scale
    wav16, r16 = load_audio(path)  # resampled to the model's rate
    assert r16 == 16000 and len(wav16) == pytest.approx(16000, abs=800)


def test_mp3_with_cover_art_and_a_video_with_sound(tmp_path, example_image):
    with_art = tmp_path / "song.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-i", str(example_image), "-map", "0", "-map", "1", "-c:a", "libmp3lame", "-c:v", "mjpeg",
                    "-disposition:v:0", "attached_pic", "-id3v2_version", "3", str(with_art)], check=True)
    wav, rate = load_audio(with_art)
    assert _peak_hz(wav, rate) == pytest.approx(440, abs=5)
    for suffix, vcodec in ((".mp4", "libx264"), (".avi", "mjpeg"), (".mkv", "libx264")):
        clip = tmp_path / f"clip{suffix}"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x64:r=5:d=1", "-f", "lavfi",
                        "-i", "sine=frequency=440:duration=1", "-c:v", vcodec, "-pix_fmt", "yuvj420p"
                        if vcodec == "mjpeg" else "yuv420p", "-c:a", "libmp3lame" if suffix == ".avi" else "aac",
                        str(clip)], check=True)
        wav, rate = load_audio(clip)
        assert _peak_hz(wav, rate) == pytest.approx(440, abs=5), suffix


def test_limits(tmp_path):
    path = tmp_path / "long.flac"
    path.write_bytes(tone(".flac", "-c:a", "flac", seconds=5.0))
    with pytest.raises(AudioError, match="more than 3 seconds"):
        load_audio(path, max_seconds=3)
    assert len(load_audio(path, max_seconds=6)[0]) == pytest.approx(5 * 16000, abs=100)
    with pytest.raises(AudioError, match="limit is 0 MB"):
        load_audio(path, max_bytes=100)
    high = tmp_path / "high.wav"
    high.write_bytes(tone(".wav", "-c:a", "pcm_s16le", rate=384000, seconds=0.2))
    with pytest.raises(AudioError, match=f"384000 Hz; the limit is {MAX_SAMPLE_RATE} Hz"):
        load_audio(high, sample_rate=None)
    assert load_audio(high)[1] == 16000  # resampled while decoding: fine
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")


# ----------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_audio_is_refused_and_nothing_is_followed(tmp_path, name):
    fname, make, needles = CORPUS[name]
    with Bait(tmp_path) as bait:
        path = tmp_path / fname
        path.write_bytes(make(bait))
        with pytest.raises(AudioError) as e:
            load_audio(path)
        msg = str(e.value)
        assert all(n.lower() in msg.lower() for n in needles), msg
        assert "Traceback" not in msg and str(tmp_path) not in msg and len(msg) < 300, msg
        assert msg.rstrip().endswith(".") and ("Use a" in msg or "empty" in msg), msg
    assert bait.hits == [], bait.hits
    assert child_processes() == []


def test_the_bait_catches_a_decoder_that_follows_references(tmp_path):
    """ffmpeg left to guess the format (the old door) follows an ffconcat list and an HLS playlist:
    the bait sees it, so a clean record above means nothing was followed."""
    for name in ("ffconcat_named_wav", "hls_playlist_named_mp3"):
        folder = tmp_path / name
        folder.mkdir()
        fname, make, _ = CORPUS[name]
        with Bait(folder) as bait:
            path = folder / fname
            path.write_bytes(make(bait))
            subprocess.run(["ffmpeg", "-nostdin", "-v", "quiet", "-i", str(path.resolve()), "-f", "null", "-"],
                           timeout=60, check=False)
        assert "file" in bait.hits, (name, bait.hits)


@pytest.mark.parametrize("fname", [
    "concat:bait.wav|bait.wav.wav",
    "subfile,,start,0,end,0,,:bait.wav.mp3",
    "http:bait.wav.wav",
    "-i bait.wav.wav",
])
def test_a_protocol_in_the_name_is_only_a_name(tmp_path, fname, monkeypatch):
    """A real recording under a name ffmpeg could read as a protocol: its own sound is decoded."""
    monkeypatch.chdir(tmp_path)  # where the names would point, were they followed
    with Bait(tmp_path) as bait:
        path = tmp_path / fname
        path.write_bytes(tone(".wav", "-c:a", "pcm_s16le", freq=300))
        wav, rate = load_audio(fname)  # relative, as a caller may pass it
        assert _peak_hz(wav, rate) == pytest.approx(300, abs=5) and len(wav) == pytest.approx(rate, abs=50)
    assert bait.hits == []


def test_a_hostile_audio_file_through_the_command_line(tmp_path, example_image, checkpoint, capsys):
    from lipsync.cli import main

    with Bait(tmp_path) as bait:
        path = tmp_path / "speech.wav"
        path.write_bytes(CORPUS["ffconcat_named_wav"][1](bait))
        out = tmp_path / "out" / "talk.mp4"
        code = main(["generate", "--image", str(example_image), "--audio", str(path), "--out", str(out),
                     "--checkpoint", str(checkpoint), "--device", "cpu", "--precision", "fp32"])
        err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "playlist" in lines[0] and "Traceback" not in err, err
    assert not out.exists() and bait.hits == []


@pytest.mark.parametrize("head, expect", [
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
    (b"RF64\xff\xff\xff\xffWAVEds64", "wav"),
    (b"RIFF\x24\x00\x00\x00AVI LIST", "avi"),
    (b"FORM\x00\x00\x00\x24AIFFCOMM", "aiff"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00", "mp3"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00fLaC\x00\x00\x00\x22", "flac"),  # a tag in front of FLAC
    (b"\xff\xfb\x90\x00", "mp3"),
    (b"\xff\xf1\x50\x40", "aac"),
    (b"OggS\x00\x02", "ogg"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "matroska"),
    (b"\x00\x00\x00\x20ftypM4A ", "mp4"),
    (b"#!AMR\n\x3c", None),  # a raw AMR recording is not a playlist, just not accepted
    (b"\xef\xbb\xbf#EXTM3U\n", "playlist"),
    (b"ffconcat version 1.0\n", "playlist"),
    (b"  file 'a.wav'\n", "playlist"),
    (b"<?xml version='1.0'?><smil>", "playlist"),
    (b"\xff\xd8\xff\xe0JFIF", None),
])
def test_containers_are_recognised_by_their_first_bytes(tmp_path, head, expect):
    from lipsync.media.sniff import PlaylistError, sniff

    path = tmp_path / "x.wav"  # the name says nothing
    path.write_bytes(head + b"\x00" * 64)
    if expect == "playlist":
        with pytest.raises(PlaylistError):
            sniff(path)
    else:
        assert sniff(path) == expect
