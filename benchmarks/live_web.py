#!/usr/bin/env python3
"""Live sessions over WebRTC: what sending them costs the server, beside their own work, and what admission says.

    python benchmarks/live_web.py --at-once 4,8,10 --seconds 20 --stand-in 4,0.03   # the host side of a GPU
    python benchmarks/live_web.py --at-once 1,2 --seconds 20                          # the int8 network here
    python benchmarks/live_web.py --at-once 8 --json out.json

The app's live routes (:func:`lipsync.live.web.install`, uvicorn on loopback) serve N
visitors at once from one engine in this process. The visitors are aiortc peers in a
child process, each with a microphone that plays a speech-like signal at real-time
pace (``mic`` mode: the avatar lip-syncs it). They receive the avatar's packets but do
not decode them: a real visitor decodes on their own machine, and a decoder here would
take this machine's cores from the server. Each visitor comes from its own address
(``X-Forwarded-For``, with ``LIPSYNC_TRUST_PROXY=1``).

Per N, over ``--seconds`` after a warm-up of 3 s: each session's frames on time in that
span and its frame step; the share of the pictures made that went out (a track drops the
oldest when its encoder falls behind: the visitor sees fewer pictures, though the session
made each on time); the CPU the visitors' process took; the server's CPU per frame made, by thread: the session
threads (each session's own work, the part admission counted before, and the driver's
handing of frames to the tracks), the event loop's default executor (aiortc's VP8 and
Opus encoders), the receivers' decoder threads (the microphones' Opus), the event loop
(RTP, SRTP, ICE, the data channel, HTTP), the network's thread, and threads outside
Python; the sending's cost as :mod:`lipsync.live.web.sending` measures it for
admission, its ratio to the sessions' own work (same process, same run), and what
admission (``auto``) says without it and with it.

``--stand-in BASE_MS,PER_FRAME_MS`` replaces the network by a lock-free wait (as in
``benchmarks/gpu_live.py``; 4,0.03 are an H200's batch times): what is left is the host
side, which is what limits a process on a GPU. Nothing here is asserted; the load
average is printed with each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
EXAMPLE = ROOT / "assets" / "astronaut.jpg"
RATE = 16000
WARM_S = 3.0


# -- the visitors (a child process) -------------------------------------------------------
def visitors(port: int, n: int, seconds: float) -> None:
    """N aiortc peers in mic mode against the server on ``port``, for ``seconds``."""
    import av
    import httpx
    from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription, rtcrtpreceiver
    from live import voiced

    class Undecoded:  # a visitor's decoder runs on the visitor's machine, not on this one's cores
        def decode(self, frame):
            return []

    rtcrtpreceiver.get_decoder = lambda codec: Undecoded()
    speech = (voiced(30.0, seed=1) * 32767).astype(np.int16)

    class Mic(MediaStreamTrack):
        kind = "audio"

        def __init__(self, k: int):
            super().__init__()
            self.n, self.t0, self.k = 0, None, k

        async def recv(self):
            if self.t0 is None:
                self.t0 = time.monotonic()
            await asyncio.sleep(max(0.0, self.t0 + self.n * 0.02 - time.monotonic()))
            i = (self.n * 320 + self.k * 3001) % (len(speech) - 320)
            frame = av.AudioFrame.from_ndarray(speech[None, i : i + 320], format="s16", layout="mono")
            frame.sample_rate = RATE
            frame.pts, frame.time_base = self.n * 320, Fraction(1, RATE)
            self.n += 1
            return frame

    async def one(client, k: int):
        pc = RTCPeerConnection()
        channel = pc.createDataChannel("keepalive")

        async def ping():
            while True:
                await asyncio.sleep(0.5)
                if channel.readyState == "open":
                    channel.send("ping")

        asyncio.ensure_future(ping())
        pc.addTransceiver(Mic(k), direction="sendrecv")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        r = await client.post("/live/offer", headers={"x-forwarded-for": f"10.1.{k // 250}.{k % 250 + 1}"},
                              json={"sdp": pc.localDescription.sdp, "type": "offer", "mode": "mic"})
        if r.status_code != 200:
            raise SystemExit(f"visitor {k}: {r.status_code} {r.text}")
        a = r.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=a["sdp"], type=a["type"]))
        return pc

    async def main():
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            pcs = [await one(client, k) for k in range(n)]
            await asyncio.sleep(seconds)
            for pc in pcs:
                await pc.close()

    asyncio.run(main())


# -- the server (this process) ------------------------------------------------------------
def thread_cpu() -> collections.Counter:
    """CPU seconds so far of this process's Python threads, grouped by what they do."""
    out: collections.Counter = collections.Counter()
    for t in threading.enumerate():
        name = t.name
        if name.startswith("lipsync-live-") and not name.startswith(("lipsync-live-work", "lipsync-live-voice")):
            group = "sessions"  # each session's own work, and its driver handing frames to the tracks
        elif name.startswith("asyncio_"):
            group = "encoders"  # the event loop's default executor: aiortc's VP8 and Opus encoders
        elif "decoder" in name:
            group = "decoders"  # the receivers' threads: the microphones' Opus
        elif name == "web-loop":
            group = "event loop"
        elif name.startswith("lipsync-network"):
            group = "network thread"
        else:
            group = "other"
        try:
            out[group] += time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (OSError, ProcessLookupError, TypeError):
            pass  # the thread ended meanwhile
    return out


