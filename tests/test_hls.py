"""HLS packaging: ladder, playlists, keyframe-aligned fMP4 segments, master, zip, CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from lipsync.errors import EncodeError, InputError, LipSyncError
from lipsync.media.hls import RUNGS, h264_level, package_hls, plan_ladder, probe
from lipsync.proc import ffmpeg_exe, run

ROOT = Path(__file__).resolve().parents[1]
COMMENT = "AI-generated test clip: lipsync HLS"


def make_clip(path: Path, size: str, seconds: float, *, audio: bool = True, fps: str = "25") -> Path:
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k"]
    args += ["-metadata", f"comment={COMMENT}", "-metadata", "encoder_tool=lipsync-test"]
    args += ["-movflags", "+faststart+use_metadata_tags", str(path)]
    run(args, timeout=60)
    return path


# --------------------------------------------------------------------------- a tiny m3u8 parser


def parse_m3u8(path: Path) -> dict:
    """Tags, EXTINF durations, URIs; asserts the basic grammar and that every URI exists."""
    lines = [x.strip() for x in path.read_text("utf-8").splitlines() if x.strip()]
    assert lines[0] == "#EXTM3U", path
    tags: dict[str, list[str]] = {}
    entries: list[tuple[dict | float | None, str]] = []
    pending = None
    for line in lines[1:]:
        if line.startswith("#EXT"):
            name, _, value = line[1:].partition(":")
            tags.setdefault(name, []).append(value)
            if name == "EXTINF":
                pending = float(value.split(",")[0])
            elif name == "EXT-X-STREAM-INF":
                pending = dict(re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', value))
        elif line.startswith("#"):
            continue
        else:
            assert pending is not None, f"URI {line} without EXTINF/STREAM-INF in {path}"
            uri = PurePosixPath(line)
            assert not uri.is_absolute() and ".." not in uri.parts and "://" not in line
            assert (path.parent / line).is_file(), f"{line} named in {path} is missing"
            entries.append((pending, line))
            pending = None
    for value in tags.get("EXT-X-MAP", []):
        uri = re.search(r'URI="([^"]+)"', value).group(1)
        assert (path.parent / uri).is_file()
    return {"tags": tags, "entries": entries}


def avcc_codec(init: Path) -> str:
    """The avc1.PPCCLL string from the avcC box of an init segment."""
    data = init.read_bytes()
    i = data.find(b"avcC")
    assert i > 0
    return "avc1." + data[i + 5 : i + 8].hex()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("hls-src")
    return {
        "720": make_clip(d / "src720.mp4", "1280x720", 7),
        "360": make_clip(d / "src360.mp4", "640x360", 3, audio=False),
    }


@pytest.fixture(scope="module")
def pkg(clips, tmp_path_factory):
    d = tmp_path_factory.mktemp("hls-out")
    stages = []
    r = package_hls(clips["720"], d / "out", zip_path=d / "pkg.zip", progress=lambda *a: stages.append(a))
    return r, stages


# --------------------------------------------------------------------------- the ladder (no ffmpeg)


# Codec strings written out (RFC 6381 avc1.PPCCLL: High profile is 0x64, level 3.0 is 0x1e, 3.1 is 0x1f),
# the levels read off H.264 Table A-1 by hand: 1280x720 is 3600 macroblocks, 90,000 a second at 25 fps,
# over level 3.0's 1620 and 40,500, within 3.1's 3600 and 108,000; 854x480 is 1620 macroblocks,
# 40,500 a second: level 3.0 exactly.
HIGH_30, HIGH_31 = "avc1.64001e", "avc1.64001f"


@pytest.mark.parametrize(
    "w,h,expect",
    [
        (1920, 1080, [(1280, 720, HIGH_31), (854, 480, HIGH_30), (640, 360, HIGH_30)]),
        (1280, 720, [(1280, 720, HIGH_31), (854, 480, HIGH_30), (640, 360, HIGH_30)]),
        (720, 1280, [(720, 1280, HIGH_31), (480, 854, HIGH_30), (360, 640, HIGH_30)]),
        (854, 480, [(854, 480, HIGH_30), (640, 360, HIGH_30)]),
        (512, 512, [(512, 512, HIGH_30), (360, 360, HIGH_30)]),
        (641, 361, [(640, 360, HIGH_30)]),
        (320, 240, [(320, 240, HIGH_30)]),
    ],
)
def test_ladder_never_upscales_and_keeps_even_sides(w, h, expect):
    ladder = plan_ladder(w, h, 25.0)
    assert [(r.width, r.height, r.codecs) for r in ladder] == [(a, b, f"{c},mp4a.40.2") for a, b, c in expect]
    assert [(r.width, r.height, r.codecs) for r in plan_ladder(w, h, 25.0, has_audio=False)] == expect
    assert len(ladder) <= len(RUNGS)
    for r in ladder:
        assert r.width <= w and r.height <= h and r.width % 2 == 0 and r.height % 2 == 0
        assert abs(r.width / r.height - w / h) < 0.01


def test_h264_levels():
    assert h264_level(1280, 720, 25, 3000) == 31
    assert h264_level(1280, 720, 60, 3000) == 32
    assert h264_level(1920, 1080, 30, 5000) == 40
    assert h264_level(854, 480, 30, 1500) == 31  # 1620 MBs x 30 fps > level 3.0's 40500 MB/s
    assert h264_level(640, 360, 25, 800) == 30
    assert plan_ladder(640, 360, 25, has_audio=False)[0].codecs == "avc1.64001e"


# --------------------------------------------------------------------------- the package


def test_probe_with_ffmpeg_alone(clips):
    info = probe(clips["720"])
    assert (info.width, info.height, info.fps, info.has_audio) == (1280, 720, 25, True)
    assert info.duration_s == pytest.approx(7.0, abs=0.05)
    assert probe(clips["360"]).has_audio is False


def test_playlists_parse_and_add_up(pkg, clips, tmp_path_factory):
    r, stages = pkg
    out = r.outdir
    assert [x.name for x in r.renditions] == ["720p", "480p", "360p"]
    assert stages[0][1] == 0 and stages[-1][1] == stages[-1][2]
    master = parse_m3u8(r.master)
    assert len(master["entries"]) == len(r.renditions)
    extinfs = []
    for (attrs, uri), rend in zip(master["entries"], r.renditions):
        assert uri == f"{rend.name}/index.m3u8"
        for key in ("BANDWIDTH", "AVERAGE-BANDWIDTH", "RESOLUTION", "CODECS", "FRAME-RATE"):
            assert key in attrs, key
        assert int(attrs["BANDWIDTH"]) >= int(attrs["AVERAGE-BANDWIDTH"]) > 100_000
        w, h = (int(v) for v in attrs["RESOLUTION"].split("x"))
        assert (w, h) == (rend.width, rend.height) and w <= 1280 and h <= 720
        assert float(attrs["FRAME-RATE"]) == pytest.approx(25.0)
        codecs = attrs["CODECS"].strip('"')
        assert codecs == rend.codecs and codecs.endswith(",mp4a.40.2")

        media = parse_m3u8(out / uri)
        tags = media["tags"]
        assert tags["EXT-X-PLAYLIST-TYPE"] == ["VOD"] and "EXT-X-ENDLIST" in tags
        assert tags["EXT-X-MAP"] == ['URI="init.mp4"']
        init = out / rend.name / "init.mp4"
        # the CODECS string is what the encoder wrote: High profile, the level Table A-1 gives
        level = {"720p": 31, "480p": 30, "360p": 30}[rend.name]
        assert codecs == {31: HIGH_31, 30: HIGH_30}[level] + ",mp4a.40.2"
        assert avcc_codec(init) == codecs.split(",")[0]
        if shutil.which("ffprobe"):  # ffprobe's reading of the first segment agrees
            from conftest import ffprobe

            first = tmp_path_factory.mktemp("seg") / "first.mp4"
            first.write_bytes(init.read_bytes() + (out / rend.name / "seg_00001.m4s").read_bytes())
            video = next(s for s in ffprobe(first)["streams"] if s["codec_type"] == "video")
            assert (video["codec_name"], video.get("profile"), video.get("level")) == ("h264", "High", level)
        durs = [d for d, _ in media["entries"]]
        target = int(tags["EXT-X-TARGETDURATION"][0])
        assert all(round(d) <= target for d in durs) and target <= 3
        assert sum(durs) == pytest.approx(7.0, abs=2.0)  # within one segment
        assert all(d == pytest.approx(2.0, abs=0.05) for d in durs[:-1])
        assert [u for _, u in media["entries"]][0] == "seg_00001.m4s"
        extinfs.append(durs)
    # keyframes forced at the same times: every rendition cuts at the same instants
    assert all(e == extinfs[0] for e in extinfs)
    assert not list(out.glob(".hls-staging-*"))


def test_metadata_reaches_the_init_segments(pkg):
    r, _ = pkg
    for rend in r.renditions:
        init = r.outdir / rend.name / "init.mp4"
        data = init.read_bytes()
        assert COMMENT.encode() in data and b"lipsync-test" in data
    if shutil.which("ffprobe"):
        from conftest import ffprobe

        tags = ffprobe(r.outdir / r.renditions[0].name / "init.mp4")["format"].get("tags", {})
        assert tags.get("comment") == COMMENT and tags.get("encoder_tool") == "lipsync-test"


def test_zip_is_relative_and_playable_layout(pkg):
    r, _ = pkg
    with zipfile.ZipFile(r.zip) as z:
        names = z.namelist()
        assert z.testzip() is None
        for n in names:
            p = PurePosixPath(n)
            assert not p.is_absolute() and ".." not in p.parts and "\\" not in n and not n.startswith("/")
        for required in ("master.m3u8", "player.html", "hls.min.js", "hls.js-LICENSE.txt", "README.txt"):
            assert required in names
        for rend in r.renditions:
            assert f"{rend.name}/index.m3u8" in names and f"{rend.name}/init.mp4" in names
        assert z.read("master.m3u8") == r.master.read_bytes()
        html = z.read("player.html").decode()
        readme = z.read("README.txt").decode()
    assert 'src="hls.min.js"' in html and "master.m3u8" in html
    assert "canPlayType(\"application/vnd.apple.mpegurl\")" in html and "Hls.isSupported()" in html
    assert "http.server 8000" in readme and "http://localhost:8000/player.html" in readme
    assert (ROOT / "lipsync" / "media" / "assets" / "hls" / "hls.min.js").read_bytes() == (r.outdir / "hls.min.js").read_bytes()
    assert not list(r.zip.parent.glob(".*.part*"))


def test_small_source_gives_one_rendition_without_audio(clips, tmp_path):
    r = package_hls(clips["360"], tmp_path / "o")
    assert [(x.name, x.width, x.height) for x in r.renditions] == [("360p", 640, 360)]
    assert r.zip is None
    attrs, _ = parse_m3u8(r.master)["entries"][0]
    assert attrs["CODECS"] == f'"{HIGH_30}"' and attrs["RESOLUTION"] == "640x360"
    media = parse_m3u8(tmp_path / "o" / "360p" / "index.m3u8")
    assert sum(d for d, _ in media["entries"]) == pytest.approx(3.0, abs=2.0)


def test_not_a_video_is_a_clean_error(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError, match="not a video"):
        package_hls(bad, tmp_path / "o", zip_path=tmp_path / "o.zip")
    with pytest.raises(InputError, match="still picture"):
        package_hls(ROOT / "assets" / "astronaut.jpg", tmp_path / "o")
    with pytest.raises(InputError, match="does not exist"):
        package_hls(tmp_path / "missing.mp4", tmp_path / "o")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.zip").exists()


def test_failure_leaves_nothing_half_written(clips, tmp_path, monkeypatch):
    import lipsync.media.hls.package as hls_package

    def boom(*a, **k):
        raise EncodeError("simulated failure after encoding")

    monkeypatch.setattr(hls_package, "finish_rendition", boom)
    with pytest.raises(LipSyncError, match="simulated"):
        package_hls(clips["360"], tmp_path / "new", zip_path=tmp_path / "z.zip")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    keep = tmp_path / "existing"
    keep.mkdir()
    (keep / "mine.txt").write_text("keep me")
    with pytest.raises(LipSyncError):
        package_hls(clips["360"], keep)
    assert sorted(p.name for p in keep.iterdir()) == ["mine.txt"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lipsync", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_hls(clips, tmp_path):
    p = _cli("hls", str(clips["360"]), str(tmp_path / "out"), "--zip", str(tmp_path / "out.zip"))
    assert p.returncode == 0, p.stderr
    assert "master.m3u8" in p.stderr
    assert (tmp_path / "out" / "master.m3u8").is_file() and zipfile.is_zipfile(tmp_path / "out.zip")

    p = _cli("hls", str(tmp_path / "missing.mp4"), str(tmp_path / "out2"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in p.stderr
    assert not (tmp_path / "out2").exists()
