#!/usr/bin/env python3
"""Live sessions: latency, sustained real time, and memory over open/close cycles.

    python benchmarks/live.py                                # int8, bf16 and fp32, full run
    python benchmarks/live.py --precisions int8 --sessions 5 --sustained 10 --cycles 5
    python benchmarks/live.py --checkpoint wav2lip_gan.pth --json out.json
    python benchmarks/live.py --precisions int8 --video film --sessions 5 --sustained 30 --cycles 5 --web-cycles 0
    python benchmarks/live.py --precisions int8 --at-once 3 --sustained 24 --sessions 0 --cycles 0 --web-cycles 0 \
        --frame-cost 0 --clip-hls

For each precision, one engine is loaded, then:

* **latency**: ``--sessions`` sessions; each idles for 1.2 s (past the first-second
  speed measurement), then a pusher thread feeds speech in 20 ms chunks at
  real-time pace, as a microphone would. Latency = the wall time at which the
  first frame whose slot carries speech is handed out, minus the time the first
  chunk reached ``push``. That frame's mouth is checked to differ from the rest
  mouth (it follows the speech). p50 and p95 are printed.
* **sustained**: ``--sustained`` seconds of speech pushed at real-time pace.
  Frames on time (handed out within one slot of their time), the latest frame in
  slots, frames that repeated the last picture to catch up after a stall, underruns (speech ran dry while it was still being pushed), and the A/V
  offset measured from timestamps: each frame's audio start (samples handed out
  before it / rate) minus its picture's pts.
* **frame cost**: one frame's parts, unpaced, median of ``--frame-cost`` runs: the mel
  window, the network, the paste plain and with the ``fast`` enhancement (its extra
  is what a speaking frame pays), a shut blink's eyelids, the head warp.
* **a driving video** (``--video PATH``, or ``film`` for the film-like clip of
  ``benchmarks/film.py``): latency, sustained and memory run on it instead of the
  photo. Each speaking frame then runs the face encoder on its own face as well;
  the frame cost gives that per-frame network beside the photo's, in one process.
* **many at once** (``--at-once N``): N sessions on threads of one engine, each fed
  ``--sustained`` seconds of speech, with a ``--clip-s`` clip made on the same engine
  once they speak; ``--clip-hls`` then packages the clip for HLS, as the Generate tab
  does, and counts the sessions' late frames meanwhile. Per session: frames on time,
  repeated, the step it ended at; the batched rate, and what admission says after.
* **memory**: ``--cycles`` open/push/close cycles; RSS, open file descriptors,
  threads and child processes after the first cycle and after the last; then the
  same over ``--web-cycles`` WebRTC connect/disconnect cycles (an in-process
  aiortc client against the signalling routes, real RTP on loopback).

The speech is a synthetic voiced signal (a 120-220 Hz glottal buzz with syllable
envelopes), so no TTS or files are needed. Weights: ``--checkpoint``, else the
deterministic scratch checkpoint (same network, same cost as the published one).
Timing on a shared machine is noisy: the load average is printed with each number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "assets" / "astronaut.jpg"
RATE = 16000
CHUNK_S = 0.02


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def voiced(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like float32: a buzz whose pitch glides, in syllables of 0.15-0.3 s with short gaps."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = 170 + 50 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    buzz = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.zeros(n)
    i = 0
    while i < n:
        length = int(rng.uniform(0.15, 0.3) * RATE)
        seg = np.sin(np.linspace(0, np.pi, min(length, n - i))) ** 0.5
        env[i : i + len(seg)] = seg
        i += length + int(rng.uniform(0.02, 0.08) * RATE)
    return (0.25 * buzz * env / np.max(np.abs(buzz))).astype(np.float32)


def pusher(session, speech: np.ndarray, started: threading.Event) -> threading.Thread:
    """Feed ``speech`` in 20 ms chunks at real-time pace on a thread."""

    def run() -> None:
        step = int(CHUNK_S * RATE)
        t0 = time.monotonic()
        for k, i in enumerate(range(0, len(speech), step)):
            delay = t0 + k * CHUNK_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if session.closed:
                return
            session.push(speech[i : i + step], RATE)
            started.set()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def latency(engine, src: dict, n_sessions: int, max_side: int) -> dict:
    out = []
    followed = 0
    for k in range(n_sessions):
        with engine.live(**src, max_side=max_side, motion=0) as s:
            rest = None
            for f in s:  # idle past the first second's measurement
                rest = f.image
                if f.pts >= 1.2:
                    break
            started = threading.Event()
            th = pusher(s, voiced(1.5, seed=k), started)
            for f in s:
                if f.speaking:
                    out.append(s.stats.first_speech["frame"] - s.stats.first_speech["push"])
                    if "video" in src:  # the video moves by itself: compare with this frame's own picture
                        rest = s._face.render(round(f.pts * s.fps), None)
                    followed += int(np.abs(f.image.astype(int) - rest.astype(int)).max() > 0)
                    break
            s.close()
            th.join()
    ms = 1000 * np.array(out)
    return {
        "sessions": len(out),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
        "mouth_moved": f"{followed}/{len(out)}",
        "mode": s.mode.reason or f"step {s.mode.step}, {s.mode.width}x{s.mode.height}",
        "load": load(),
    }


def sustained(engine, src: dict, seconds: float, max_side: int) -> dict:
    speech = voiced(seconds, seed=99)
    lates, offsets = [], []
    sent = 0
    with engine.live(**src, max_side=max_side) as s:
        t_first = None
        started = threading.Event()
        th = None
        speaking_frames = 0
        for f in s:
            now = time.monotonic()
            if t_first is None:
                t_first = now
            lates.append(now - (t_first + f.pts))
            offsets.append(sent / f.sample_rate - f.pts)
            sent += len(f.audio)
            speaking_frames += f.speaking
            if th is None and f.pts >= 1.2:
                th = pusher(s, speech, started)
            if th is not None and not th.is_alive() and not f.speaking and s.queued_s == 0 and speaking_frames:
                break
        stats, mode = s.stats, s.mode
    th.join()
    slot = 1 / 25
    lates = np.array(lates)
    return {
        "frames": len(lates),
        "speaking_frames": speaking_frames,
        "on_time_pct": round(100 * float(np.mean(lates <= slot)), 2),
        "latest_slots": round(float(lates.max() / slot), 2),
        "repeated_pct": round(100 * stats.repeated_frames / max(1, stats.frames), 2),
        "underruns": stats.underruns,
        "utterances": stats.utterances,
        "av_offset_ms": round(1000 * float(np.max(np.abs(offsets))), 2),
        "frame_ms": round(stats.frame_ms, 1),
        "mode": mode.reason or f"step {mode.step}, {mode.width}x{mode.height}",
        "load": load(),
    }


def batched_rate(engine, image, max_side: int, frames: int = 96) -> float:
    """The network's frames per second in batches of 8 on one still face (bench.py's ``--quick`` rate, in this process)."""
    from lipsync.face import face_crop
    from lipsync.live.audio import SEGMENT, mel_window

    with engine.live(image=image, max_side=max_side, motion=0) as s:
        crop = face_crop(s._face.blender.image, s._face.blender.box)
    mels = np.repeat(mel_window(voiced(SEGMENT / RATE, seed=5))[None], frames, axis=0)
    gen = engine.generator
    for _ in gen.predict(crop, mels[:16], batch_size=8):  # warm
        pass
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in gen.predict(crop, mels, batch_size=8):
            pass
        rates.append(frames / (time.perf_counter() - t))
    return round(float(np.median(rates)), 1)


def _package_beside(video: Path, tmp: Path, sessions: list, threads: list) -> dict:
    """Package ``video`` for HLS while the sessions run: how long it took, and the sessions' frames
    handed out meanwhile and how many of them late (their own counters, read before and after)."""
    from lipsync.media.hls import package_hls

    def counts() -> tuple[int, int]:
        open_ = [s for s in sessions if s is not None]
        return sum(s.stats.frames for s in open_), sum(s.stats.late_frames for s in open_)

    frames, late = counts()
    t = time.monotonic()
    package_hls(video, tmp / "hls", zip_path=tmp / "hls.zip")
    wall = time.monotonic() - t
    frames2, late2 = counts()
    return {"wall_s": round(wall, 2), "session_frames": frames2 - frames, "late_frames": late2 - late,
            # the sessions must outlast the package for the count to mean anything (--sustained)
            "sessions_still_open": sum(th.is_alive() for th in threads)}


def at_once(engine, src: dict, n: int, seconds: float, max_side: int, clip_s: float, image, hls: bool = False) -> dict:
    """``n`` sessions on threads of one engine, each fed its own speech at real-time pace for
    ``seconds``, and (``clip_s`` > 0) a clip of ``clip_s`` seconds rendered on the same engine
    meanwhile, started once the sessions speak; with ``hls``, the clip is then packaged for
    HLS with its zip, as the Generate tab does. Per session: frames on time, repeated
    pictures, the step and size it ended at, and the first speaking frame's latency."""
    import soundfile as sf

    rate = batched_rate(engine, image, max_side)
    results: list[dict] = [{} for _ in range(n)]
    speaking = threading.Semaphore(0)  # one release per session that started speaking (never waited on by it)
    # made before the sessions start: computing 20 s of it on a session's thread delays that session's frames
    speech = [voiced(seconds, seed=k) for k in range(n)]
    sessions: list = [None] * n

    def one(k: int) -> None:
        with engine.live(**src, max_side=max_side, seed=k + 1) as s:
            sessions[k] = s
            th = None
            spoke = 0
            for f in s:
                spoke += f.speaking
                if th is None and f.pts >= 1.2:
                    th = pusher(s, speech[k], threading.Event())
                    speaking.release()
                if th is not None and not th.is_alive() and not f.speaking and s.queued_s == 0 and spoke:
                    break
            st, mode = s.stats, s.mode
        th.join()
        results[k] = {  # on time: handed out within one slot of its time (the session's own count)
            "frames": st.frames, "on_time_pct": round(100 * (1 - st.late_frames / max(1, st.frames)), 2),
            "repeated_pct": round(100 * st.repeated_frames / max(1, st.frames), 2),
            "held_pct": round(100 * st.held_frames / max(1, st.frames), 2),
            "latest_slots": round(st.max_late_s * 25, 2), "step": mode.step, "size": f"{mode.width}x{mode.height}", "reason": mode.reason[:60],
            "first_speech_ms": round(1000 * (st.first_speech["frame"] - st.first_speech["push"]), 1),
        }

    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as tmp:
        wav = Path(tmp) / "clip.wav"
        if clip_s > 0:
            sf.write(wav, voiced(clip_s, seed=42), RATE)
        threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(n)]
        for th in threads:
            th.start()
            time.sleep(0.013)  # sessions start at scattered phases, as visitors do
        clip = {}
        for _ in range(n):  # the clip starts once every session speaks
            speaking.acquire(timeout=60)
        if clip_s > 0:
            t = time.monotonic()
            r = engine.generate(image, audio=wav, out=Path(tmp) / "clip.mp4")
            clip = {"clip_s": clip_s, "wall_s": round(time.monotonic() - t, 2), "frames": r.frames}
            if hls:
                clip["hls"] = _package_beside(r.video, Path(tmp), sessions, threads)
    for th in threads:
        th.join()
    first = [r["first_speech_ms"] for r in results]
    sched = engine.generator.scheduler.stats
    return {
        "sessions": n, "batched_fps": rate, "capacity_0_75": round(0.75 * rate / 25, 2),
        "per_session": results,
        "min_on_time_pct": min(r["on_time_pct"] for r in results),
        "max_repeated_pct": max(r["repeated_pct"] for r in results),
        "max_held_pct": max(r["held_pct"] for r in results),
        "steps": [r["step"] for r in results], "first_speech_p50_ms": round(float(np.median(first)), 1),
        "clip": clip, "batches": dict(sorted(sched.batch_sizes.items())), "load": load(),
        # a session that gave way and got its full rate back ends at step 1: these say it happened
        "gave_way": sched.shed, "restored": sched.restored,
        "admits_after": _admits(engine),
    }


