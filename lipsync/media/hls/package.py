"""The package: one ffmpeg run encodes every rendition into a staging folder; playlists, player and
README are added; everything moves into place (and into the zip) only when all of it succeeded."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ...errors import EncodeError, InputError
from ...proc import background, ffmpeg_exe, run
from ..captions import Cue, read_vtt
from ..files import part_file, publish
from .ladder import Rendition, plan_ladder
from .playlists import SUBS_DIR, finish_rendition, master_playlist, write_subtitles
from .probe import SourceInfo, probe

__all__ = ["package_hls", "HlsResult"]

log = logging.getLogger("lipsync")

#: where player.html and the vendored hls.js live
ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: x264 quality
CRF = 23
MAX_FPS = 60.0

_KEEP_RATES = (32000, 44100, 48000)

Progress = Callable[[str, int, int], None]


@dataclass
class HlsResult:
    """What :func:`package_hls` wrote."""

    outdir: Path
    master: Path  #: outdir / "master.m3u8"
    renditions: list[Rendition]
    zip: Path | None  #: the zip, when one was asked for
    duration_s: float = 0.0  #: the source's duration
    fps: float = 0.0  #: frame rate of every rendition
    files: list[str] = field(default_factory=list)  #: relative paths written to outdir (and the zip)
    subtitles: Path | None = None  #: the subtitles playlist (outdir / "subs/index.m3u8"), with captions


def _encode_args(src: Path, stage: Path, info: SourceInfo, ladder: list[Rendition], segment_s: float) -> list[str]:
    fps = info.fps if info.fps <= MAX_FPS else Fraction(30)
    gop = max(1, int(round(float(fps) * segment_s)))
    n = len(ladder)
    graph = f"[0:v:0]fps={fps.numerator}/{fps.denominator},format=yuv420p,split={n}" + "".join(
        f"[s{i}]" for i in range(n)
    )
    for i, r in enumerate(ladder):
        graph += f";[s{i}]scale={r.width}:{r.height}:flags=bicubic,setsar=1[v{i}]"
    args = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-protocol_whitelist", "file", "-i", str(src.resolve()),
        "-filter_complex", graph,
    ]
    for i in range(n):
        args += ["-map", f"[v{i}]"]
        if info.has_audio:
            args += ["-map", "0:a:0"]
    args += [
        "-map_metadata", "0",
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-crf", str(CRF), "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{segment_s:g})",
    ]
    for i, r in enumerate(ladder):
        args += [
            f"-level:v:{i}", f"{r.level / 10:.1f}",
            f"-maxrate:v:{i}", f"{r.maxrate_kbps}k", f"-bufsize:v:{i}", f"{2 * r.maxrate_kbps}k",
        ]
    if info.has_audio:
        args += ["-c:a", "aac"]
        if info.audio_channels != "mono":
            args += ["-ac", "2"]
        if info.audio_rate not in _KEEP_RATES:
            args += ["-ar", "48000"]
        for i, r in enumerate(ladder):
            args += [f"-b:a:{i}", f"{r.audio_kbps}k"]
    vmap = " ".join(
        f"v:{i}" + (f",a:{i}" if info.has_audio else "") + f",name:{r.name}" for i, r in enumerate(ladder)
    )
    stage = stage.resolve()  # absolute: never read as an option or a protocol
    args += [
        "-f", "hls", "-hls_time", f"{segment_s:g}", "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
        "-hls_segment_options", "movflags=+use_metadata_tags",  # custom tags (encoder_tool) too
        "-hls_fmp4_init_filename", "init.mp4", "-start_number", "1",
        "-hls_segment_filename", str(stage / "%v" / "seg_%05d.m4s"),
        "-var_stream_map", vmap,
        str(stage / "%v" / "index.m3u8"),
    ]
    return args


def _player_files() -> dict[str, Path]:
    files = {
        "player.html": ASSETS / "player.html",
        "hls.min.js": ASSETS / "hls" / "hls.min.js",
        "hls.js-LICENSE.txt": ASSETS / "hls" / "LICENSE",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise EncodeError(f"The HLS player files are missing ({', '.join(missing)}); reinstall lipsync.")
    return files


def _hls_js_version() -> str:
    try:
        m = re.search(r"hls\.js (\d+\.\d+\.\d+)", (ASSETS / "hls" / "README.md").read_text("utf-8"))
    except OSError:
        m = None
    return m.group(1) if m else "(version unknown)"


def _readme(renditions: list[Rendition], duration_s: float, captions: bool = False) -> str:
    ladder = ", ".join(f"{r.name} ({r.width}x{r.height}, {r.bandwidth / 1e6:.2f} Mbit/s peak)" for r in renditions)
    subs = "\nCaptions: subs/ (WebVTT, shown by default; the player has a Captions button)\n" if captions else ""
    return f"""HLS package made by lipsync (this video was generated with AI).

