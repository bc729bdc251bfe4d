#!/usr/bin/env python3
"""Soak a running lipsync app: many sequential API requests, and the server must not creep.

    python scripts/soak.py --url http://127.0.0.1:7860/ --server-pid PID --tmpdir DIR [--requests 200]

Requests go one after another to ``/generate`` (gradio_client), in a fixed
cycle: text on the photo, recorded audio, a short driving video, a request
cancelled mid-run, and bad inputs (no consent, no text, a photo without a
face, a file that is not an image, an unknown voice, a file that is not
audio). Every good request must give an MP4; every bad one a clear message
(no traceback, no server path). After a warm-up (``--warmup`` requests) the
server's memory (RSS) may grow by at most ``--max-growth`` (5 %), and its file
descriptors, threads and child processes must stay flat; afterwards no request
folder may be left beyond the few finished ones the app keeps by design.
Only the given (local) URL is used. Prints one JSON object; exit status 0 when
every check passed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "assets" / "astronaut.jpg"
#: folders the app makes per request (``lipsync-app-*``) or per stream/run (``lipsync-*``); the
#: process's own small-files folder is one and stays
PROCESS_DIR = "lipsync-app-files-"
#: the app keeps this many finished requests' folders (Gradio copies the results meanwhile)
KEPT = 8
#: "flat": what a count may differ by between the end of the warm-up and the end
THREAD_SLACK = 4


def server_state(pid: int, tmpdir: Path | None) -> dict:
    import psutil

    p = psutil.Process(pid)
    kids = [c for c in p.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
    out = {"rss_mb": p.memory_info().rss / 2**20, "fds": p.num_fds(), "threads": p.num_threads(), "children": len(kids)}
    if tmpdir is not None:
        names = [d.name for d in tmpdir.iterdir() if d.name.startswith("lipsync") and not d.name.startswith(PROCESS_DIR)]
        out["request_dirs"] = len(names)
    return out


def make_inputs(folder: Path) -> dict[str, Path]:
    """Small inputs: a 1.2 s recording, a 1.2 s video of the portrait, a grey photo, two broken files."""
    import numpy as np
    from PIL import Image

    from lipsync.media.encode import write_wav

    sr = 16000
    t = np.arange(int(1.2 * sr)) / sr
    voice = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    write_wav(folder / "speech.wav", voice, sr)
    import imageio_ffmpeg

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-loop", "1", "-i", str(IMAGE), "-t", "1.2",
         "-vf", "scale=256:256", "-r", "25", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(folder / "face.mp4")],
        check=True, timeout=60,
    )
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(folder / "grey.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (folder / "noise.wav").write_bytes(b"RIFF" + b"\xff" * 60)
    return {p.stem: p for p in folder.iterdir()}


#: the cycle of requests: (name, arguments over the defaults, what must come back)
def plan(files: dict[str, Path]) -> list[tuple[str, dict, str]]:
    from gradio_client import handle_file

    photo = handle_file(str(IMAGE))
    return [
        ("text", {"text": "Hello there, number one."}, "ok"),
        ("audio", {"audio": handle_file(str(files["speech"])), "text": ""}, "ok"),
        ("video", {"image": None, "video": handle_file(str(files["face"])), "text": "Hi from a video."}, "ok"),
        ("bad: no consent", {"consent": False}, "right to use"),
        ("text, slower", {"text": "A second short line, every frame drawn.", "frame_step": 1}, "ok"),
        ("cancelled", {"text": "This one is cancelled before it ends. " * 3}, "cancel"),
        ("bad: no face", {"image": handle_file(str(files["grey"]))}, "face"),
        ("bad: not an image", {"image": handle_file(str(files["broken"]))}, "picture"),
        ("text, looped", {"text": "Loop me.", "length_s": 2, "loop": True, "image": photo}, "ok"),
        ("bad: empty text", {"text": "   "}, "text"),
        ("bad: unknown voice", {"voice": "espeak:xx-nowhere"}, "voice"),
        ("bad: not audio", {"audio": handle_file(str(files["noise"])), "text": ""}, "audio"),
    ]


def _clear(msg: str) -> bool:
    """A message a person can act on: words, no traceback, no server path."""
    return len(msg) > 20 and "Traceback" not in msg and 'File "' not in msg and "/tmp/" not in msg


def one(client, name: str, kwargs: dict, expect: str, timeout: float, base: dict | None = None) -> dict:
    from gradio_client import handle_file

    args = dict(image=handle_file(str(IMAGE)), text="Hello.", voice="espeak:en-us", consent=True, max_side=480)
    args.update(kwargs)
    args.update({k: v for k, v in (base or {}).items() if k in ("max_side", "frame_step")})  # a quick run stays quick
    t = time.perf_counter()
    row = {"name": name, "expect": expect}
    try:
        if expect == "cancel":
            job = client.submit(**args, api_name="/generate")
            deadline = time.monotonic() + 30
            while job.status().code.name not in ("PROCESSING", "PROGRESS") and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # mid-run
            job.cancel()
            row["ok"] = True
            return row
        result = client.predict(**args, api_name="/generate")
        video = result[0]
        path = Path(video.get("video") if isinstance(video, dict) else video)
        row["ok"] = expect == "ok" and path.is_file() and path.stat().st_size > 0
        if expect != "ok":
            row["message"] = "accepted a bad input"
    except Exception as e:  # noqa: BLE001 - judged below
        msg = str(e)
        row["message"] = msg[:300]
        row["ok"] = expect not in ("ok", "cancel") and expect in msg.lower() and _clear(msg)
    finally:
        row["seconds"] = round(time.perf_counter() - t, 2)
    return row


def _settle(pid: int, tmpdir: Path | None, reference: dict, timeout: float = 20.0) -> dict:
    """The server's state once its counts are back at (or below) ``reference``, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        now = server_state(pid, tmpdir)
        flat = now["children"] <= reference["children"] and now["fds"] <= reference["fds"]
        if flat or time.monotonic() > deadline:
            return now
        time.sleep(0.25)


