"""The Pipecat avatar processor in a scripted pipeline: bot speech in, paced picture and sound out, interruptions."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "pipecat",
    reason="pipecat-ai is not installed: `make test` installs it (requirements-dev.txt); "
    "elsewhere pip install '.[pipecat]'",
)

ROOT = Path(__file__).resolve().parents[1]



def run_with(task, script) -> None:
    """Run the pipeline ``task`` beside the coroutine ``script()`` until both end."""
    from pipecat.workers.runner import WorkerRunner

    async def main():
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(task)
        await asyncio.gather(runner.run(), script())

    asyncio.run(main())

def test_avatar_speaks_the_bots_audio_and_honours_interruptions(fp32_engine, example_image):
    from pipecat.frames.frames import (
        EndFrame,
        InterruptionFrame,
        OutputAudioRawFrame,
        OutputImageRawFrame,
        TTSAudioRawFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameProcessor

    from lipsync.live.pipecat import LipSyncAvatar

    class Collect(FrameProcessor):
        def __init__(self):
            super().__init__()
            self.images, self.sounds, self.sound_frames, self.tts = [], [], [], 0

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, TTSAudioRawFrame):
                self.tts += 1
            elif isinstance(frame, OutputImageRawFrame):
                self.images.append(frame)
            elif isinstance(frame, OutputAudioRawFrame):
                self.sounds.append(np.frombuffer(frame.audio, np.int16))
                self.sound_frames.append(frame)
            await self.push_frame(frame, direction)

    rate = 24000  #: the TTS's and the pipeline's output rate (Pipecat's default)
    rng = np.random.default_rng(0)
    speech = np.clip(rng.normal(0, 8000, rate * 3), -32768, 32767).astype(np.int16)  # 3 s at 24 kHz
    stereo = np.repeat(speech[:, None], 2, axis=1)  # the processor mixes stereo down
    avatar = LipSyncAvatar(fp32_engine, example_image, max_side=160, motion=0, adapt=False)
    collect = Collect()
    task = PipelineWorker(Pipeline([avatar, collect]))

    async def until(cond, timeout):
        for _ in range(int(timeout / 0.05)):
            if cond():
                return True
            await asyncio.sleep(0.05)
        return False

    async def script():
        assert await until(lambda: len(collect.images) >= 3, 30), "no idle frames"
        await task.queue_frame(TTSAudioRawFrame(audio=stereo.tobytes(), sample_rate=rate, num_channels=2))
        assert await until(lambda: sum(bool(s.any()) for s in collect.sounds) >= 4, 60), "the bot was not heard"
        await task.queue_frame(InterruptionFrame())
        n = len(collect.sounds)
        assert await until(lambda: len(collect.sounds) >= n + 6, 60)
        await task.queue_frame(EndFrame())

    run_with(task, script)
    assert collect.tts == 0, "the bot's raw TTS audio must not reach the output beside the avatar's"
    assert all(max(f.size) == 160 and f.format == "RGB" for f in collect.images)
    assert all(f.sample_rate == rate for f in collect.sound_frames), "the sound goes out at the pipeline's rate"
    assert all(len(s) == rate // 25 for s in collect.sounds)
    sound = np.concatenate(collect.sounds)
    start = int(np.flatnonzero(sound)[0]) - 1  # the fade-in's first sample is 0
    fade = rate // 200
    heard = sound[start + fade : start + fade + 4500]
    np.testing.assert_array_equal(heard, speech[fade : fade + len(heard)])  # exactly the bot's speech, at its rate
    # after the interruption the sound stops within a frame or two, long before the 3 s were played
    assert np.count_nonzero(sound) < len(speech) - rate
    assert not np.concatenate(collect.sounds[-3:]).any()
    assert avatar.session is None


def test_a_slow_pipeline_gets_a_bounded_number_of_frames_and_every_sample(fp32_engine, example_image):
    """Downstream takes 0.1 s a frame (2.5 slots): the avatar never has more than MAX_IN_FLIGHT frames waiting on the
    loop; the session repeats pictures to keep up, and the sound still carries every sample of the bot's speech."""
    from pipecat.frames.frames import EndFrame, OutputAudioRawFrame, OutputImageRawFrame, TTSAudioRawFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    from lipsync.live.pipecat import MAX_IN_FLIGHT, LipSyncAvatar

    class SlowAvatar(LipSyncAvatar):
        waiting: list[int] = []

        async def push_frame(self, frame, direction=FrameDirection.DOWNSTREAM):
            if isinstance(frame, OutputImageRawFrame):
                self.waiting.append(self.in_flight)
                await asyncio.sleep(0.1)
            await super().push_frame(frame, direction)

    class Collect(FrameProcessor):
        def __init__(self):
            super().__init__()
            self.images, self.sounds = 0, []

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, OutputImageRawFrame):
                self.images += 1
            elif isinstance(frame, OutputAudioRawFrame):
                self.sounds.append(np.frombuffer(frame.audio, np.int16))
            await self.push_frame(frame, direction)

    rate = 24000
    speech = np.clip(np.random.default_rng(1).normal(0, 8000, rate // 2), -32768, 32767).astype(np.int16)  # 0.5 s
    avatar = SlowAvatar(fp32_engine, example_image, max_side=160, motion=0, adapt=False)
    collect = Collect()
    task = PipelineWorker(Pipeline([avatar, collect]))

    def spoken() -> bool:
        sound = np.concatenate(collect.sounds) if collect.sounds else np.zeros(1, np.int16)
        nz = np.flatnonzero(sound)
        return len(nz) > 0 and len(sound) - nz[-1] > rate // 10  # the utterance is over

    async def script():
        for _ in range(200):
            if collect.images >= 2:
                break
            await asyncio.sleep(0.05)
        await task.queue_frame(TTSAudioRawFrame(audio=speech.tobytes(), sample_rate=rate, num_channels=1))
        for _ in range(400):
            if spoken():
                break
            await asyncio.sleep(0.05)
        await task.queue_frame(EndFrame())

    run_with(task, script)
    assert spoken(), "the bot's speech did not come through"
    assert avatar.session is None and avatar.in_flight == 0
    assert max(SlowAvatar.waiting) <= MAX_IN_FLIGHT, f"{max(SlowAvatar.waiting)} frames piled up on the loop"
    assert all(len(x) == rate // 25 for x in collect.sounds) and collect.images == len(collect.sounds)
    sound = np.concatenate(collect.sounds)
    nz = np.flatnonzero(sound)
    start, fade = nz[0] - 1, rate // 200
    np.testing.assert_array_equal(sound[start + fade : start + len(speech) - fade], speech[fade:-fade])
    assert not sound[start + len(speech) :].any() and not sound[:start].any()


def test_pipecat_leaves_cv2_to_opencv_python():
    """[pipecat] asks for pipecat-ai without its [webrtc] extra, whose opencv-python-headless would
    install a second cv2 over opencv-python's (one without the Haar cascades' data folder here)."""
    from importlib.metadata import PackageNotFoundError, distribution, requires

    import cv2

    with pytest.raises(PackageNotFoundError):
        distribution("opencv-python-headless")
    init = [f for f in distribution("opencv-python").files if str(f) == "cv2/__init__.py"]
    assert init and Path(cv2.__file__).resolve() == Path(init[0].locate()).resolve()
    assert Path(cv2.data.haarcascades, "haarcascade_frontalface_default.xml").is_file()
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["pipecat"]
    assert all("[" not in r for r in extra if r.startswith("pipecat-ai")), "no pipecat-ai extra pulls headless OpenCV"
    assert any("opencv-python-headless" in r for r in requires("pipecat-ai") if "webrtc" in r)  # the trap is real


def test_the_example_bot_greets_with_a_talking_face_over_webrtc(fp32_engine, example_image):
    """examples/pipecat_avatar.py as documented, in process: an aiortc visitor gets the avatar's
    picture and hears the espeak-ng greeting over Pipecat's local WebRTC transport (real RTP on loopback)."""
    import httpx
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from test_live_web import receive, tone_track, wait_for

    spec = importlib.util.spec_from_file_location("pipecat_avatar", ROOT / "examples" / "pipecat_avatar.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    app = example.build_app(fp32_engine, example_image, side=160)
    got = {}

    async def main():
        pc = RTCPeerConnection()
        got.update(receive(pc))
        pc.addTransceiver(tone_track(seconds_silent=60), direction="sendrecv")  # a quiet visitor
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot.test") as client:
            page = await client.get("/")
            assert page.status_code == 200 and "RTCPeerConnection" in page.text
            r = await client.post("/api/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"})
            assert r.status_code == 200, r.text
            answer = r.json()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

            def heard():
                return sum(bool(np.abs(f.to_ndarray()).max() > 500) for f in got["audio"]) >= 10

            assert await wait_for(heard, 60), "the greeting was not heard"
            assert await wait_for(lambda: len(got["video"]) >= 10, 30), "no avatar picture"
            (job,) = app.state.running
            await pc.close()
            await job.worker.cancel()
            await asyncio.wait_for(job, 10)

    t = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - t < 90
    frame = got["video"][-1].to_ndarray(format="rgb24")
    assert frame.shape == (160, 160, 3) and frame.std() > 10  # the portrait, at the size the example set