def _admits(engine) -> dict:
    """What admission (``LIPSYNC_LIVE_SESSIONS=auto``) says after the run: the limit and how it was found. A run
    that served under 10 s of network time has no figure of its own: the rate is then measured now, as the web
    app does when it loads, and the sessions' picture work seen in the run is counted as it would be."""
    cap = engine.generator.scheduler.capacity(25.0)
    if cap is not None:
        return {"sessions": cap.sessions, "how": cap.source}
    cap = engine.generator.measure_capacity(25.0)
    return {"sessions": cap.sessions, "how": f"{cap.source}: under 10 s served, so the rate was measured after the run"}


def frame_cost(engine, image, n: int, max_side: int) -> dict:
    """One frame's parts, unpaced, median ms over ``n`` runs: what the frame path spends where.

    mel window, network, the plain paste, the paste with the ``fast`` enhancement, one
    blink's eyelids (fully shut: the dearest case), the head warp; then the extra a
    speaking frame pays for the enhancement and a blinking frame for the eyelids.
    """
    from lipsync.blend import Blender
    from lipsync.face import face_crop
    from lipsync.live.audio import SEGMENT, mel_window

    def med(fn) -> float:
        fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return round(1000 * float(np.median(ts)), 2)

    with engine.live(image=image, max_side=max_side, motion=0.5) as s:
        face = s._face
        segment = voiced(SEGMENT / RATE, seed=3)
        mel = mel_window(segment)[None]
        mouth = face.generator.forward(face.face, mel)[0]
        plain = Blender(face.blender.image, face.blender.box)
        box = face.blender.box
        out = {"size": f"{face.width}x{face.height}", "face": f"{box.width}x{box.height}", "mel_ms": med(lambda: mel_window(segment))}
        out["network_ms"] = med(lambda: face.generator.forward(face.face, mel))
        crop = face_crop(face.blender.image, box)  # a video frame's face: encoded for its one forward
        out["network_video_frame_ms"] = med(lambda: face.generator.forward(face.generator.prepare_face(crop, still=False), mel))
        out["video_frame_vs_photo"] = round(out["network_video_frame_ms"] / out["network_ms"], 2)
        out["paste_ms"] = med(lambda: plain.paste(mouth))
        if face.enhance is not None:
            face.enhance.strength = 1.0
            out["paste_enhanced_ms"] = med(lambda: face.blender.paste(mouth))
            out["enhance_extra_ms"] = round(out["paste_enhanced_ms"] - out["paste_ms"], 2)
        frame = plain.paste(mouth)
        if face.blinks is not None:
            out["blink_shut_ms"] = med(lambda: face.blinks.close(frame.copy(), 1.0))
            out["copy_ms"] = med(lambda: frame.copy())
        if face.warp is not None:
            out["warp_ms"] = med(lambda: face.warp.apply(frame.copy(), 1.0, 2.0, 2.0))
        out["rest_frame_ms"] = med(lambda: face.render(0, face.rest, (1.0, 2.0, 2.0)))
        out["enhance"], out["blink"] = s.mode.enhance, s.mode.blink
    out["load"] = load()
    return out


