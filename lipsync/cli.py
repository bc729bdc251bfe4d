"""Command line: ``python -m lipsync generate --image IMG --audio AUDIO --out OUT.mp4``
(``--video CLIP`` instead of ``--image``; ``--text "..." [--voice ID] [--captions]
[--burn-captions]`` instead of ``--audio``, with ``[--length SECONDS] [--loop]`` for either),
``python -m lipsync voices``, ``python -m lipsync hls INPUT.mp4 OUTDIR [--zip ZIP]`` and
``python -m lipsync batch JOBS --out-dir DIR [--workers N] [--ray [ADDRESS]]``.

Exit status: 0 on success, 2 on any problem with the input or the set-up
(one line on stderr, no traceback), 1 on an unexpected internal error;
``batch``: 3 when it ran but one or more jobs failed (see DIR/results.jsonl),
130 / 143 when stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _version() -> str:
    from . import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    from .options import DEFAULT_MOTION

    p = argparse.ArgumentParser(prog="lipsync", description="Lip-synced talking videos from one portrait.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (and show tracebacks)")
    p.add_argument("--version", action="version", version=f"lipsync {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="portrait (or video) + audio (or text) -> MP4")
    face = g.add_mutually_exclusive_group(required=True)
    face.add_argument("--image", help="the portrait (JPEG, PNG, WebP, BMP)")
    face.add_argument("--video", help="a short video of the person instead (MP4, MOV, WebM, MKV; up to 60 s)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", help="speech (wav, mp3, m4a, ogg, flac)")
    src.add_argument("--text", help="words to speak (instead of --audio)")
    g.add_argument("--voice", help="voice id for --text (see: python -m lipsync voices; default: best available)")
    g.add_argument("--length", type=float, default=0.0, metavar="SECONDS",
                   help="make the soundtrack and video this long (default 0: natural length)")  # fmt: skip
    g.add_argument("--loop", action="store_true", help="with --length longer than the speech: repeat it")
    g.add_argument("--max-chars", type=int, default=1000, help="text length limit (default 1000)")
    g.add_argument("--out", required=True, help="the MP4 to write")
    g.add_argument("--checkpoint", help="local Wav2Lip checkpoint (default: $LIPSYNC_CHECKPOINT or download)")
    g.add_argument("--s3fd", help="local S3FD face-detector weights (default: $LIPSYNC_S3FD or download)")
    g.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    g.add_argument("--pads", type=int, nargs=4, metavar=("T", "B", "L", "R"), default=(0, 10, 0, 0),
                   help="grow the face box by these pixels (default 0 10 0 0)")  # fmt: skip
    g.add_argument("--box", type=int, nargs=4, metavar=("Y1", "Y2", "X1", "X2"),
                   help="use this face box instead of detecting one")  # fmt: skip
    g.add_argument("--face-index", type=int, default=0, help="which face, 0 = largest (default 0)")
    g.add_argument("--max-side", type=int, default=1280, help="scale the long side down to this (default 1280)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default auto")
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16", "int8"),
                   help="default auto: fp16 on a GPU; on a CPU int8 (OpenVINO) where it is installed "
                        "and passes its check for the checkpoint, else bf16 or fp32")  # fmt: skip
    g.add_argument("--batch-size", type=int, help="frames per forward pass")
    g.add_argument("--no-skip-silence", action="store_true", help="run the network on pauses too")
    g.add_argument("--frame-step", type=int, default=1, choices=(1, 2, 3, 4),
                   help="run the network on every n-th frame and blend between (faster, softer; default 1)")  # fmt: skip
    g.add_argument("--no-label", action="store_true", help='no visible "AI-generated" label in the video')
    g.add_argument("--motion", type=float, default=DEFAULT_MOTION, metavar="0..1",
                   help=f"head motion for a photo: 0 = still, 1 = the most (default {DEFAULT_MOTION:g})")  # fmt: skip
    g.add_argument("--video-loop", default="pingpong", choices=("pingpong", "loop"),
                   help="a video shorter than the speech plays back and forth (default) or loops")  # fmt: skip
    g.add_argument("--enhance", default="fast", choices=("off", "fast"),
                   help="the mouth's sharpness: fast adds the photo's own detail back (default), off the plain crop")  # fmt: skip
    g.add_argument("--blink", default="on", choices=("on", "off"), help="eye blinks on a photo (default on)")
    g.add_argument("--max-audio-seconds", type=float, default=120.0, metavar="S",
                   help="longest soundtrack or --length accepted (default 120)")  # fmt: skip
    g.add_argument("--captions", action="store_true",
                   help="with --text: also write WebVTT captions beside the video (OUT.vtt), "
                        "and add them to the --hls-zip package")  # fmt: skip
    g.add_argument("--burn-captions", action="store_true",
                   help="with --text: draw the captions into the video's frames")  # fmt: skip
    g.add_argument("--hls-zip", metavar="ZIP", help="also write an HLS package (ladder + player) as this zip")
    g.add_argument("--json", action="store_true",
                   help="print the result as one JSON object on stdout (messages stay on stderr)")  # fmt: skip

    h = sub.add_parser("hls", help="MP4 -> adaptive HLS folder (+ zip with a player page)")
    h.add_argument("input", metavar="INPUT.mp4", help="a video (H.264/AAC MP4 or anything ffmpeg reads)")
    h.add_argument("outdir", metavar="OUTDIR", help="folder for master.m3u8, the renditions and player.html")
    h.add_argument("--zip", metavar="ZIP", help="also write the package as this zip")
    h.add_argument("--segment", type=float, default=2.0, metavar="S", help="segment length in seconds (default 2)")
    h.add_argument("--captions", metavar="VTT", help="add these WebVTT captions as a subtitles rendition")

    sub.add_parser("voices", help="list the voices for --text, one per line: id, label, availability")

    b = sub.add_parser("batch", help="many videos from a jobs file (CSV or JSONL), here or on a Ray cluster",
                       description="One video per row of JOBS (columns: id, image, text + voice or audio, length, "
                       "loop, hls, and any generation option such as fps or pads); see the README.")  # fmt: skip
    b.add_argument("jobs", metavar="JOBS", help="the jobs file (.csv, .tsv or .jsonl); paths in it are relative to it")
    b.add_argument("--out-dir", required=True, metavar="DIR",
                   help="where <id>.mp4, <id>_hls.zip, <id>.vtt and results.jsonl go")  # fmt: skip
    b.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes, one model each (default 1); with --ray: Ray workers "
                   "(default one per GPU, else one per --cpus-per-worker CPUs)")  # fmt: skip
    b.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray: alone, a local Ray instance; with ADDRESS (HOST:PORT or auto), "
                   "an existing cluster (put --ray after JOBS, or write --ray=ADDRESS)")  # fmt: skip
    b.add_argument("--cpus-per-worker", type=int, metavar="N", help="CPUs per Ray worker on CPU-only nodes (default 4)")
    b.add_argument("--retry-failed", action="store_true", help="run the jobs that failed before again")
    b.add_argument("--strict", action="store_true", help="stop before any work if any row is bad")
    b.add_argument("--checkpoint",
                   help="Wav2Lip checkpoint, on every Ray node (default: $LIPSYNC_CHECKPOINT or download)")  # fmt: skip
    b.add_argument("--s3fd", help="local S3FD face-detector weights (default: $LIPSYNC_S3FD or download)")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default auto")
    b.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="default auto")
    return p


def _progress_printer(enabled: bool):
    last = {"stage": None, "t": 0.0}

    def report(stage: str, done: int, total: int) -> None:
        if not enabled:
            return
        now = time.monotonic()
        if stage != last["stage"] or done == total or now - last["t"] > 1.0:
            print(f"\r{stage}: {done}/{total}   ", end="" if done < total else "\n", file=sys.stderr, flush=True)
            last.update(stage=stage, t=now)

    return report


def _say(*parts: str) -> None:
    """Human messages go to stderr, so stdout stays clean for --json."""
    print(*parts, file=sys.stderr)


def _generate(a: argparse.Namespace) -> int:
    from . import GenerateOptions, LipSync, Request

    opts = GenerateOptions(
        fps=a.fps,
        pads=tuple(a.pads),
        box=tuple(a.box) if a.box else None,
        face_index=a.face_index,
        max_side=a.max_side,
        batch_size=a.batch_size,
        skip_silence=not a.no_skip_silence,
        label=not a.no_label,
        frame_step=a.frame_step,
        max_audio_s=a.max_audio_seconds,
        voice=a.voice,
        length_s=a.length,
        loop=a.loop,
        max_chars=a.max_chars,
        motion=a.motion,
        video_loop=a.video_loop,
        captions=a.captions,
        burn_captions=a.burn_captions,
        enhance=a.enhance,
        blink=a.blink,
    )
    request = Request(
        image=a.image, out=a.out, audio=a.audio, text=a.text, options=opts, video=a.video
    )  # checked before loading
    engine = LipSync(a.checkpoint, device=a.device, precision=a.precision, s3fd=a.s3fd)
    r = engine.run(request, progress=_progress_printer(sys.stderr.isatty()))
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in r.timings.items())
    _say(
        f"wrote {r.video} ({r.duration_s:.2f} s, {r.frames} frames at {r.fps:g} fps, {r.width}x{r.height}; "
        f"{'video' if r.source == 'video' else 'photo'}, face {r.box.as_tuple()} by {r.detector} in {r.face_frames} "
        f"frames; motion {r.motion:g}; {r.device}; {stages})"
        + (f"; voice {r.voice}" if r.voice else "")
        + f"; enhance {r.enhance}; blinks {r.blink}"
    )
    if r.captions:
        _say(f"wrote {r.captions} (captions)")
    hls_zip = None
    if a.hls_zip:
        import tempfile

        from .media.hls import package_hls

        with tempfile.TemporaryDirectory(prefix="lipsync-hls-") as tmp:
            h = package_hls(Path(r.video), Path(tmp) / "hls", zip_path=Path(a.hls_zip), captions=r.captions)
        hls_zip = h.zip
        _say(f"wrote {h.zip} (HLS: {', '.join(x.name for x in h.renditions)})")
    if a.json:
        import json

        data = r.to_dict()
        data["hls_zip"] = str(Path(hls_zip).absolute()) if hls_zip else None
        print(json.dumps(data))
    return 0


def _hls(a: argparse.Namespace) -> int:
    from .media.hls import package_hls

    r = package_hls(
        Path(a.input), Path(a.outdir), zip_path=Path(a.zip) if a.zip else None, segment_s=a.segment,
        progress=_progress_printer(sys.stderr.isatty()), captions=Path(a.captions) if a.captions else None,
    )  # fmt: skip
    ladder = ", ".join(f"{x.name} {x.width}x{x.height} {x.bandwidth / 1e6:.2f} Mbit/s" for x in r.renditions)
    _say(f"wrote {r.master} ({r.duration_s:.2f} s; {ladder})" + (f" and {r.zip}" if r.zip else ""))
    return 0


def _voices(a: argparse.Namespace) -> int:
    """One voice per line: id, label, availability (and why not), tab-separated."""
    from .speech import default_voice, list_voices

    voices = list_voices()
    best = default_voice().id if any(v.available for v in voices) else None
    for v in voices:
        state = "available" if v.available else f"unavailable: {v.reason}"
        if v.available and v.note:
            state += f" ({v.note})"
        if v.id == best:
            state += " [default]"
        print(f"{v.id}\t{v.label}\t{state}")
    return 0


def _batch(a: argparse.Namespace) -> int:
    """Run a jobs file; a tqdm bar on stderr (when it is a terminal), a summary on stdout."""
    from .batch import EXIT_JOBS_FAILED, EngineSettings, Interrupted, run_batch

    bar = None

    def say(line: str) -> None:
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def progress(done: int, total: int, ok: int, failed: int) -> None:
        nonlocal bar
        if bar is None:
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm comes with huggingface_hub
                return
            bar = tqdm(total=total, unit="job", desc="videos", file=sys.stderr, disable=None, dynamic_ncols=True)
        bar.set_postfix_str(f"ok {ok}, failed {failed}", refresh=False)
        bar.update(done - bar.n)

    settings = EngineSettings(checkpoint=a.checkpoint, device=a.device, precision=a.precision, s3fd=a.s3fd)
    try:
        s = run_batch(
            a.jobs, a.out_dir, workers=a.workers, ray=a.ray is not None,
            ray_address=None if a.ray in (None, "local") else a.ray, cpus_per_worker=a.cpus_per_worker,
            retry_failed=a.retry_failed, strict=a.strict, settings=settings, progress=progress, notify=say,
        )  # fmt: skip
    except Interrupted as e:
        if bar is not None:
            bar.close()
        print(f"interrupted: finished jobs are recorded in {Path(a.out_dir) / 'results.jsonl'}; "
              "run the same command again to resume", file=sys.stderr)  # fmt: skip
        return 128 + int(e.signum)
    if bar is not None:
        bar.close()
    parts = [f"{s.ok} of {s.rows} ok"]
    if s.already_done:
        parts.append(f"{s.already_done} finished before")
    if s.failed:
        why = []
        if s.bad_rows:
            why.append(f"{s.bad_rows} bad row(s)")
        if s.failed_before:
            why.append(f"{s.failed_before} failed before; --retry-failed runs them again")
        parts.append(f"{s.failed} failed" + (f" ({'; '.join(why)})" if why else ""))
    rate = f"; {s.ran} run in {s.elapsed_s:.1f} s ({s.jobs_per_minute:.1f} jobs/min)" if s.ran else ""
    print(f"{', '.join(parts)}{rate}; results in {s.results}")
    return 0 if s.success else EXIT_JOBS_FAILED


def main(argv: list[str] | None = None) -> int:
    from .errors import LipSyncError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "hls":
            return _hls(args)
        if args.command == "voices":
            return _voices(args)
        if args.command == "batch":
            return _batch(args)
        raise AssertionError(args.command)  # pragma: no cover
    except LipSyncError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last line of defence for a CLI
        if args.verbose:
            raise
        print(f"internal error: {type(e).__name__}: {e} (run with -v for details)", file=sys.stderr)
        return 1
