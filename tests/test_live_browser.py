"""The Live tab in Chromium with a fake microphone fed from a WAV file, on loopback.

The page measures, with Web Audio analysers, when its own (fake) microphone starts
speaking and when the avatar's sound starts; the gap must be at most 800 ms. The
speech timed is the first that starts after the page says "Live" (the media flows)
and both have been quiet for half a second, as when a visitor starts to speak. Then
it keeps listening for several seconds of speech and reads Chromium's own counters
(``getStats()``, inbound audio): at most 2 % of the samples played may be
concealment (made up by the browser for packets that never came or were thrown
away), and no packet may be discarded. One app server and one Chromium serve the
module's tests.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import LOOPBACK_ONLY, ROOT, keep_local

sys.path.insert(0, str(ROOT / "scripts"))

pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
DELAY_LIMIT_MS = 800
QUIET_MS = 500  #: the microphone and the avatar are quiet this long, on a live page, before the speech that is timed
CONCEALED_LIMIT = 0.02  #: the share of the avatar's received sound the browser may make up
LISTEN_S = 8.0  #: how long the sound is listened to before the counters are read (the speech lasts about 11 s)

#: the page's own peer connection: the selected pair's candidates and what arrived
RELAY_JS = """
async () => {
  const pc = window.lipsyncLive && window.lipsyncLive.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  const all = [...report.values()];
  const transport = all.find((s) => s.type === "transport" && s.selectedCandidatePairId);
  const pair = transport ? report.get(transport.selectedCandidatePairId) : null;
  const cand = (id) => { const c = id && report.get(id); return c ? {type: c.candidateType, address: c.address} : null; };
  const inbound = (kind) => all.find((s) => s.type === "inbound-rtp" && s.kind === kind) || {};
  return {
    local: cand(pair && pair.localCandidateId), remote: cand(pair && pair.remoteCandidateId),
    candidates: all.filter((s) => s.type === "local-candidate").map((c) => `${c.candidateType} ${c.address}`),
    audio: inbound("audio").bytesReceived || 0, video: inbound("video").bytesReceived || 0,
    frames: inbound("video").framesDecoded || 0,
  };
}
"""


#: the browser's own counters of the avatar's incoming sound and picture
STATS_JS = """
async () => {
  const out = {audio: null, video: null};
  (await window.lipsyncLive.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.audio = {concealed: s.concealedSamples, silent: s.silentConcealedSamples, events: s.concealmentEvents,
                   total: s.totalSamplesReceived, discarded: s.packetsDiscarded, received: s.packetsReceived,
                   lost: s.packetsLost};
    }
    if (s.type === "inbound-rtp" && s.kind === "video") out.video = {decoded: s.framesDecoded};
  });
  const sound = window.lipsyncLive.pc.getReceivers().find((r) => r.track.kind === "audio");
  out.floor = sound ? sound.jitterBufferTarget : null;  // what the page asked of the sound's buffer, in ms
  return out;
}
"""

#: polls two analysers every 10 ms: once the page says "Live" (the media flows) and both have been quiet for
#: QUIET_MS, the time the microphone passes a level (someone starts to speak) and the time the avatar's sound does
MEASURE_JS = """
async (quietMs) => {
  const live = window.lipsyncLive;
  const video = document.querySelector('.lipsync-live-video');
  const status = document.querySelector('.lipsync-live-status');
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
    let tMic = null, tAvatar = null, quietSince = null, early = false;
    const t0 = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      const heard = mic() > 0.05, said = avatar() > 0.05;
      early = early || (status.textContent.startsWith('Live: ') && live.pc.connectionState !== 'connected');
      if (tMic === null) {
        if (heard && quietSince !== null && now - quietSince >= quietMs) tMic = now;
        else if (heard || said || !status.textContent.startsWith('Live: ')) quietSince = null;
        else if (quietSince === null) quietSince = now;
      } else if (tAvatar === null && said) tAvatar = now;
      if ((tMic !== null && tAvatar !== null) || now - t0 > 40000) {
        clearInterval(timer);
        done({mic: tMic === null ? null : tMic - t0, avatar: tAvatar === null ? null : tAvatar - t0, early});
      }
    }, 10);
  });
}
"""


@contextlib.contextmanager
def serve(app):
    """The app on a uvicorn thread of this process (scripts/live_soak.py's server), at 127.0.0.1."""
    import live_soak

    with live_soak.serving(app) as url:
        yield url


def write_spoken_wav(path: Path, text: str, silent_s: float = 4.0, rate: int = 48000) -> Path:
    """Silence, then ``text`` spoken by espeak-ng (the offline voice), as 16-bit mono at ``rate``."""
    from lipsync.speech import synthesize

    speech = synthesize(text, "espeak:en-us")
    x = speech.samples
    if speech.sample_rate != rate:
        import soxr

        x = soxr.resample(x, speech.sample_rate, rate)
    x = 0.8 * x / max(1e-6, float(np.abs(x).max()))
    pcm = (np.concatenate([np.zeros(int(silent_s * rate)), x, np.zeros(int(0.5 * rate))]) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


SPEECH = ("The avatar listens to the microphone and answers with the same words, sentence by sentence, "
          "while its face follows the sound. Every packet of its voice should arrive and play in full.")


@pytest.fixture(scope="module")
def live_app(engine, coturn):
    """One app server for the module: the Live tab and its routes on the shared engine (int8 where it passes).

    The media goes through the test's coturn on 127.0.0.1 (the relay policy on both sides, as on a
    Space), so nothing leaves the loopback range: the browser gathers no host candidates at all.
    """
    loaded = engine.load()
    import gradio as gr
    from fastapi import FastAPI

    from lipsync.live.web import build_tab, install

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSYNC_TURN_URLS", coturn.url)
        mp.setenv("LIPSYNC_TURN_SECRET", coturn.secret)
        mp.setenv("LIPSYNC_ICE_POLICY", "relay")
        app = FastAPI()
        server = install(app, lambda: loaded, offer_interval_s=0)
        with gr.Blocks() as demo, gr.Tab("Live"):
            build_tab(lambda: loaded)
        app = gr.mount_gradio_app(app, demo, path="/")
        with serve(app) as url:
            yield url, server, loaded


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """One headless Chromium for the module, its fake microphone playing recorded speech."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    wav = write_spoken_wav(tmp_path_factory.mktemp("mic") / "mic.wav", SPEECH)
    args = [
        "--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}", LOOPBACK_ONLY,
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def check_sound(page, what: str) -> dict:
    """Listen for LISTEN_S seconds, then assert from getStats that the sound played whole."""
    before = page.evaluate(STATS_JS)["audio"]
    page.wait_for_timeout(LISTEN_S * 1000)
    stats = page.evaluate(STATS_JS)
    audio = stats["audio"]
    print(f"browser ({what}): before listening {before}; after {audio}")
    assert audio and audio["total"] > 0.8 * LISTEN_S * 48000, f"{what}: too little sound arrived: {stats}"
    share = audio["concealed"] / audio["total"]
    print(f"browser ({what}): concealed {audio['concealed']} of {audio['total']} samples ({100 * share:.2f} %), "
          f"{audio['discarded']} of {audio['received']} packets discarded, {audio['lost']} lost; "
          f"{stats['video']['decoded']} pictures decoded")
    assert share <= CONCEALED_LIMIT, f"{what}: {100 * share:.1f} % of the sound was concealed: {stats}"
    assert audio["discarded"] == 0, f"{what}: the browser threw packets away: {stats}"
    # the page keeps a floor under the sound's buffer, or the first words after a quiet spell may run it dry
    assert stats["floor"] == 80, f"{what}: the page did not set the sound buffer's floor: {stats}"
    assert stats["video"]["decoded"] > 0
    return stats


def wait_freed(server) -> None:
    deadline = time.monotonic() + 10
    while server.peers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server.peers, "the session was not freed after Stop"


def test_photo_and_microphone_sound_starts_within_800_ms_and_plays_whole(live_app, chromium):
    url, server, engine = live_app
    page = chromium.new_page()
    keep_local(page)
    try:
        page.goto(url)
        page.wait_for_selector(".lipsync-live-mic", timeout=60_000)
        page.click(".lipsync-live-mic")
        page.wait_for_function(
            "() => window.lipsyncLive && document.querySelector('.lipsync-live-video').srcObject",
            timeout=30_000,
        )
        times = page.evaluate(MEASURE_JS, QUIET_MS)
        status = page.inner_text(".lipsync-live-status")
        assert not times["early"], "the page said 'Live' (speak now) before the media could flow"
        assert times["mic"] is not None, f"the fake microphone was not heard; page says {status!r}"
        assert times["avatar"] is not None, f"the avatar never spoke; page says {status!r}"
        delay = times["avatar"] - times["mic"]
        print(f"browser: avatar sound {delay:.0f} ms after the microphone, which spoke {times['mic']:.0f} ms into "
              f"the measurement ({engine.generator.description})")
        assert delay <= DELAY_LIMIT_MS
        assert status.startswith("Live: ") and "mode" in status and "Speak" in status, status
        check_sound(page, "photo, microphone")
        page.click(".lipsync-live-stop")
    finally:
        page.close()
    wait_freed(server)


def test_a_chosen_video_speaks_typed_text_and_its_sound_plays_whole(live_app, chromium, coturn, tmp_path):
    """The tab's face picker: a short video chosen (consent ticked), typed text started, the status
    names the video, a few sentences are said, and the browser hears all of them; all of it through the
    module's coturn, with short-lived TURN REST credentials."""
    from videos import pan_frames, write_video

    url, server, engine = live_app
    started = int(time.time())
    clip = write_video(tmp_path / "me.mp4", pan_frames(6))
    server.max_side = 256
    page = chromium.new_page()
    keep_local(page)
    try:
        page.goto(url)
        page.wait_for_selector(".lipsync-live-face", state="attached", timeout=60_000)
        page.set_input_files(".lipsync-live-face", str(clip))
        page.click(".lipsync-live-text")  # without consent: refused on the page, nothing sent
        page.wait_for_function(
            "() => document.querySelector('.lipsync-live-status').textContent.includes('consent box')", timeout=10_000
        )
        assert not server.peers
        page.check(".lipsync-live-consent")
        page.click(".lipsync-live-text")
        page.wait_for_function(
            "() => /^Live: .*face from a video/.test(document.querySelector('.lipsync-live-status').textContent)",
            timeout=30_000,
        )
        status = page.inner_text(".lipsync-live-status")
        (peer,) = server.peers.values()
        assert peer.session.mode.source == "video: 6 frames, back and forth"
        page.fill(".lipsync-live-words", SPEECH)
        page.click(".lipsync-live-say")
        deadline = time.monotonic() + 30
        while peer.session.stats.utterances < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert peer.session.stats.utterances >= 1, "the typed sentence was not spoken"
        check_sound(page, "video, typed text")
        relay = page.evaluate(RELAY_JS)
        page.click(".lipsync-live-stop")
    finally:
        page.close()
        server.max_side = 512
    assert "face from a video" in status, status
    wait_freed(server)
    check_relay(relay, coturn, started)


def check_relay(stats: dict, coturn, started: int) -> None:
    """The media went through coturn: relay candidates only on both ends, allocations made with TURN REST
    credentials (``<expiry>:lipsync``, expiring a TTL after they were made), the media relayed."""
    from conftest import REALM

    from lipsync.live import turn

    assert stats and stats["local"], stats
    assert stats["local"]["type"] == "relay" and stats["remote"]["type"] == "relay", stats
    assert {c.split()[0] for c in stats["candidates"]} == {"relay"}, stats["candidates"]
    deadline = time.monotonic() + 10  # coturn logs "peer usage" when an allocation is deleted, after Stop
    while time.monotonic() < deadline and relayed_bytes(coturn.text()) < stats["audio"] + stats["video"]:
        time.sleep(0.2)
    log = coturn.text()
    users = set(re.findall(rf"realm <{re.escape(REALM)}> user <(\d+):lipsync>: incoming packet ALLOCATE processed, "
                           r"success", log))
    assert users, f"coturn made no allocation:\n{log[-3000:]}"
    # made during this module (its first session came a minute or two before this one), valid for a TTL
    assert all(started - 300 + turn.DEFAULT_TTL_S <= int(u) <= int(time.time()) + turn.DEFAULT_TTL_S for u in users), users
    # (coturn counts whole packets, the page payloads: at least as many bytes as the page had when asked)
    assert relayed_bytes(log) >= stats["audio"] + stats["video"], f"coturn relayed no media:\n{log[-3000:]}"
    # (coturn listens on 127.0.0.1 and may relay to 127.0.0.0/8 only: see the fixture; Chromium sends to it from
    # sockets on each of its interfaces, so the clients' source addresses vary while every target is loopback)


def relayed_bytes(log: str) -> int:
    """The most bytes one of coturn's allocations received from its peer (logged when the allocation is deleted)."""
    return max((int(rb) for rb in re.findall(r"peer usage: realm=<[^>]*>, username=<\d+:lipsync>, rp=\d+, rb=(\d+)",
                                            log)), default=0)
