"""The streaming MP4 writer, checked with ffprobe."""

import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import ffprobe
from lipsync.media.encode import VideoWriter, write_wav
from lipsync.errors import EncodeError


def top_level_atoms(path: Path) -> list[str]:
    atoms, data = [], path.read_bytes()
    i = 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        if size == 1:
            size = struct.unpack(">Q", data[i + 8 : i + 16])[0]
        atoms.append(kind.decode("latin-1"))
        if size < 8:
            break
        i += size
    return atoms


def _write(tmp_path, n_frames=50, fps=25.0, seconds=2.0, rate=22050):
    wav = write_wav(tmp_path / "a.wav", 0.3 * np.sin(np.linspace(0, 900, int(seconds * rate))), rate)
    out = tmp_path / "v.mp4"
    with VideoWriter(out, 160, 120, fps, wav, metadata={"comment": "test tag"}) as w:
        for i in range(n_frames):
            w.write(np.full((120, 160, 3), i * 4 % 256, np.uint8))
    return out


def test_mp4_is_browser_friendly(tmp_path):
    out = _write(tmp_path)
    info = ffprobe(out)
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    a = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert v["codec_name"] == "h264" and v["pix_fmt"] == "yuv420p"
    assert (v["width"], v["height"]) == (160, 120)
    assert a["codec_name"] == "aac" and int(a["sample_rate"]) == 22050
    assert abs(float(v["duration"]) - float(a["duration"])) <= 1 / 25 + 1e-3
    assert int(v["nb_frames"]) == 50
    atoms = top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat"), atoms  # faststart
    assert info["format"]["tags"].get("comment") == "test tag"


def test_odd_size_is_refused(tmp_path):
    with pytest.raises(EncodeError, match="even"):
        VideoWriter(tmp_path / "x.mp4", 161, 120, 25.0)


