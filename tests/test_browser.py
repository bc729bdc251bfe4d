"""The app in a real browser: headless Chromium (Debian's, never a downloaded one).

Upload the example portrait (the face preview boxes it), type about 25 words (a
~10 s clip), pick the espeak-ng voice, tick consent, Generate: the live preview
must be playing (its currentTime advancing) before the video is finished; then
the MP4 must become playable in the page and the HLS zip must download, unzip,
and play in its own player.html served over HTTP, with its captions. Cancel
must stop a generation, leave no child process or temporary folder, and the
next request must work. Timings are printed and written to
/tmp/app_click_to_playable.txt; a screenshot of the page after generation goes
to /tmp/app_screenshot.png.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import psutil
import pytest

from conftest import EXAMPLE
from test_app import free_port, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
#: 30 words: about 10 seconds with espeak-ng at 160 words per minute and the pauses
TEXT = (
    "Good morning from the space station. Today we tested a new camera, "
    "watched the sunrise over the ocean, and cooked noodles for the whole crew. "
    "Tomorrow we repair the solar panel."
)
ESPEAK_LABEL = "espeak-ng formant (robotic), English, male, American accent"
SCREENSHOT = Path("/tmp/app_screenshot.png")
TIMING = Path("/tmp/app_click_to_playable.txt")
GENERATE_TIMEOUT_MS = 240_000

#: samples, every 50 ms from the click: [ms, preview currentTime, preview paused, final MP4 playable,
#: the preview's decoded audio bytes (Chromium's own counter)]
MONITOR_JS = """
() => {
  window.__samples = [];
  const t0 = performance.now();
  window.__timer = setInterval(() => {
    const p = document.querySelector('#preview video');
    const v = document.querySelector('#video video');
    const ready = !!v && !!(v.currentSrc || v.src) && (v.readyState >= 2 || (v.duration > 0 && isFinite(v.duration)));
    window.__samples.push([performance.now() - t0, p ? p.currentTime : -1, p ? (p.paused ? 1 : 0) : -1, ready ? 1 : 0,
                           p ? (p.webkitAudioDecodedByteCount || 0) : 0]);
  }, 50);
}
"""

PLAYABLE_JS = """
(sel) => {
  const v = document.querySelector(sel);
  return !!v && !!(v.currentSrc || v.src) && (v.readyState >= 2 || (v.duration > 0 && isFinite(v.duration)));
}
"""


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser tests need Debian's Chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def static_server(folder: Path):
    """``python -m http.server`` on a free 127.0.0.1 port, in its own process group."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "master.m3u8", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("python -m http.server did not start")
                time.sleep(0.1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def _fail_with_page(page, what: str, log_path: Path) -> None:
    with contextlib.suppress(Exception):
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    toasts = ""
    with contextlib.suppress(Exception):
        toasts = " | ".join(page.locator(".toast-body, [data-testid='toast-body']").all_inner_texts())
    pytest.fail(f"{what}; page messages: {toasts!r}; server log:\n{log_path.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def app_page(chromium, checkpoint, tmp_path_factory):
    """One app for the module, and a page with the portrait, the espeak-ng voice and consent set."""
    tmp = tmp_path_factory.mktemp("browser")
    info: dict = {}
    with running_app(checkpoint, tmp, info=info) as (url, log_path):
        page = chromium.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(url)
        page.wait_for_selector("#generate", timeout=60_000)
        # the model loads in the background as the app starts, and the page says when it is ready
        page.wait_for_function("() => document.querySelector('#model-status').innerText.includes('Ready:')",
                               timeout=120_000)
        page.locator("#portrait input[type=file]").set_input_files(str(EXAMPLE))
        page.wait_for_selector("#portrait img", timeout=30_000)
        # the face preview: the photo with the face boxed
        page.wait_for_selector("#faces img", timeout=60_000)
        assert "One face found" in page.locator("#faces-note").inner_text()
        page.locator("#voice input").click()
        page.get_by_role("option", name=ESPEAK_LABEL, exact=True).click()
        assert page.locator("#voice input").input_value() == ESPEAK_LABEL
        page.locator("#consent input[type=checkbox]").check()
        yield page, log_path, info["pid"], tmp
        page.close()


def test_preview_plays_while_the_video_is_made_then_mp4_zip_and_captions(app_page, tmp_path):
    page, log_path, _pid, _tmp = app_page
    page.locator("#text textarea").fill(TEXT)
    page.wait_for_function(
        "(n) => document.querySelector('#char-count').innerText.includes(n + ' / 1000')", arg=len(TEXT)
    )
    # generate: the preview starts before the video is finished
    page.evaluate(MONITOR_JS)
    t0 = time.perf_counter()
    page.locator("#generate").click()
    try:
        page.wait_for_function(PLAYABLE_JS, arg="#video video", timeout=GENERATE_TIMEOUT_MS, polling=100)
    except Exception:  # noqa: BLE001 - report what the page and server said
        _fail_with_page(page, "the video never became playable", log_path)
    elapsed = time.perf_counter() - t0
    samples = page.evaluate("() => { clearInterval(window.__timer); return window.__samples; }")
    before_final = [s for s in samples if s[3] == 0]
    playing = [s for s in before_final if s[1] > 0 and s[2] == 0]
    assert playing, "the preview did not play before the video was finished"
    assert max(s[1] for s in before_final) - playing[0][1] > 0.5, "the preview's time did not advance"
    first_frame = playing[0][0] / 1000
    assert max(s[4] for s in before_final) > 0, "the preview played without sound"
    stalls, since = [0.0], None  # playing, but its time stood still
    for a, b in zip(playing, playing[1:]):
        since = (since or a[0]) if b[1] == a[1] else None
        stalls.append(0.0 if since is None else (b[0] - since) / 1000)
    assert max(stalls) < 1.0, f"the preview stalled for {max(stalls):.2f} s"
    duration = page.evaluate("() => document.querySelector('#video video').duration")
    # the preview shows the captions
    page.wait_for_function(
        "() => [...document.querySelector('#preview video').textTracks].some(t => t.mode === 'showing')",
        timeout=10_000,
    )
    page.wait_for_selector("#hls-zip a", timeout=60_000)
    page.wait_for_selector("#captions-file a", timeout=10_000)
    summary = page.locator("#summary").inner_text()
    TIMING.write_text(
        f"click to first preview frame: {first_frame:.1f} s; click to playable MP4: {elapsed:.1f} s; "
        f"{duration:.1f} s clip ({len(TEXT.split())} words, espeak-ng, CPU, {os.cpu_count()} cores)\n{summary}\n"
    )
    print(f"\nclick to first preview frame: {first_frame:.1f} s; to playable MP4: {elapsed:.1f} s; {duration:.1f} s clip")
    assert duration > 5, "25 words should make several seconds of video"
    assert "espeak" in summary.lower() and "HLS renditions" in summary
    # the final video carries the captions too
    cues = page.evaluate(
        "() => { const t = [...document.querySelector('#video video').textTracks][0]; return t && t.cues ? t.cues.length : 0; }"
    )
    assert cues >= 3
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # the HLS zip downloads from the page
    with page.expect_download(timeout=60_000) as info:
        page.locator("#hls-zip a").first.click()
    zip_path = tmp_path / "hls.zip"
    info.value.save_as(zip_path)
    pkg = tmp_path / "hls"
    with zipfile.ZipFile(zip_path) as z:
        assert {"master.m3u8", "player.html", "subs/index.m3u8"} <= set(z.namelist())
        z.extractall(pkg)

    # ...and plays in its own player page, served over HTTP, captions on, with a toggle
    with static_server(pkg) as base:
        player = page.context.browser.new_page()
        errors: list[str] = []
        player.on("pageerror", lambda e: errors.append(str(e)))
        player.goto(base + "player.html")
        player.wait_for_function(
            "() => ['ready', 'playing', 'error'].includes(document.body.dataset.state)", timeout=30_000
        )
        state = player.evaluate("() => document.body.dataset.state")
        assert state != "error", player.locator("#status").inner_text()
        player.evaluate("() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }")
        player.wait_for_function(
            "() => { const v = document.querySelector('video'); return v.readyState >= 2 || v.currentTime > 0; }",
            timeout=30_000,
        )
        track_js = """() => { const t = [...document.querySelector('video').textTracks]
                          .find(t => t.kind === 'subtitles' || t.kind === 'captions');
                          return t ? {mode: t.mode, cues: t.cues ? [...t.cues].map(c => [c.startTime, c.endTime, c.text]) : []} : null; }"""
        player.wait_for_function(f"() => {{ const r = ({track_js})(); return r && r.cues.length >= 3; }}", timeout=30_000)
        track = player.evaluate(track_js)
        assert track["mode"] == "showing"
        assert track["cues"][0][2] == "Good morning from the space station."
        assert 0 < track["cues"][0][0] < 0.5 and all(0 <= c[0] < c[1] <= duration + 0.1 for c in track["cues"])
        toggle = player.locator("#captions")
        assert toggle.inner_text() == "Captions: on"
        toggle.click()
        assert player.evaluate(track_js)["mode"] != "showing" and toggle.inner_text() == "Captions: off"
        toggle.click()
        assert player.evaluate(track_js)["mode"] == "showing"
        assert not errors, errors
        player.close()


def test_cancel_stops_cleans_up_and_the_next_request_works(app_page):
    page, log_path, pid, tmp = app_page

    def children():
        return [c for c in psutil.Process(pid).children(recursive=True) if c.is_running() and c.status() != "zombie"]

    def temp_folders():
        return {p.name for p in tmp.iterdir() if p.name.startswith("lipsync")}

    # the voice sample plays in the page
    page.locator("#voice-sample-button").click()
    link = page.locator("#voice-sample a[download]")
    link.wait_for(timeout=60_000)
    sample = page.request.get(link.get_attribute("href"))
    assert sample.ok and sample.body()[:4] == b"RIFF" and len(sample.body()) > 20_000

    before = temp_folders()
    page.locator("#text textarea").fill(TEXT + " " + TEXT + " " + TEXT)  # ~30 s: still running when we cancel
    page.locator("#generate").click()
    # the page is cleared first (the previous preview goes), then the new preview plays
    page.wait_for_function("() => document.querySelector('#summary').innerText.includes('Generating')", timeout=60_000)
    page.wait_for_function("() => { const v = document.querySelector('#preview video'); return v && v.currentTime > 0.2; }",
                           timeout=GENERATE_TIMEOUT_MS)
    assert children(), "ffmpeg should be encoding"
    page.locator("#cancel").click()
    page.wait_for_function("() => document.querySelector('#summary').innerText.includes('Cancelled')", timeout=60_000)
    deadline = time.monotonic() + 10
    while children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not children(), [c.cmdline() for c in children()]
    def left():  # only the app's own small files may stay
        new = temp_folders() - before
        return new - {n for n in new if n.startswith("lipsync-app-files-")}

    # the request's folder goes once its last segment is served (the handler's clean-up runs on a thread
    # after the page has been told "Cancelled")
    deadline = time.monotonic() + 10
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left(), left()

    # the queue slot is free: a short request goes through
    page.locator("#text textarea").fill("Hello again, this is the next request.")
    page.locator("#generate").click()
    try:
        page.wait_for_function(
            "() => { const s = document.querySelector('#summary').innerText; return s.includes('HLS renditions'); }",
            timeout=GENERATE_TIMEOUT_MS,
        )
    except Exception:  # noqa: BLE001
        _fail_with_page(page, "the request after a cancel did not finish", log_path)
    duration = page.evaluate("() => document.querySelector('#video video').duration")
    assert 1 < duration < 6
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback") - 300 :][:4000]


def test_cancel_while_a_segment_is_being_served_keeps_it_until_served(chromium, engine, monkeypatch):
    """Cancel lands while the page's video is reading a preview segment, with the encoder still
    running (both held by events, not raced): the segment is still there to be read, the page
    shows a neutral notice (no Error toast, no Error badges), and the request's folder goes once
    the segment has been served."""
    import threading

    import lipsync.media.encode as encode
    from lipsync.webapp import build_demo, jobs, launch
    from lipsync.webapp.page import PAGE_JS, PreviewVideo

    serving, release = threading.Event(), threading.Event()
    served: list[tuple[str, str | None]] = []
    real_bytes = PreviewVideo.segment_bytes

    def held_bytes(path):
        if str(path).endswith("seg_00001.ts") and not serving.is_set():
            serving.set()  # the second segment is being read: hold it here until the test says
            release.wait(120)
        try:
            out = real_bytes(path)
        except BaseException as e:
            served.append((str(path), repr(e)))
            raise
        served.append((str(path), None))
        return out

    real_write = encode.VideoWriter.write

    def held_write(self, frame):
        if serving.is_set():
            release.wait(120)  # the encoder is still at work when Cancel is pressed
        return real_write(self, frame)

    monkeypatch.setattr(PreviewVideo, "segment_bytes", staticmethod(held_bytes))
    monkeypatch.setattr(encode.VideoWriter, "write", held_write)

    def ffmpegs():
        return [c for c in psutil.Process().children(recursive=True) if "ffmpeg" in c.name() and c.status() != "zombie"]

    demo = build_demo(engine)
    port = free_port()
    launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, js=PAGE_JS)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#generate", timeout=60_000)
        page.locator("#portrait input[type=file]").set_input_files(str(EXAMPLE))
        page.wait_for_selector("#faces img", timeout=60_000)
        page.locator("#consent input[type=checkbox]").check()
        page.locator("#text textarea").fill(TEXT)
        page.locator("#generate").click()
        assert serving.wait(GENERATE_TIMEOUT_MS / 1000), "no second segment was served"
        (job,) = jobs.running_jobs()
        segment = job.workdir / "preview" / "seg_00001.ts"
        assert segment.is_file() and ffmpegs(), "the encoder should still be running"
        reqs = []
        page.on("request", lambda r: reqs.append(r.url))
        page.locator("#cancel").click()
        deadline = time.monotonic() + 30
        while not job.cancel.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.cancel.is_set(), reqs
        time.sleep(0.5)  # let a clean-up that does not wait for Gradio run (the defect: it removed the folder)
        assert segment.is_file(), "the segment went while Gradio was still serving it"
        release.set()
        page.wait_for_function("() => document.querySelector('#summary').innerText.includes('Cancelled')",
                               timeout=60_000)
        assert job.finished.wait(30) and not job.workdir.exists()
        assert (str(segment), None) in served, served
        assert all(err is None for _, err in served), served
        toasts = " | ".join(page.locator(".toast-body, [data-testid='toast-body']").all_inner_texts())
        assert "Cancelled" in toasts and "Error" not in toasts, toasts
        for elem in ("preview", "video", "hls-zip", "captions-file", "summary"):
            assert "Error" not in page.locator(f"#{elem}").inner_text(), elem
        deadline = time.monotonic() + 10
        while ffmpegs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not ffmpegs()
    finally:
        release.set()
        page.close()
        demo.close()