def run_soak(url: str, pid: int, tmpdir: Path | None, *, requests: int = 200, warmup: int = 24,
             max_growth: float = 0.05, timeout: float = 300.0, log=None, base: dict | None = None) -> dict:
    """Send ``requests`` sequential requests; return the figures and whether every check passed.

    ``base`` sets ``max_side`` and ``frame_step`` for every request (``{"max_side": 480, "frame_step": 2}`` for
    a quick run).
    """
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("soak tests only target this machine (127.0.0.1 / localhost)")
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="soak-downloads-"))
    with tempfile.TemporaryDirectory(prefix="soak-inputs-") as d:
        steps = plan(make_inputs(Path(d)))
        rows, samples, warm = [], [], None
        t0 = time.perf_counter()
        for i in range(requests):
            name, kwargs, expect = steps[i % len(steps)]
            row = one(client, name, kwargs, expect, timeout, base)
            rows.append(row)
            st = server_state(pid, tmpdir)
            samples.append(round(st["rss_mb"], 1))
            if log is not None:
                log(f"{i + 1:4d} {name:20s} {'ok' if row['ok'] else 'FAILED'} {row['seconds']:6.1f} s  "
                    f"rss {st['rss_mb']:.0f} MB fds {st['fds']} threads {st['threads']} children {st['children']}")
            if i + 1 == warmup:
                warm = _settle(pid, tmpdir, st)
        wall = time.perf_counter() - t0
    end = _settle(pid, tmpdir, warm or samples and server_state(pid, tmpdir))
    warm = warm or end
    growth = (end["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"]
    failed = [r for r in rows if not r["ok"]]
    checks = {
        "every request answered as expected": not failed,
        f"RSS growth <= {max_growth:.0%}": growth <= max_growth,
        "file descriptors flat": end["fds"] <= warm["fds"],
        f"threads flat (within {THREAD_SLACK})": end["threads"] <= warm["threads"] + THREAD_SLACK,
        "child processes flat": end["children"] <= warm["children"],
    }
    if tmpdir is not None:
        checks[f"no request folders left (at most the {KEPT} kept)"] = end["request_dirs"] <= KEPT
    return {
        "requests": requests,
        "warmup": warmup,
        "wall_s": round(wall, 1),
        "after_warmup": {k: round(v, 1) for k, v in warm.items()},
        "end": {k: round(v, 1) for k, v in end.items()},
        "rss_growth": round(growth, 4),
        "rss_mb_samples": samples,
        "failed": failed,
        "checks": checks,
        "passed": all(checks.values()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:7860/")
    ap.add_argument("--server-pid", type=int, required=True, help="the app's process id (to measure it)")
    ap.add_argument("--tmpdir", type=Path, help="the app's TMPDIR (to count request folders left behind)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=24)
    ap.add_argument("--max-growth", type=float, default=0.05)
    ap.add_argument("--small", action="store_true", help="480 px, every 2nd frame drawn: a quicker run")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if not 1 <= a.requests <= 1000 or not 0 <= a.warmup < a.requests:
        raise SystemExit("1-1000 requests, and a warm-up shorter than the run")
    sys.path.insert(0, str(ROOT))
    rep = run_soak(a.url, a.server_pid, a.tmpdir, requests=a.requests, warmup=a.warmup, max_growth=a.max_growth,
                   base={"max_side": 480, "frame_step": 2} if a.small else None, log=None if a.quiet else lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(rep, indent=1))
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
