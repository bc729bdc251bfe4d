#!/usr/bin/env python3
"""Send many concurrent requests to a running lipsync app and check it holds up.

    python scripts/load_test.py --url http://127.0.0.1:7860/ --requests 12 --concurrency 12 \\
        [--server-pid PID] [--tmpdir DIR]

Every request must either succeed (an MP4 comes back) or be turned away quickly
with a "queue is full" message; nothing else (no 5xx, no other error). With
``--server-pid`` the server's open files, threads-free child processes and its
request temp folders (``lipsync-*`` in ``--tmpdir``) are compared before and
after. Request count and time are bounded; only the given (local) URL is used.
Prints one JSON object; exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Hello there. This is a short test."


def _server_state(pid: int | None, tmpdir: Path | None) -> dict:
    if pid is None:
        return {}
    import psutil

    p = psutil.Process(pid)
    kids = [c for c in p.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
    # a connection this process still holds open (a client's heartbeat stream, which Gradio ends only at its next
    # beat, 15 s on) is the client's, not a leak of the server's
    ours = {c.laddr for c in psutil.Process().net_connections("tcp") if c.raddr}
    held = sum(1 for c in p.net_connections("tcp") if c.raddr and c.raddr in ours)
    state = {"open_files": p.num_fds() - held, "children": len(kids)}
    if tmpdir is not None:
        state["request_dirs"] = len([d for d in tmpdir.glob("lipsync-*") if not d.name.startswith("lipsync-app-")])
    return state


def _one(url: str, image: Path, i: int, timeout: float) -> dict:
    from gradio_client import Client, handle_file

    t = time.perf_counter()
    try:
        client = Client(url, verbose=False)
        job = client.submit(
            image=handle_file(str(image)),
            text=f"{TEXT} Number {i}.",
            voice="espeak:en-us",
            consent=True,
            api_name="/generate",
        )
        result = job.result(timeout=timeout)
        video = result[0]
        path = video.get("video") if isinstance(video, dict) else video
        ok = bool(path) and Path(path).is_file() and Path(path).stat().st_size > 0
        return {"i": i, "outcome": "ok" if ok else "bad-result", "seconds": time.perf_counter() - t}
    except Exception as e:  # noqa: BLE001 - classified below
        msg = f"{type(e).__name__}: {e}"
        kind = "queue-full" if "queue is full" in msg.lower() or "queue full" in msg.lower() else "error"
        return {"i": i, "outcome": kind, "seconds": time.perf_counter() - t, "message": msg[:300]}


def run_load(
    url: str,
    *,
    requests: int = 8,
    concurrency: int = 8,
    image: Path = ROOT / "assets" / "astronaut.jpg",
    timeout: float = 300.0,
    server_pid: int | None = None,
    tmpdir: Path | None = None,
    settle_s: float = 10.0,
) -> dict:
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("load tests only target this machine (127.0.0.1 / localhost)")
    before = _server_state(server_pid, tmpdir)
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        rows = list(pool.map(lambda i: _one(url, image, i, timeout), range(requests)))
    wall = time.perf_counter() - t
    after = before
    deadline = time.monotonic() + settle_s
    while server_pid is not None:
        after = _server_state(server_pid, tmpdir)
        if all(after[k] <= before[k] for k in before) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("ok", "queue-full", "error", "bad-result")}
    rejected = [r["seconds"] for r in rows if r["outcome"] == "queue-full"]
    report = {
        "requests": requests,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "counts": counts,
        "slowest_rejection_s": round(max(rejected), 2) if rejected else None,
        "server_before": before,
        "server_after": after,
        "errors": [r["message"] for r in rows if r["outcome"] in ("error", "bad-result") and "message" in r],
    }
    report["passed"] = (
        counts["error"] == 0
        and counts["bad-result"] == 0
        and counts["ok"] >= 1
        and all(after.get(k, 0) <= v for k, v in before.items())
    )
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:7860/")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--tmpdir", type=Path)
    a = ap.parse_args(argv)
    if not 1 <= a.requests <= 200 or not 1 <= a.concurrency <= 64:
        raise SystemExit("keep it small: 1-200 requests, 1-64 at once")
    rep = run_load(a.url, requests=a.requests, concurrency=a.concurrency, timeout=a.timeout,
                   server_pid=a.server_pid, tmpdir=a.tmpdir)
    print(json.dumps(rep, indent=1))
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