def child_cpu(pid: int) -> float:
    """CPU seconds a child process has used so far (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def at_once(engine, server, port: int, n: int, seconds: float) -> dict:
    from lipsync.live.web.sending import SENDING

    child = subprocess.Popen([sys.executable, __file__, "--visitors", str(port), str(n), str(seconds + WARM_S + 2)])
    t0 = time.monotonic()
    while len([p for p in server.peers.values() if p.connected]) < n:
        if child.poll() is not None or time.monotonic() - t0 > 60 + 5 * n:
            child.kill()
            raise SystemExit(f"{n} visitors did not all connect")
        time.sleep(0.1)
    time.sleep(WARM_S)
    peers = list(server.peers.values())
    stats0 = [(p.session.stats.frames, p.session.stats.late_frames) for p in peers]
    cpu0, proc0, w0, them0 = thread_cpu(), time.process_time(), time.monotonic(), child_cpu(child.pid)
    sent0 = SENDING.frames_total
    runs: list[tuple[int, float]] = []  # the cyclic collector's runs in the window: (generation, seconds)
    began = [0.0]

    def collector(phase: str, info: dict) -> None:  # it holds the interpreter lock: every session waits
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            runs.append((info["generation"], time.perf_counter() - began[0]))

    gc.callbacks.append(collector)
    try:
        time.sleep(seconds)
    finally:
        gc.callbacks.remove(collector)
    cpu1, proc1, w1, them1 = thread_cpu(), time.process_time(), time.monotonic(), child_cpu(child.pid)
    sent = SENDING.frames_total - sent0
    stats1 = [(p.session.stats.frames, p.session.stats.late_frames) for p in peers]
    steps = collections.Counter(p.session.mode.step for p in peers)
    on_time = [100 * (1 - (l1 - l0) / max(1, f1 - f0)) for (f0, l0), (f1, l1) in zip(stats0, stats1)]
    groups = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    python = sum(groups.values())
    groups["outside Python"] = max(0.0, (proc1 - proc0) - python)
    made = sum(f1 - f0 for (f0, _), (f1, _) in zip(stats0, stats1))
    per_frame = {k: round(1000 * v / max(1, made), 2) for k, v in sorted(groups.items()) if v > 0.0005}
    tickets = [p.session._ticket for p in peers if getattr(p.session, "_ticket", None) is not None]
    own = max((t.work_s for t in tickets), default=0.0)
    cost = SENDING.cost
    without = engine.generator.scheduler.capacity(25.0)
    fixed, server.max_sessions = server.max_sessions, None
    try:
        with_sending = server.capacity(engine)  # ``auto``: what this server would say with no fixed limit
    finally:
        server.max_sessions = fixed
    child.communicate(timeout=60)
    return {
        "sessions": n, "seconds": round(w1 - w0, 1), "load": [round(x, 2) for x in os.getloadavg()],
        "on_time_pct_min": round(min(on_time), 2), "on_time_pct_median": round(float(np.median(on_time)), 2),
        "steps": {str(k): v for k, v in sorted(steps.items())},
        "pictures_encoded_per_s": round(sent / (w1 - w0), 1),
        # of the pictures the sessions made, the share that went out (the rest a track dropped: its encoder was behind)
        "pictures_sent_pct": round(100 * sent / max(1, made), 1),
        "cpu_s_per_session_s": round((proc1 - proc0) / (n * (w1 - w0)), 4),
        "visitors_cpus": round((them1 - them0) / (w1 - w0), 2),  # the visitors' process, on the same machine
        "cpu_ms_per_frame_made_by_thread": per_frame,
        "own_work_ms": round(1000 * own, 2),  # the dearest session's, as admission reads it
        "sending_ms": round(1000 * cost.cpu_s, 2) if cost else None,  # as admission reads it
        "sending_locked_ms": round(1000 * cost.locked_s, 2) if cost else None,
        "sending_to_own_work": round(cost.cpu_s / own, 2) if cost and own else None,
        "admits_without_sending": without.sessions if without else None,
        "admits": with_sending["limit"], "how": with_sending["how"],
        # pictures went unsent lately: the server admits no one more than runs, whatever the estimate says
        "holding_for_unsent": server.holding_for_unsent,
        # the garbage collector's pauses in the window (a full one walked the engine and the app before the
        # first session froze them): how many of each generation, and the longest
        "collections": [sum(1 for g, _ in runs if g == k) for k in range(3)],
        "longest_collection_ms": round(1000 * max((d for _, d in runs), default=0.0), 2),
    }


def full_collection_ms() -> float:
    """How long one of Python's full garbage collections takes now (the interpreter lock held throughout)."""
    t = time.perf_counter()
    gc.collect()
    return round(1000 * (time.perf_counter() - t), 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--at-once", default="4,8")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--stand-in", metavar="BASE_MS,PER_FRAME_MS",
                    help="a lock-free wait for the network (e.g. 4,0.03: an H200's batch times): the host side alone")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval (s): how soon a thread waiting for the GIL gets it (0: Python's 5 ms)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--visitors", nargs=3, metavar=("PORT", "N", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.visitors:
        visitors(int(args.visitors[0]), int(args.visitors[1]), float(args.visitors[2]))
        return 0
    os.environ["LIPSYNC_TRUST_PROXY"] = "1"  # each visitor its own address (X-Forwarded-For)
    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)
    import uvicorn
    from fastapi import FastAPI
    from gpu_live import GivenBox, stand_in
    from preview import free_port

    from lipsync import LipSync
    from lipsync.live.web import install
    from lipsync.models.scratch import write_scratch_checkpoint

    tmp = tempfile.TemporaryDirectory(prefix="lipsync-web-")
    ckpt = write_scratch_checkpoint(Path(tmp.name) / "scratch.pth", 1234)
    engine = LipSync(ckpt, device="cpu", precision="int8", detector=GivenBox()).load()
    res = {"device": engine.generator.description, "cpus": os.cpu_count()}
    if args.stand_in:
        base, per = (float(x) for x in args.stand_in.split(","))
        stand_in(engine.generator, base, per)
        res["device"] += f" (network replaced by a {base:g} ms + {per:g} ms a frame wait: the host side alone)"
    res["measured_at_load"] = engine.generator.measure_capacity(25.0).frames_per_s
    app = FastAPI()
    server = install(app, lambda: engine, max_sessions=1000, offer_interval_s=0.0, max_pending=64, image=EXAMPLE)
    res["full_collection_ms"] = full_collection_ms()  # before any session: what one would stop them all for
    print(json.dumps(res), flush=True)
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=web.run, name="web-loop", daemon=True).start()
    while not web.started:
        time.sleep(0.05)
    res["at_once"] = []
    for n in [int(x) for x in args.at_once.split(",")]:
        r = at_once(engine, server, port, n, args.seconds)
        res["at_once"].append(r)
        print(json.dumps(r), flush=True)
        t = time.monotonic()
        while server.peers and time.monotonic() - t < 30:  # the visitors left: their sessions close
            time.sleep(0.2)
        time.sleep(2.0)
    # after the sessions (the first one froze the heap it found)
    res["full_collection_ms_after_sessions"] = full_collection_ms()
    print(json.dumps({"full_collection_ms_after_sessions": res["full_collection_ms_after_sessions"]}), flush=True)
    web.should_exit = True
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
