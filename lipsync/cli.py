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

__all__ = ["main", "add_engine_args", "engine_settings", "engine_from_args", "add_option_args", "options_from_args"]


def _version() -> str:
    from . import __version__

    return __version__


# ----------------------------------------------------------------------------- shared flags


def add_engine_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the engine's flags to ``parser``: ``--checkpoint --s3fd --device --precision``.

    The one definition used by ``generate``, ``batch`` and the web app's ``main()``; read them
    back with :func:`engine_settings` or :func:`engine_from_args`. Every default is None, so
    ``$LIPSYNC_DEVICE`` / ``$LIPSYNC_PRECISION`` (then ``auto``) apply where a flag is left out.
    (The frames per forward pass, ``--batch-size``, are a per-request option: see
    :func:`add_option_args`.)

    Returns:
        the argument group holding them (the ``engine`` section of ``--help``).
    """
    from .options import DEVICES, PRECISIONS

    g = parser.add_argument_group("engine")
    g.add_argument("--checkpoint", metavar="PTH",
                   help="local Wav2Lip checkpoint (default: $LIPSYNC_CHECKPOINT, else download)")
    g.add_argument("--s3fd", metavar="PTH", help="local S3FD face-detector weights (default: $LIPSYNC_S3FD, else download)")
    g.add_argument("--device", choices=DEVICES, help="where the network runs (default: $LIPSYNC_DEVICE, else auto)")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="default: $LIPSYNC_PRECISION, else auto: fp16 on a GPU; on a CPU int8 (OpenVINO) where it "
                        "is installed and passes its check for the checkpoint, else bf16 or fp32")
    return g


def engine_settings(args: argparse.Namespace) -> dict:
    """``{checkpoint, s3fd, device, precision}`` from :func:`add_engine_args`'s flags (then the
    environment, then ``auto``): the keyword arguments of :class:`~lipsync.LipSync`."""
    import os

    return {
        "checkpoint": args.checkpoint,
        "s3fd": args.s3fd,
        "device": args.device or os.environ.get("LIPSYNC_DEVICE") or "auto",
        "precision": args.precision or os.environ.get("LIPSYNC_PRECISION") or "auto",
    }


def engine_from_args(args: argparse.Namespace, **kwargs):
    """The :class:`~lipsync.LipSync` engine :func:`add_engine_args`'s flags describe (not loaded
    yet: it loads on first use). ``kwargs`` go to ``LipSync`` too (a ``detector``, say)."""
    from .pipeline import LipSync

    return LipSync(**engine_settings(args), **kwargs)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _shown(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_option_args(parser: argparse.ArgumentParser) -> list[argparse._ArgumentGroup]:
    """One flag per :class:`~lipsync.options.GenerateOptions` field, made from the field's
    metadata (help, flag, choices, metavar, group) and its type; each flag's ``dest`` is the
    field's name and its default None (read them back with :func:`options_from_args`).

    Types: ``bool`` -> ``--x/--no-x``; ``int``/``float``/``str`` -> one value;
    ``tuple[int, ...]`` -> that many whole numbers; ``dict[str, str]`` -> ``KEY=VALUE``, repeatable.
    """
    import dataclasses

    from .options import OPTION_GROUPS, GenerateOptions, option_flag

    groups = {key: parser.add_argument_group(title) for key, title in OPTION_GROUPS.items()}
    for f in dataclasses.fields(GenerateOptions):
        meta, kind = f.metadata, str(f.type).replace(" ", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_ = meta["help"]
        if default is not None and kind != "bool":
            help_ += f" (default {_shown(default)})"
        elif kind == "bool":
            help_ += f" (default: {_shown(default)})"
        kw: dict = {"dest": f.name, "default": None, "help": help_.replace("%", "%%")}
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind.startswith("tuple["):
            kw.update(type=int, nargs=kind.split("|")[0].count(",") + 1)
        elif kind.startswith("dict["):
            kw.update(type=_key_value, action="append")
        elif kind.startswith("int"):
            kw["type"] = int
        elif kind.startswith("float"):
            kw["type"] = float
        elif kind.startswith("str"):
            kw["type"] = str
        else:  # pragma: no cover - a new field type needs a rule here (tests/test_cli.py checks every field)
            raise TypeError(f"GenerateOptions.{f.name}: no command-line rule for the type {f.type}")
        groups[meta["group"]].add_argument(option_flag(f), **kw)
    return list(groups.values())


def options_from_args(args: argparse.Namespace):
    """The :class:`~lipsync.options.GenerateOptions` that :func:`add_option_args`'s flags ask for
    (flags left out keep the option's default; the options check the values)."""
    import dataclasses

    from .options import GenerateOptions

    given = {}
    for f in dataclasses.fields(GenerateOptions):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if isinstance(value, list) and str(f.type).startswith("dict"):
            value = dict(value)
        elif isinstance(value, list):
            value = tuple(value)
        given[f.name] = value
    return GenerateOptions(**given)


# ----------------------------------------------------------------------------- the parser


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lipsync", description="Lip-synced talking videos from one portrait.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (and show tracebacks)")
    p.add_argument("--version", action="version", version=f"lipsync {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="portrait (or video) + audio (or text) -> MP4",
                       description="One lip-synced MP4 from a portrait (or a short video) and speech (or a text).")
    io = g.add_argument_group("input and output")
    face = io.add_mutually_exclusive_group(required=True)
    face.add_argument("--image", help="the portrait (JPEG, PNG, WebP, BMP)")
    face.add_argument("--video", help="a short video of the person instead (MP4, MOV, WebM, MKV; up to 60 s)")
    src = io.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", help="speech (wav, mp3, m4a, ogg, flac)")
    src.add_argument("--text", help="words to speak (instead of --audio)")
    io.add_argument("--out", required=True, help="the MP4 to write")
    io.add_argument("--hls-zip", metavar="ZIP", help="also write an HLS package (ladder + player) as this zip")
    io.add_argument("--json", action="store_true",
                    help="print the result as one JSON object on stdout (messages stay on stderr)")
    add_engine_args(g)
    add_option_args(g)

    h = sub.add_parser("hls", help="MP4 -> adaptive HLS folder (+ zip with a player page)")
    h.add_argument("input", metavar="INPUT.mp4", help="a video (H.264/AAC MP4 or anything ffmpeg reads)")
    h.add_argument("outdir", metavar="OUTDIR", help="folder for master.m3u8, the renditions and player.html")
    h.add_argument("--zip", metavar="ZIP", help="also write the package as this zip")
    h.add_argument("--segment", type=float, default=2.0, metavar="S", help="segment length in seconds (default 2)")
    h.add_argument("--captions", metavar="VTT", help="add these WebVTT captions as a subtitles rendition")

    sub.add_parser("voices", help="list the voices for --text, one per line: id, label, availability")

    b = sub.add_parser("batch", help="many videos from a jobs file (CSV or JSONL), here or on a Ray cluster",
                       description="One video per row of JOBS (columns: id, image or video, text + voice or audio, "
                       "hls, and any generation option such as length, loop, fps or pads); see the README.")
    b.add_argument("jobs", metavar="JOBS", help="the jobs file (.csv, .tsv or .jsonl); paths in it are relative to it")
    b.add_argument("--out-dir", required=True, metavar="DIR",
                   help="where <id>.mp4, <id>_hls.zip, <id>.vtt and results.jsonl go")
    b.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes, one model each (default 1); with --ray: Ray workers "
                   "(default one per GPU, else one per --cpus-per-worker CPUs)")
    b.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray: alone, a local Ray instance; with ADDRESS (HOST:PORT or auto), "
                   "an existing cluster (put --ray after JOBS, or write --ray=ADDRESS)")
    b.add_argument("--cpus-per-worker", type=int, metavar="N", help="CPUs per Ray worker on CPU-only nodes (default 4)")
    b.add_argument("--workers-per-gpu", type=int, metavar="N",
                   help="with --ray: Ray workers per GPU, each with its own model, sharing it (default 1)")
    b.add_argument("--retry-failed", action="store_true", help="run the jobs that failed before again")
    b.add_argument("--strict", action="store_true", help="stop before any work if any row is bad")
    add_engine_args(b)  # with --ray the checkpoint path must exist on every node
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
    from . import Request
    from .pipeline.result import stages_text

    opts = options_from_args(a)
    request = Request(
        image=a.image, out=a.out, audio=a.audio, text=a.text, options=opts, video=a.video
    )  # checked before loading
    engine = engine_from_args(a)
    r = engine.run(request, progress=_progress_printer(sys.stderr.isatty()))
    stages = stages_text(r.timings)
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
    )
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

    settings = EngineSettings(**engine_settings(a))
    try:
        s = run_batch(
            a.jobs, a.out_dir, workers=a.workers, ray=a.ray is not None,
            ray_address=None if a.ray in (None, "local") else a.ray, cpus_per_worker=a.cpus_per_worker,
            workers_per_gpu=a.workers_per_gpu,
            retry_failed=a.retry_failed, strict=a.strict, settings=settings, progress=progress, notify=say,
        )
    except Interrupted as e:
        if bar is not None:
            bar.close()
        print(f"interrupted: finished jobs are recorded in {Path(a.out_dir) / 'results.jsonl'}; "
              "run the same command again to resume", file=sys.stderr)
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
