"""How soon does a video start playing? The live preview, measured two ways.

1. The library (one process, the engine loaded once): for each text, a plain
   ``run`` and a streaming ``stream`` of the same request, alternated and
   repeated; it prints the time to the first finished segment, the total, and
   the streaming/plain ratios (the cost of making segments) of the wall time
   and of the CPU time (this process and its ffmpeg/espeak-ng children: on a
   busy machine the CPU time is the steadier measure). It also prints what the
   keyframe every second costs in file size: the plain MP4's frames encoded
   again with x264's default keyframe interval and with the one used now.
   Last, the writer alone (no network: 20 s of the portrait's frames): the
   CPU time of ffmpeg writing the MP4, and writing the MP4 and the segments.

2. The real app in Chromium (``--app``): ``python app.py`` is started with the
   model loaded in the background; the page is driven as a person would (photo,
   text, espeak-ng voice, consent, Generate). It prints click -> first playing
   frame of the preview (its ``currentTime`` moving), the longest stall of the
   preview after it started, and click -> the final MP4 playable in the page.
   With ``--trace`` the app runs under ``benchmarks/preview_trace.py`` and each
   run prints its timeline to the first frame: the handler's stages and
   segments, Gradio's turn of each segment into a stream chunk (ffprobe, audio
   decode, mux) and the browser's own fetches of the playlist and segments.

    python benchmarks/preview.py                 # library, 10 s and 30 s texts, frame step 1 and 2
    python benchmarks/preview.py --app           # plus the app in Chromium (10 s, 20 s and 30 s texts)
    python benchmarks/preview.py --app --only-app --texts 20 --frame-step 2
    python benchmarks/preview.py --only-app --texts 10 20 --frame-step 2 --trace   # where the first frame's time goes

Weights: ``--checkpoint`` (default ``$LIPSYNC_CHECKPOINT``, else the scratch
seed-1234 checkpoint made on the fly: the network's cost is the same as the real
one's, only its mouths are noise). The voice is ``espeak:en-us`` so that any
machine can run it offline. Report ``uptime`` beside the numbers: the machine's
load changes them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXAMPLE = ROOT / "assets" / "astronaut.jpg"
VOICE = "espeak:en-us"
ESPEAK_LABEL = "espeak-ng formant (robotic), English, male, American accent"
#: sentences of a narration; a text of N seconds takes the first ones (espeak-ng says about 2.5 words/s)
SENTENCES = [
    "Good morning from the space station.",
    "Today we tested a new camera and watched the sunrise over the ocean.",
    "Then we cooked noodles for the whole crew and talked to a school in Ohio.",
    "Tomorrow we repair the solar panel on the left wing.",
    "It takes about six hours, so we start very early.",
    "After that we will check the water system and send the samples home.",
    "The view of the clouds tonight was the best of the whole mission.",
    "We could see lightning over Africa and the lights of many cities.",
    "Every ninety minutes the sun rises again, and we never get tired of it.",
    "Our doctor says we all sleep well, which is good news for everyone.",
    "Next week a cargo ship brings fresh fruit, letters and new experiments.",
    "Thank you for listening, and good night from orbit.",
]


def text_for(seconds: float) -> str:
    """About ``seconds`` of espeak-ng speech (2.5 words a second, with the pauses)."""
    words, out = 0, []
    for s in SENTENCES * 4:
        if words >= seconds * 2.5:
            break
        out.append(s)
        words += len(s.split())
    return " ".join(out)


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ----------------------------------------------------------------------------- the library


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (ffmpeg, espeak-ng), user + system."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def keyframe_cost(mp4: Path, fps: float) -> tuple[int, int]:
    """(bytes with x264's default keyframes, bytes with a keyframe every second): the MP4's frames encoded again."""
    from lipsync.media.encode import keyframe_interval

    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for extra in ([], ["-g", str(keyframe_interval(fps)), "-keyint_min", str(keyframe_interval(fps)),
                           "-sc_threshold", "0"]):
            out = Path(tmp) / "v.mp4"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mp4), "-an", "-c:v", "libx264", "-preset",
                            "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", *extra, str(out)], check=True)
            sizes.append(out.stat().st_size)
    return sizes[0], sizes[1]


def bench_writer(repeats: int) -> dict:
    """CPU seconds of the writer alone (this process, ffmpeg): MP4 only vs MP4 + segments, 500 frames."""
    import numpy as np

    from lipsync.media.encode import VideoWriter, keyframe_interval, write_wav
    from lipsync.media.images import load_image
    from lipsync.media.segments import SegmentOutput

    img = load_image(EXAMPLE)
    frames = [img.copy() for _ in range(8)]
    for k, f in enumerate(frames):  # a mouth that moves: something for the encoder to do
        f[300:340, 200:300] = k * 30
    out: dict[str, list[float]] = {"plain": [], "segments": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wav = write_wav(tmp / "a.wav", 0.3 * np.sin(np.linspace(0, 90000, 20 * 22050)), 22050)
        for rep in range(repeats):
            for mode in out:
                segs = None
                if mode == "segments":
                    segs = SegmentOutput(tmp / f"s{rep}", lambda s: None, fps=25, gop=keyframe_interval(25))
                c0 = cpu_seconds()
                with VideoWriter(tmp / "o.mp4", img.shape[1], img.shape[0], 25, wav, segments=segs) as w:
                    for i in range(500):
                        w.write(frames[(i // 3) % 8])
                out[mode].append(cpu_seconds() - c0)
    plain, segs = statistics.median(out["plain"]), statistics.median(out["segments"])
    return {"frames": 500, "plain_cpu_s": plain, "segments_cpu_s": segs, "ratio": segs / plain}


def bench_library(checkpoint: Path, texts: list[float], steps: list[int], repeats: int) -> list[dict]:
    from lipsync import GenerateOptions, LipSync, Request
    from lipsync.face import HaarDetector

    engine = LipSync(checkpoint, device="cpu", detector=HaarDetector()).load()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as tmp:
        tmp = Path(tmp)
        for seconds in texts:
            text = text_for(seconds)
            for step in steps:
                opts = GenerateOptions(voice=VOICE, frame_step=step, captions=True)
                plain, streamed, first, cpu_plain, cpu_stream = [], [], [], [], []
                # warm-up: TTS, caches, the allocator
                engine.run(Request(EXAMPLE, tmp / "warm.mp4", text=text, options=opts))
                for _ in range(repeats):
                    for mode in ("plain", "stream"):  # alternated, so drifting load hits both alike
                        req = Request(EXAMPLE, tmp / f"{mode}.mp4", text=text, options=opts)
                        c0, t0 = cpu_seconds(), time.perf_counter()
                        if mode == "plain":
                            r = engine.run(req)
                            plain.append(time.perf_counter() - t0)
                            cpu_plain.append(cpu_seconds() - c0)
                        else:
                            s = engine.stream(req)
                            for i, _seg in enumerate(s):
                                if i == 0:
                                    first.append(time.perf_counter() - t0)
                            r = s.result
                            streamed.append(time.perf_counter() - t0)
                            cpu_stream.append(cpu_seconds() - c0)
                default_kb, now_kb = keyframe_cost(tmp / "plain.mp4", r.fps)
                rows.append(
                    dict(
                        text_s=seconds, video_s=round(r.duration_s, 2), step=step,
                        plain_s=statistics.median(plain), stream_s=statistics.median(streamed),
                        first_segment_s=statistics.median(first),
                        ratio=statistics.median(streamed) / statistics.median(plain),
                        cpu_plain_s=statistics.median(cpu_plain), cpu_stream_s=statistics.median(cpu_stream),
                        cpu_ratio=statistics.median(cpu_stream) / statistics.median(cpu_plain),
                        mp4_kb=round(r.video.stat().st_size / 1024),
                        video_kb_default_gop=round(default_kb / 1024), video_kb_1s_gop=round(now_kb / 1024),
                    )
                )
    return rows


# ----------------------------------------------------------------------------- the app in Chromium

MONITOR_JS = """
() => {
  window.__samples = [];
  window.__t0 = performance.now();
  window.__cleared = false;  // the page clears the last run's videos first; samples count from then on
  const tick = () => {
    const p = document.querySelector('#preview video');
    const v = document.querySelector('#video video');
    if (!window.__cleared && document.querySelector('#summary').innerText.includes('Generating')) { window.__cleared = true; }
    if (!window.__cleared) { return; }
    window.__samples.push([
      performance.now() - window.__t0,
      p ? p.currentTime : -1, p ? (p.paused ? 1 : 0) : -1, p ? (p.ended ? 1 : 0) : -1,
      p ? p.readyState : -1,
      v && (v.currentSrc || v.src) && (v.readyState >= 2 || (v.duration > 0 && isFinite(v.duration))) ? 1 : 0,
    ]);
  };
  window.__timer = setInterval(tick, 50);
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(checkpoint: Path, tmp: Path, trace: Path | None = None):
    port = free_port()
    env = dict(os.environ, LIPSYNC_CHECKPOINT=str(checkpoint), HF_HUB_OFFLINE="1", LIPSYNC_DEVICE="cpu",
               GRADIO_ANALYTICS_ENABLED="False", TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
    entry = ROOT / "app.py"
    if trace is not None:  # the same app, with its timeline written to `trace`
        entry, env["LIPSYNC_TRACE"] = ROOT / "benchmarks" / "preview_trace.py", str(trace)
    log = open(tmp / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, str(entry), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError as e:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("app.py did not start:\n" + (tmp / "app.log").read_text(errors="replace")[-3000:]) from e
                time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def analyse(samples: list[list[float]]) -> dict:
    """First playing frame, longest stall while playing, final MP4 ready (seconds after the click)."""
    first = next((t for t, ct, paused, ended, rs, final in samples if ct > 0 and paused == 0), None)
    final = next((s[0] for s in samples if s[5] == 1), None)
    stall, longest, last_ct, since = 0.0, 0.0, None, None
    for t, ct, paused, ended, rs, _final in samples:
        if first is None or t < first or ended == 1:
            continue
        if paused == 1 and ct <= 0:
            continue
        if last_ct is not None and abs(ct - last_ct) < 1e-6 and paused == 0:
            since = since if since is not None else t
            longest = max(longest, t - since)
        else:
            since = None
        last_ct = ct
    del stall
    return {"first_frame_s": None if first is None else first / 1000, "final_mp4_s": None if final is None else final / 1000,
            "longest_stall_s": longest / 1000}


#: the browser's own record of the preview's fetches: the playlist and its segments, ms from the click
RESOURCES_JS = """() => performance.getEntriesByType('resource')
  .filter(e => /playlist\\.m3u8|\\.ts(\\?|$)/.test(e.name) && e.startTime >= window.__t0)
  .map(e => [e.name.includes('playlist') ? 'playlist' : 'segment', e.startTime - window.__t0, e.responseEnd - window.__t0])"""


def timeline(trace: list[list], click_unix: float, browser: list[list], first_frame_s: float | None) -> list[str]:
    """The server's events and the browser's fetches, in seconds after the click, up to the first frame + 1 s."""
    until = (first_frame_s or 3.0) + 1.0
    rows = [(t - click_unix, f"server   {what}") for t, what in trace if -0.5 <= t - click_unix <= until]
    seen = 0
    for kind, start, end in browser:
        if kind == "segment":
            seen += 1
        if start / 1000 <= until:
            rows.append((start / 1000, f"browser  {kind}{f' {seen}' if kind == 'segment' else ''} fetched "
                                       f"(done {end / 1000:.3f})"))
    if first_frame_s is not None:
        rows.append((first_frame_s, "browser  first playing frame"))
    return [f"  {t:7.3f}  {what}" for t, what in sorted(rows)]


def bench_app(checkpoint: Path, texts: list[float], step: int, trace: bool = False) -> list[dict]:
    from playwright.sync_api import sync_playwright

    rows = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="lipsync-bench-app-"))
        trace_file = Path(tmp) / "trace.jsonl" if trace else None
        url = stack.enter_context(app_server(checkpoint, Path(tmp), trace_file))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#generate", timeout=60_000)
            page.wait_for_function("() => document.querySelector('#model-status').innerText.toLowerCase().includes('ready')",
                                   timeout=120_000)
            page.locator("#portrait input[type=file]").set_input_files(str(EXAMPLE))
            page.wait_for_selector("#faces img", timeout=60_000)
            page.locator("#voice input").click()
            page.get_by_role("option", name=ESPEAK_LABEL, exact=True).click()
            page.locator("#consent input[type=checkbox]").check()
            page.get_by_text("Advanced", exact=True).click()  # the speed setting is in there
            page.locator("#speed input[type=radio]").nth(step - 1).check()
            for seconds in texts:
                page.locator("#text textarea").fill(text_for(seconds))
                page.evaluate(MONITOR_JS)
                click_unix = page.evaluate("() => (performance.timeOrigin + window.__t0) / 1000")
                page.locator("#generate").click()
                page.wait_for_function("() => window.__samples.some(s => s[5] === 1)", timeout=600_000, polling=200)
                time.sleep(0.5)
                samples = page.evaluate("() => { clearInterval(window.__timer); return window.__samples; }")
                duration = page.wait_for_function(
                    "() => { const v = document.querySelector('#video video'); return v && v.duration > 0 && v.duration; }",
                    timeout=60_000,
                ).json_value()
                row = analyse(samples)
                row.update(text_s=seconds, video_s=round(duration, 2), step=step)
                if trace_file is not None:
                    events = [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]
                    row["timeline"] = timeline(events, click_unix, page.evaluate(RESOURCES_JS), row["first_frame_s"])
                rows.append(row)
                page.wait_for_timeout(1000)
            browser.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=os.environ.get("LIPSYNC_CHECKPOINT"))
    ap.add_argument("--texts", type=float, nargs="+", default=None, help="text lengths in seconds")
    ap.add_argument("--frame-step", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3, help="library: runs of each mode")
    ap.add_argument("--app", action="store_true", help="also drive the app in Chromium")
    ap.add_argument("--only-app", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trace", action="store_true",
                    help="with --app: where the time to the first frame goes (the server's events, the browser's fetches)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lipsync-ckpt-") as ck:
        checkpoint = a.checkpoint
        if checkpoint is None:
            from lipsync.models.scratch import write_scratch_checkpoint

            checkpoint = write_scratch_checkpoint(Path(ck) / "scratch.pth", 1234)
        out: dict = {"cpus": os.cpu_count(), "load_before": load_avg()}
        if not a.only_app:
            out["library"] = bench_library(Path(checkpoint), a.texts or [10, 30], a.frame_step, a.repeats)
            out["writer"] = bench_writer(max(3, a.repeats))
        if a.app or a.only_app:
            out["app"] = []
            for step in a.frame_step:
                out["app"] += bench_app(Path(checkpoint), a.texts or [10, 20, 30], step, trace=a.trace)
        out["load_after"] = load_avg()
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{out['cpus']} CPUs; load average before {out['load_before']}, after {out['load_after']}")
    if "library" in out:
        print("\nlibrary: plain run vs streaming run of the same request (median of the repeats)")
        print("  text  video step  plain s  stream s  first segment s  wall stream/plain  CPU s plain  CPU s stream"
              "  CPU stream/plain  MP4 kB  video kB, x264 default keyframes -> 1 s")
        for r in out["library"]:
            print(f"  {r['text_s']:>3g} s {r['video_s']:>6.2f} {r['step']:>4} {r['plain_s']:>8.2f} {r['stream_s']:>9.2f}"
                  f" {r['first_segment_s']:>16.2f} {r['ratio']:>18.3f} {r['cpu_plain_s']:>12.2f} {r['cpu_stream_s']:>13.2f}"
                  f" {r['cpu_ratio']:>17.3f} {r['mp4_kb']:>7}  {r['video_kb_default_gop']:>6} -> {r['video_kb_1s_gop']}")
    if "writer" in out:
        w = out["writer"]
        print(f"\nwriter alone, {w['frames']} frames of 512x512: CPU {w['plain_cpu_s']:.3f} s for the MP4, "
              f"{w['segments_cpu_s']:.3f} s for the MP4 + segments: ratio {w['ratio']:.3f}")
    if "app" in out:
        print("\napp in Chromium: seconds after the click (model loaded, espeak-ng, example portrait)")
        print("  text  video step  first playing frame  longest preview stall  final MP4 playable")
        for r in out["app"]:
            f = "-" if r["first_frame_s"] is None else f"{r['first_frame_s']:.2f}"
            m = "-" if r["final_mp4_s"] is None else f"{r['final_mp4_s']:.2f}"
            print(f"  {r['text_s']:>3g} s {r['video_s']:>6.2f} {r['step']:>4} {f:>20} {r['longest_stall_s']:>22.2f} {m:>18}")
        for r in out["app"]:
            if r.get("timeline"):
                print(f"\ntimeline, {r['text_s']:g} s text, frame step {r['step']} (seconds after the click):")
                print("\n".join(r["timeline"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
