#!/usr/bin/env python3
"""Speed of a driving video against a photo, end to end, in one process.

    python benchmarks/video_bench.py                 # 10 s of speech (a few minutes on 2 CPU cores)
    python benchmarks/video_bench.py --seconds 4     # quicker
    python benchmarks/video_bench.py --json
    python benchmarks/video_bench.py --film          # only the film-like clip: face stage vs lip-sync stage

Same engine, same checkpoint (the deterministic seed-1234 weights, or --checkpoint), same
soundtrack (a 180 Hz tone in 4 Hz syllables with a pause, so silence skipping is exercised),
same 512x512 frame size:

* photo, motion 0: the still output (the face encoder once per clip);
* photo, motion 0.5: the default, head motion warped into every frame;
* video: a 5 s, 512x512 H.264 clip of the example portrait panned and zoomed, looped
  back and forth to the speech (decode + spool + face tracking, the face encoder on every
  frame, each frame read back and pasted).

* film, following / film, every 0.2 s: a film-like clip (``benchmarks/film.py``: 720x528,
  146 frames at 23.976 fps, dark, two faces, a cut) with speech as long as the clip, run with
  the face followed between detections (today's tracker) and with the detector every 0.2 s
  (the previous tracker, as the baseline), on the offline detector (MTCNN) unless --haar.
  The face stage (decode, spool, tracking) is reported against the lip-sync stage.

For each: wall seconds, frames/s (output frames / wall), real-time factor (video s / wall s),
seconds per stage, and the peak resident memory while it ran (sampled every 10 ms). With
--long, the video case is run again with three times the speech, to show memory does not
grow with the clip's length. Model loading is done before timing. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv: list[str] | None = None) -> int:
    import cv2

    from bench import RssSampler
    from lipsync import GenerateOptions, LipSync, Speech
    from lipsync.face import HaarDetector
    from lipsync.media.encode import VideoWriter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="speech length (default 10)")
    p.add_argument("--clip", type=float, default=5.0, help="driving video length (default 5)")
    p.add_argument("--checkpoint", help="a Wav2Lip checkpoint (default: the deterministic scratch weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--long", action="store_true", help="also run the video case with 3x the speech")
    p.add_argument("--json", action="store_true")
    p.add_argument("--film", action="store_true", help="only the film-like clip, following vs every 0.2 s")
    p.add_argument("--haar", action="store_true", help="the film cases on the Haar cascade instead of MTCNN")
    a = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="lipsync-vbench-"))
    ckpt = a.checkpoint
    if ckpt is None:
        from lipsync.models.scratch import write_scratch_checkpoint

        ckpt = write_scratch_checkpoint(tmp / "scratch.pth", 1234)
    engine = LipSync(ckpt, device=a.device, detector=HaarDetector()).load()

    # the driving video: the example portrait panned and zoomed (512x512, 25 fps)
    img = np.ascontiguousarray(cv2.imread(str(ROOT / "assets" / "astronaut.jpg"))[:, :, ::-1])
    n_clip = int(a.clip * 25)
    clip = tmp / "clip.mp4"
    with VideoWriter(clip, 512, 512, 25, crf=18) as w:
        for i in range(n_clip):
            u = 0.5 - 0.5 * np.cos(2 * np.pi * i / n_clip)
            s, x0, y0 = 512 - 80 * u, 40 * u, 30 * u
            m = np.array([[512 / s, 0, -x0 * 512 / s], [0, 512 / s, -y0 * 512 / s]])
            w.write(cv2.warpAffine(img, m, (512, 512), flags=cv2.INTER_AREA))

    def speech(seconds: float) -> Speech:
        from videos import speechlike

        return Speech(speechlike(seconds, pauses=((0.45 * seconds, 0.45 * seconds + 0.8),)), 16000)

    cases = [
        ("photo, motion 0", dict(image=ROOT / "assets" / "astronaut.jpg", motion=0.0), a.seconds),
        ("photo, motion 0.5", dict(image=ROOT / "assets" / "astronaut.jpg", motion=0.5), a.seconds),
        ("video", dict(video=clip), a.seconds),
    ]
    if a.long:
        cases.append(("video, 3x longer", dict(video=clip), 3 * a.seconds))

    from film import N as FILM_N, FPS as FILM_FPS, write_film

    film = write_film(tmp / "film.mp4")
    film_s = FILM_N / FILM_FPS
    film_cases = [("film, every 0.2 s", dict(video=film, follow=False), film_s),
                  ("film, following", dict(video=film, follow=True), film_s)]
    cases = film_cases if a.film else cases + film_cases
    film_engine = engine
    if not a.haar:
        from lipsync.face import offline_detector

        film_engine = LipSync(ckpt, device=a.device, detector=offline_detector()).load()

    import lipsync.face.track as track

    real_tracker = track.FaceTracker

    rows = []
    for name, src, seconds in cases:
        opts = GenerateOptions(label=False, motion=src.get("motion", 0.5))
        eng = film_engine if "follow" in src else engine
        if src.get("follow") is False:  # the baseline: the previous tracker, detecting every 0.2 s
            track.FaceTracker = lambda *x, **k: real_tracker(*x, **{**k, "follow": False})
        t0 = time.perf_counter()
        try:
            with RssSampler() as rss:
                r = eng.generate(src.get("image"), speech(seconds), tmp / "out.mp4", opts, video=src.get("video"))
        finally:
            track.FaceTracker = real_tracker
        wall = time.perf_counter() - t0
        rows.append({
            "case": name, "frames": r.frames, "spoken": r.speaking_frames, "face_frames": r.face_frames,
            "wall_s": round(wall, 2), "fps": round(r.frames / wall, 1), "rtf": round(r.duration_s / wall, 2),
            "peak_rss_mb": round(rss.peak / 2**20), "timings": {k: round(v, 2) for k, v in r.timings.items()},
            "face_over_lipsync": round(r.timings.get("face", 0.0) / max(r.timings.get("lipsync", 1e-9), 1e-9), 3),
            "detector": r.detector,
        })

    load = os.getloadavg()
    info = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "device": engine.generator.description,
        "load_1_5_15": [round(x, 2) for x in load],
        "speech_s": a.seconds,
        "clip_s": a.clip,
    }
    if a.json:
        print(json.dumps({"info": info, "results": rows}))
        return 0
    print(f"device: {info['device']} on {info['cpus']} CPUs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if not a.film:
        print(f"speech {a.seconds:g} s, driving clip {a.clip:g} s (512x512), output 512x512 at 25 fps")
    print(f"film: {film_s:.1f} s of speech over the film-like clip (720x528), output at 25 fps\n")
    print(f"{'case':18s} {'frames':>6s} {'spoken':>6s} {'faces':>6s} {'wall s':>7s} {'fps':>6s} {'RTF':>5s} {'RSS MB':>7s} "
          f"{'face/lipsync':>12s}  stages (s)")
    for r in rows:
        stages = " ".join(f"{k}={v:.2f}" for k, v in r["timings"].items())
        print(f"{r['case']:18s} {r['frames']:6d} {r['spoken']:6d} {r['face_frames']:6d} {r['wall_s']:7.2f} "
              f"{r['fps']:6.1f} {r['rtf']:5.2f} {r['peak_rss_mb']:7d} {r['face_over_lipsync']:12.2f}  {stages}")
    by = {r["case"]: r for r in rows}
    old, new = by.get("film, every 0.2 s"), by.get("film, following")
    if old and new:
        print(f"\nfilm ({new['detector']}): face stage {old['timings']['face']:.2f} s -> {new['timings']['face']:.2f} s "
              f"({old['timings']['face'] / max(new['timings']['face'], 1e-9):.1f}x less); face / lip-sync "
              f"{old['face_over_lipsync']:.2f} -> {new['face_over_lipsync']:.2f} (target <= 0.30)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