def resources() -> dict:
    import psutil

    p = psutil.Process()
    return {
        "rss_mb": p.memory_info().rss / 2**20,
        "fds": p.num_fds(),
        "threads": threading.active_count(),
        "os_threads": p.num_threads(),
        "children": len(p.children(recursive=True)),
    }


def growth(cycles: int, first: dict, last: dict, **extra) -> dict:
    """The resources after the first cycle and after the last, and how much RSS grew between."""
    return {
        "cycles": cycles,
        "after_first": {k: round(v, 1) for k, v in first.items()},
        "after_last": {k: round(v, 1) for k, v in last.items()},
        "rss_growth_pct": round(100 * (last["rss_mb"] / first["rss_mb"] - 1), 2),
        **extra,
        "load": load(),
    }


def memory(engine, src: dict, cycles: int, max_side: int) -> dict:
    first = None
    for k in range(cycles):
        with engine.live(**src, max_side=max_side, motion=0.5) as s:
            s.push(voiced(0.4, seed=k), RATE)
            for f in s:
                if f.pts >= 0.6:
                    break
        if k == 0:
            first = resources()
    return growth(cycles, first, resources())


def web_cycles(engine, image, cycles: int) -> dict:
    """Connect and disconnect a WebRTC client (aiortc, in process, real RTP on loopback) ``cycles`` times."""
    import asyncio

    import httpx
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from fastapi import FastAPI

    from lipsync.live.web import install

    app = FastAPI()
    server = install(app, lambda: engine, image=image)

    async def one(client) -> None:
        pc = RTCPeerConnection()
        frames = []

        @pc.on("track")
        def on_track(track):
            async def pull():
                from aiortc.mediastreams import MediaStreamError

                with contextlib.suppress(MediaStreamError):  # the track ends when the peer closes
                    while True:
                        frames.append(await track.recv())

            asyncio.ensure_future(pull())

        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        r = await client.post("/live/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"})
        answer = r.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        for _ in range(200):
            if len(frames) >= 10:
                break
            await asyncio.sleep(0.05)
        await client.delete(f"/live/{answer['id']}")
        await pc.close()

    trace = []

    async def run() -> dict:
        first = None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://live") as client:
            for k in range(cycles):
                await one(client)
                await asyncio.sleep(0.2)
                if k == 0:
                    first = resources()
                if (k + 1) % 10 == 0:
                    trace.append(round(resources()["rss_mb"], 1))
        await server.close_all()
        await asyncio.sleep(0.5)
        return first

    first = asyncio.run(run())
    return growth(cycles, first, resources(), rss_mb_every_10=trace)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--image", type=Path, default=EXAMPLE)
    ap.add_argument("--video", help="a driving video instead of the photo (a path, or 'film': benchmarks/film.py's clip)")
    ap.add_argument("--precisions", default="int8,bf16,fp32")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--sustained", type=float, default=60.0)
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--web-cycles", type=int, default=30, help="WebRTC connect/disconnect cycles (needs aiortc)")
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--frame-cost", type=int, default=200, help="runs per part of one frame's cost (0: skip)")
    ap.add_argument("--malloc-arenas", type=int, default=2,
                    help="glibc malloc arenas, as the web app's server sets them (0: glibc's default)")
    ap.add_argument("--at-once", type=int, default=0, metavar="N",
                    help="N sessions at once on one engine, with a clip rendered beside them (0: skip)")
    ap.add_argument("--clip-s", type=float, default=6.0, help="the clip beside --at-once sessions, in seconds (0: none)")
    ap.add_argument("--clip-hls", action="store_true",
                    help="then package the clip for HLS with its zip, as the Generate tab does, while the sessions "
                         "run (give --sustained enough seconds for both)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.malloc_arenas > 0:  # before any thread starts, as lipsync.webapp.server does
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").mallopt(-8, args.malloc_arenas)  # M_ARENA_MAX
        except (OSError, AttributeError):
            pass

    from lipsync import LipSync
    from lipsync.face import HaarDetector

    ckpt = args.checkpoint
    tmp = None
    if ckpt is None:
        from lipsync.models.scratch import write_scratch_checkpoint

        tmp = tempfile.TemporaryDirectory(prefix="lipsync-bench-")
        ckpt = write_scratch_checkpoint(Path(tmp.name) / "scratch.pth", 1234)
    src = {"image": args.image}
    if args.video:
        if tmp is None:
            tmp = tempfile.TemporaryDirectory(prefix="lipsync-bench-")
        if args.video == "film":
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from film import write_film

            src = {"video": write_film(Path(tmp.name) / "film.mp4")}
        else:
            src = {"video": Path(args.video)}
    print(f"cpus: {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))}); load {load()}; "
          f"face from {next(iter(src.values())).name}", flush=True)
    results = {}
    for precision in args.precisions.split(","):
        t = time.monotonic()
        # the photo: the Haar cascade (quick, enough for a clear portrait); a video: the library's own
        # detector (S3FD where its weights are, else MTCNN), which follows a face through a dim clip
        engine = LipSync(ckpt, device="cpu", precision=precision,
                         detector=HaarDetector() if "image" in src else None).load()
        r = {"device": engine.generator.description, "load_s": round(time.monotonic() - t, 1)}
        print(f"\n== {precision}: {r['device']} (loaded in {r['load_s']} s; load {load()})", flush=True)
        if args.frame_cost:
            r["frame_cost"] = frame_cost(engine, args.image, args.frame_cost, args.max_side)
            print("frame    ", r["frame_cost"], flush=True)
        if args.at_once:
            r["at_once"] = at_once(engine, src, args.at_once, args.sustained, args.max_side, args.clip_s, args.image,
                                 hls=args.clip_hls)
            print("at once  ", json.dumps(r["at_once"]), flush=True)
        if args.sessions:
            r["latency"] = latency(engine, src, args.sessions, args.max_side)
            print("latency  ", r["latency"], flush=True)
        if args.sustained:
            r["sustained"] = sustained(engine, src, args.sustained, args.max_side)
            print("sustained", r["sustained"], flush=True)
        if args.cycles:
            r["memory"] = memory(engine, src, args.cycles, args.max_side)
            print("memory   ", r["memory"], flush=True)
        if args.web_cycles:
            r["webrtc"] = web_cycles(engine, args.image, args.web_cycles)
            print("webrtc   ", r["webrtc"], flush=True)
        results[precision] = r
    print(f"\nload average at the end: {load()} (the machine is shared; see the README's note)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
