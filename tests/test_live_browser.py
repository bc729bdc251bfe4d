"""The Live tab in Chromium with a fake microphone fed from a WAV file, on loopback.

The page measures, with Web Audio analysers, when its own (fake) microphone starts
speaking and when the avatar's sound starts; the gap must be at most 800 ms.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
DELAY_LIMIT_MS = 800

#: polls two analysers every 10 ms: the time the microphone and the avatar's sound first pass a level
MEASURE_JS = """
async () => {
  const live = window.lipsyncLive;
  const video = document.querySelector('.lipsync-live-video');
  const ctx = new AudioContext();
  await ctx.resume();
  const level = (stream) => {
    const a = ctx.createAnalyser();
    a.fftSize = 512;
    ctx.createMediaStreamSource(stream).connect(a);
    const buf = new Float32Array(a.fftSize);
    return () => { a.getFloatTimeDomainData(buf); let m = 0; for (const x of buf) m = Math.max(m, Math.abs(x)); return m; };
  };
  const mic = level(live.mic), avatar = level(video.srcObject);
  return await new Promise((done) => {
    let tMic = null, tAvatar = null;
    const t0 = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      if (tMic === null && mic() > 0.05) tMic = now;
      if (tMic !== null && tAvatar === null && avatar() > 0.05) tAvatar = now;
      if ((tMic !== null && tAvatar !== null) || now - t0 > 20000) {
        clearInterval(timer);
        done({mic: tMic === null ? null : tMic - t0, avatar: tAvatar === null ? null : tAvatar - t0});
      }
    }, 10);
  });
}
"""


def write_speech_wav(path: Path, silent_s: float = 2.0, speech_s: float = 3.0, rate: int = 48000) -> Path:
    """Silence, then a voiced buzz in syllables (loud enough to pass the page's 0.05 threshold)."""
    t = np.arange(int(speech_s * rate)) / rate
    f0 = 170 + 40 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    buzz = sum(np.sin(k * phase) / k for k in range(1, 10))
    env = np.clip(np.sin(2 * np.pi * 2.5 * t) * 1.5, 0.2, 1.0)
    voiced = 0.5 * buzz / np.abs(buzz).max() * env
    pcm = (np.concatenate([np.zeros(int(silent_s * rate)), voiced]) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


@contextlib.contextmanager
def serve(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def loaded(engine):
    """The shared engine, loaded before the test is timed: int8 where the checkpoint passes its check."""
    return engine.load()


def test_avatar_sound_starts_within_800_ms_of_the_microphone(loaded, tmp_path):
    engine = loaded
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    import gradio as gr
    from fastapi import FastAPI
    from playwright.sync_api import sync_playwright

    from lipsync.live.web import build_tab, install

    app = FastAPI()
    server = install(app, lambda: engine)
    with gr.Blocks() as demo, gr.Tab("Live"):
        build_tab(lambda: engine)
    app = gr.mount_gradio_app(app, demo, path="/")
    wav = write_speech_wav(tmp_path / "mic.wav")
    args = [
        "--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]
    with serve(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector(".lipsync-live-mic", timeout=60_000)
            page.click(".lipsync-live-mic")
            page.wait_for_function(
                "() => window.lipsyncLive && document.querySelector('.lipsync-live-video').srcObject",
                timeout=30_000,
            )
            times = page.evaluate(MEASURE_JS)
            status = page.inner_text(".lipsync-live-status")
            page.click(".lipsync-live-stop")
        finally:
            browser.close()
        assert times["mic"] is not None, f"the fake microphone was not heard; page says {status!r}"
        assert times["avatar"] is not None, f"the avatar never spoke; page says {status!r}"
        delay = times["avatar"] - times["mic"]
        print(f"browser: avatar sound {delay:.0f} ms after the microphone ({engine.generator.description})")
        assert delay <= DELAY_LIMIT_MS
        deadline = time.monotonic() + 10
        while server.peers and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server.peers, "the session was not freed after Stop"


def test_a_chosen_video_is_the_face_and_speaks_typed_text(loaded, tmp_path):
    """The tab's face picker in Chromium: a short video chosen, typed text started, the status names the
    video, a sentence is said, and the session that speaks it is driven by that video."""
    engine = loaded
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    import gradio as gr
    from fastapi import FastAPI
    from playwright.sync_api import sync_playwright

    from lipsync.live.web import build_tab, install
    from videos import pan_frames, write_video

    clip = write_video(tmp_path / "me.mp4", pan_frames(6))
    app = FastAPI()
    server = install(app, lambda: engine)
    server.max_side = 256
    with gr.Blocks() as demo, gr.Tab("Live"):
        build_tab(lambda: engine)
    app = gr.mount_gradio_app(app, demo, path="/")
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
    with serve(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector(".lipsync-live-face", state="attached", timeout=60_000)
            page.set_input_files(".lipsync-live-face", str(clip))
            page.click(".lipsync-live-text")
            page.wait_for_function(
                "() => document.querySelector('.lipsync-live-status').textContent.includes('face from a video')",
                timeout=30_000,
            )
            status = page.inner_text(".lipsync-live-status")
            (peer,) = server.peers.values()
            assert peer.session.mode.source == "video: 6 frames, back and forth"
            page.fill(".lipsync-live-words", "Hello from my own video.")
            page.click(".lipsync-live-say")
            deadline = time.monotonic() + 30
            while peer.session.stats.utterances < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            page.click(".lipsync-live-stop")
        finally:
            browser.close()
    assert "face from a video: 6 frames" in status, status
    assert peer.session.stats.utterances >= 1, "the typed sentence was not spoken"