def test_wrong_frame_leaves_nothing_behind(tmp_path):
    out = tmp_path / "v.mp4"
    w = VideoWriter(out, 160, 120, 25.0)
    w.write(np.zeros((120, 160, 3), np.uint8))
    with pytest.raises(EncodeError):
        w.write(np.zeros((100, 160, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_error_inside_the_with_block_leaves_nothing(tmp_path):
    out = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 160, 120, 25.0) as w:
            w.write(np.zeros((120, 160, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failing_ffmpeg_is_a_clean_error_and_leaves_nothing(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'simulated encoder failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    import lipsync.media.encode as enc

    monkeypatch.setattr(enc, "ffmpeg_exe", lambda: str(fake))
    out = tmp_path / "out" / "v.mp4"
    with pytest.raises(EncodeError, match="simulated encoder failure"):
        with VideoWriter(out, 160, 120, 25.0) as w:
            for _ in range(200):
                w.write(np.zeros((120, 160, 3), np.uint8))
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_for_the_user_get_the_ordinary_mode(tmp_path, umask):
    """MP4 and HLS zip are 0666 & ~umask (a web server running as another user can read them), not 0600."""
    import os

    from lipsync.media.hls import package_hls

    old = os.umask(umask)
    try:
        mp4 = _write(tmp_path)
        h = package_hls(mp4, tmp_path / "hls", zip_path=tmp_path / "pkg.zip")
    finally:
        os.umask(old)
    for f in (mp4, h.zip):
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


def test_sidecars_are_published_with_the_mp4_and_never_without_it(tmp_path):
    """A sidecar (the captions) replaces an earlier file only when the MP4 is published."""
    out, vtt = tmp_path / "v.mp4", tmp_path / "v.vtt"
    vtt.write_text("earlier captions")
    frame = np.zeros((120, 160, 3), np.uint8)
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 160, 120, 25.0, sidecars={vtt: "new captions"}) as w:
            w.write(frame)
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.vtt"] and vtt.read_text() == "earlier captions"
    with VideoWriter(out, 160, 120, 25.0, sidecars={vtt: "new captions"}) as w:
        w.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4", "v.vtt"] and vtt.read_text() == "new captions"


def test_missing_ffmpeg_leaves_no_part_file(tmp_path, monkeypatch):
    import lipsync.media.encode as enc

    def missing():
        raise EncodeError("ffmpeg was not found.")

    monkeypatch.setattr(enc, "ffmpeg_exe", missing)
    with pytest.raises(EncodeError, match="not found"):
        VideoWriter(tmp_path / "v.mp4", 160, 120, 25.0)
    assert list(tmp_path.iterdir()) == []


def test_the_encoder_yields_the_cpu_to_live_work(tmp_path):
    # a clip's x264 threads run at a lower priority: beside live sessions they take what is left
    import psutil

    from lipsync.media.encode import ENCODER_NICE, VideoWriter

    with VideoWriter(tmp_path / "a.mp4", 64, 64, 25) as w:
        w.write(np.zeros((64, 64, 3), np.uint8))
        proc = psutil.Process(w._pipe.proc.pid)
        assert proc.nice() - psutil.Process().nice() == ENCODER_NICE > 0
        assert all(psutil.Process(t.id).nice() >= ENCODER_NICE for t in proc.threads())
        _assert_shares_our_cpu_group(proc.pid, proc.nice())


def _assert_shares_our_cpu_group(pid: int, nice: int) -> None:
    """A program we started is in a process group of its own (a timeout kills it whole) but in our session:
    where Linux makes each session a CPU group ("autogroup"), one of its own would share the CPU equally with
    all of ours, whatever the program's niceness. (Python 3.10, which starts it in a session of its own: that
    session's group is lowered with it.)"""
    import os
    import sys

    assert os.getpgid(pid) == pid != os.getpgid(0)
    if sys.version_info >= (3, 11):
        assert os.getsid(pid) == os.getsid(0)
        if Path("/proc/self/autogroup").exists():  # a kernel with autogroup
            assert Path(f"/proc/{pid}/autogroup").read_text() == Path("/proc/self/autogroup").read_text()
    elif _autogroup_nice(pid) is not None:
        assert _autogroup_nice(pid) == nice


def _autogroup_nice(pid) -> int | None:
    """The niceness of the CPU group a process's session forms (Linux "autogroup"), None without one
    (or where /proc does not let us set it)."""
    import os

    group = Path(f"/proc/{pid}/autogroup")
    try:
        return _group_nice(group.read_text()) if os.access(group, os.W_OK) else None
    except OSError:
        return None


def _group_nice(text: str) -> int | None:
    """The niceness in /proc/PID/autogroup's "/autogroup-N nice X"; None where it is empty: the process
    is in no group of its own (a container's first session, autogroup off at boot)."""
    words = text.split()
    return int(words[2]) if len(words) == 3 and words[1] == "nice" else None


def test_programs_started_in_the_background_run_lower():
    # a clip's helper programs (decode, espeak-ng, ffprobe, HLS) run lower than ours, only inside the block
    # and only on the thread that entered it; each in a process group of its own but in our CPU group
    import os
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from lipsync.proc import BACKGROUND_NICE, background, run

    group = Path("/proc/self/autogroup")
    ours_group = group.read_text() if group.exists() else None
    script = "read go; nice; echo $$; cut -d' ' -f5,6 /proc/$$/stat; cat /proc/self/autogroup 2>/dev/null || true"

    def niceness() -> int:  # it waits for its input, which comes after the priority is set
        nice, pid, ids, its_group = run(["sh", "-c", script], input=b"\n", timeout=10, what="sh").decode().split("\n", 3)
        pgid, sid = map(int, ids.split())
        assert pgid == int(pid) != os.getpgid(0)  # a group of its own: a timeout kills it whole
        if sys.version_info >= (3, 11):  # in our session: our CPU group, where its niceness counts
            assert sid == os.getsid(0) and its_group == (ours_group or "")
        return int(nice)

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness() == ours
    with background():
        low = min(19, ours + BACKGROUND_NICE)
        assert niceness() == low
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(niceness).result() == ours
    assert niceness() == ours
    if ours_group is not None:  # lowering a program in our group never lowers the group
        assert group.read_text() == ours_group