Duration: {duration_s:.2f} s
Renditions: {ladder}
{subs}
To watch it, serve this folder over HTTP (browsers refuse to load the
playlists from file://):

  1. open a terminal in this folder, where master.m3u8 is
  2. run:   python3 -m http.server 8000
            (on Windows: py -m http.server 8000)
  3. open   http://localhost:8000/player.html

To publish it, upload the whole folder to any static web host; the stream's
address is .../master.m3u8 (it plays in Safari, iOS and, through hls.js,
in every browser with Media Source Extensions).

Files:
  master.m3u8                the adaptive stream: one line per rendition
  <name>/index.m3u8          a rendition's playlist
  <name>/init.mp4, *.m4s     its fragmented-MP4 initialisation and media segments
  player.html                the player page
  hls.min.js                 hls.js {_hls_js_version()}, Apache License 2.0 (hls.js-LICENSE.txt)
"""


def _write_zip(root: Path, names: list[str], zip_path: Path) -> None:
    tmp = part_file(zip_path, ".part.zip")
    try:
        with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as z:
            for name in names:
                arc = Path(name).as_posix()
                if arc.startswith("/") or ".." in Path(arc).parts:  # never: the names are ours
                    raise EncodeError(f"Refusing to zip the path {arc}.")
                kind = zipfile.ZIP_STORED if arc.endswith((".m4s", ".mp4")) else zipfile.ZIP_DEFLATED
                z.write(root / name, arc, compress_type=kind)
        publish(tmp, zip_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@background()  # its ffmpeg runs lower: on a machine that serves live sessions, they come first
def package_hls(
    mp4: Path,
    outdir: Path,
    *,
    zip_path: Path | None = None,
    segment_s: float = 2.0,
    progress: Progress | None = None,
    captions: str | Path | list[Cue] | None = None,
    captions_name: str = "English",
    captions_language: str = "en",
) -> HlsResult:
    """Turn an MP4 into an adaptive HLS package (and optionally a zip of it).

    Args:
        mp4: any video ffmpeg reads (an H.264/AAC MP4 from :class:`~lipsync.LipSync`).
        outdir: the folder to write; created if needed. Files and rendition
            folders of the same names are replaced; nothing else is touched.
        zip_path: also write a zip with ``master.m3u8`` at its root.
        segment_s: segment length in seconds (0.5 to 10); keyframes are forced
            at every multiple of it in every rendition.
        progress: ``(stage, done, total)`` callback; the stage is ``"hls"``.
        captions: a WebVTT file (or cues) to add as a subtitles rendition:
            segmented WebVTT cut with the video, ``EXT-X-MEDIA:TYPE=SUBTITLES``
            in the master and ``SUBTITLES=`` on every variant; the player shows
            them by default. ``captions_name`` / ``captions_language`` label it.

    Returns:
        :class:`HlsResult` with the renditions (largest first) and their measured bit rates.

    Raises:
        InputError: the file is missing or has no readable video.
        EncodeError: ffmpeg failed or the player files are missing.
    """
    report = progress or (lambda stage, done, total: None)
    steps = 5 if zip_path is not None else 4
    mp4, outdir = Path(mp4), Path(outdir)
    if not mp4.is_file():
        raise InputError(f"The video {mp4} does not exist.")
    if not (0.5 <= float(segment_s) <= 10.0):
        raise InputError(f"segment_s must be between 0.5 and 10 seconds, not {segment_s}.")
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir} exists and is not a folder.")
    if zip_path is not None and Path(zip_path).is_dir():
        raise InputError(f"{zip_path} is a folder; give the zip file's name.")
    player = _player_files()
    cues = None
    if captions is not None:
        cues = read_vtt(Path(captions)) if isinstance(captions, (str, Path)) else list(captions)
        if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*", captions_language or ""):
            raise InputError(f"captions_language must be a language tag such as en or en-US, got {captions_language!r}.")
        if not captions_name or '"' in captions_name or "\n" in captions_name:
            raise InputError("captions_name must be a short label without quotes.")

    report("hls", 0, steps)
    info = probe(mp4)
    if info.duration_s <= 0:
        raise InputError(f"{mp4.name} has no duration.")
    fps = info.fps if info.fps <= MAX_FPS else Fraction(30)
    ladder = plan_ladder(info.width, info.height, float(fps), has_audio=info.has_audio)
    log.info("hls: %s %dx%d %.2fs %s fps -> %s", mp4.name, info.width, info.height, info.duration_s, fps,
             ", ".join(f"{r.name} {r.width}x{r.height} L{r.level / 10:.1f}" for r in ladder))
    report("hls", 1, steps)

    created = not outdir.exists()
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".hls-staging-", dir=outdir))
    except OSError as e:
        raise EncodeError(f"Cannot write to {outdir} ({e.strerror or e}).") from None
    moved: list[Path] = []
    zipped = False
    try:
        run(
            _encode_args(mp4, stage, info, ladder, float(segment_s)),
            timeout=300.0 + 20.0 * info.duration_s * len(ladder),
            what="ffmpeg (HLS)",
        )
        report("hls", 2, steps)
        ladder = [finish_rendition(stage / r.name, r) for r in ladder]
        subs = None
        if cues is not None:
            subs = [f"{SUBS_DIR}/{n}" for n in write_subtitles(stage / SUBS_DIR, cues, stage / ladder[0].name)]
        label = (captions_name, captions_language) if subs else None
        (stage / "master.m3u8").write_text(master_playlist(ladder, float(fps), label), "utf-8")
        for name, src in player.items():
            shutil.copyfile(src, stage / name)
        (stage / "README.txt").write_text(_readme(ladder, info.duration_s, bool(subs)), "utf-8")
        names = ["master.m3u8", *player, "README.txt"]
        for r in ladder:
            names += sorted(p.relative_to(stage).as_posix() for p in (stage / r.name).iterdir() if p.is_file())
        names += subs or []
        report("hls", 3, steps)
        if zip_path is not None:
            _write_zip(stage, names, Path(zip_path))
            zipped = True
            report("hls", 4, steps)
        # move into place: whole rendition folders, then the top-level files
        for top in [r.name for r in ladder] + ([SUBS_DIR] if subs else []) + ["master.m3u8", *player, "README.txt"]:
            dest = outdir / top
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(stage / top, dest)
            moved.append(dest)
    except BaseException as e:
        for p in moved:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if zipped:
            Path(zip_path).unlink(missing_ok=True)
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(outdir, ignore_errors=True)
        if isinstance(e, OSError):
            raise EncodeError(f"Could not write the HLS package ({e.strerror or e}: {e.filename or outdir}).") from e
        raise
    shutil.rmtree(stage, ignore_errors=True)
    report("hls", steps, steps)
    return HlsResult(
        outdir=outdir,
        master=outdir / "master.m3u8",
        renditions=ladder,
        zip=Path(zip_path) if zip_path is not None else None,
        duration_s=info.duration_s,
        fps=float(fps),
        files=names,
        subtitles=outdir / SUBS_DIR / "index.m3u8" if subs else None,
    )
