"""The app in a real browser: headless Chromium (Debian's, never a downloaded one).

Upload the example portrait, type about 25 words (a ~10 s clip), pick the
espeak-ng voice, tick consent, Generate; the video must become playable in
the page and the HLS zip must download, unzip, and play in its own
player.html served over HTTP. The click-to-playable time is printed and
written to /tmp/app_click_to_playable.txt; a screenshot of the page after
generation goes to /tmp/app_screenshot.png.
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

import pytest

from conftest import EXAMPLE
from test_app import free_port, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
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
    )  # fmt: skip
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


def test_generate_in_browser_then_play_hls_package(chromium, checkpoint, tmp_path):
    with running_app(checkpoint, tmp_path) as (url, log_path):
        page = chromium.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(url)
        page.wait_for_selector("#generate", timeout=60_000)

        # inputs: portrait, text (the counter follows), voice, consent
        page.locator("#portrait input[type=file]").set_input_files(str(EXAMPLE))
        page.wait_for_selector("#portrait img", timeout=30_000)
        page.locator("#text textarea").fill(TEXT)
        page.wait_for_function(
            "(n) => document.querySelector('#char-count').innerText.includes(n + ' / 1000')", arg=len(TEXT)
        )
        page.locator("#voice input").click()
        page.get_by_role("option", name=ESPEAK_LABEL, exact=True).click()
        assert page.locator("#voice input").input_value() == ESPEAK_LABEL
        page.locator("#consent input[type=checkbox]").check()

        # generate: time from the click to a playable video in the page
        t0 = time.perf_counter()
        page.locator("#generate").click()
        try:
            page.wait_for_function(PLAYABLE_JS, arg="#video video", timeout=GENERATE_TIMEOUT_MS, polling=100)
        except Exception:  # noqa: BLE001 - report what the page and server said
            _fail_with_page(page, "the video never became playable", log_path)
        elapsed = time.perf_counter() - t0
        duration = page.evaluate("() => document.querySelector('#video video').duration")
        summary = page.locator("#summary").inner_text()
        TIMING.write_text(
            f"click to playable video: {elapsed:.1f} s for a {duration:.1f} s clip "
            f"({len(TEXT.split())} words, espeak-ng, CPU, {os.cpu_count()} cores)\n{summary}\n"
        )
        print(f"\nclick to playable: {elapsed:.1f} s for a {duration:.1f} s clip")
        assert duration > 5, "25 words should make several seconds of video"
        assert "espeak" in summary.lower()
        page.wait_for_selector("#hls-zip a", timeout=30_000)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # the HLS zip downloads from the page
        with page.expect_download(timeout=60_000) as info:
            page.locator("#hls-zip a").first.click()
        zip_path = tmp_path / "hls.zip"
        info.value.save_as(zip_path)
        pkg = tmp_path / "hls"
        with zipfile.ZipFile(zip_path) as z:
            assert "master.m3u8" in z.namelist() and "player.html" in z.namelist()
            z.extractall(pkg)
        page.close()

    # ...and plays in its own player page, served over HTTP
    with static_server(pkg) as base:
        player = chromium.new_page()
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
        assert not errors, errors
        player.close()
