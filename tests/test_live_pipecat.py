"""The Pipecat avatar processor in a scripted pipeline: bot speech in, paced picture and sound out, interruptions."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip(
    "pipecat",
    reason="pipecat-ai is not installed here: it needs protobuf<7 and soxr~=1.0, which clash with this "
    "environment's pins; install .[pipecat] into a virtualenv of its own to run this test",
)


def test_avatar_speaks_the_bots_audio_and_honours_interruptions(fp32_engine, example_image):
    from pipecat.frames.frames import (
        EndFrame,
        InterruptionFrame,
        OutputAudioRawFrame,
        OutputImageRawFrame,
        TTSAudioRawFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.runner import PipelineRunner
    from pipecat.pipeline.task import PipelineTask
    from pipecat.processors.frame_processor import FrameProcessor

    from lipsync.live.pipecat import LipSyncAvatar

    class Collect(FrameProcessor):
        def __init__(self):
            super().__init__()
            self.images, self.sounds, self.tts = [], [], 0

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, TTSAudioRawFrame):
                self.tts += 1
            elif isinstance(frame, OutputImageRawFrame):
                self.images.append(frame)
            elif isinstance(frame, OutputAudioRawFrame):
                self.sounds.append(np.frombuffer(frame.audio, np.int16))
            await self.push_frame(frame, direction)

    rng = np.random.default_rng(0)
    speech = np.clip(rng.normal(0, 8000, 16000 * 3), -32768, 32767).astype(np.int16)  # 3 s at 16 kHz
    stereo = np.repeat(speech[:, None], 2, axis=1)  # the processor mixes stereo down
    avatar = LipSyncAvatar(fp32_engine, example_image, max_side=160, motion=0, adapt=False)
    collect = Collect()
    task = PipelineTask(Pipeline([avatar, collect]))

    async def until(cond, timeout):
        for _ in range(int(timeout / 0.05)):
            if cond():
                return True
            await asyncio.sleep(0.05)
        return False

    async def script():
        assert await until(lambda: len(collect.images) >= 3, 30), "no idle frames"
        await task.queue_frame(TTSAudioRawFrame(audio=stereo.tobytes(), sample_rate=16000, num_channels=2))
        assert await until(lambda: sum(bool(s.any()) for s in collect.sounds) >= 4, 60), "the bot was not heard"
        await task.queue_frame(InterruptionFrame())
        n = len(collect.sounds)
        assert await until(lambda: len(collect.sounds) >= n + 6, 60)
        await task.queue_frame(EndFrame())

    async def main():
        await asyncio.gather(PipelineRunner(handle_sigint=False).run(task), script())

    asyncio.run(main())
    assert collect.tts == 0, "the bot's raw TTS audio must not reach the output beside the avatar's"
    assert all(max(f.size) == 160 and f.format == "RGB" for f in collect.images)
    assert all(len(s) == 640 for s in collect.sounds)
    sound = np.concatenate(collect.sounds)
    start = int(np.flatnonzero(sound)[0]) - 1  # the fade-in's first sample is 0
    heard = sound[start + 80 : start + 80 + 3000]
    np.testing.assert_array_equal(heard, speech[80 : 80 + len(heard)])  # exactly the bot's speech
    # after the interruption the sound stops within a frame or two, long before the 3 s were played
    assert np.count_nonzero(sound) < len(speech) - 16000
    assert not np.concatenate(collect.sounds[-3:]).any()
    assert avatar.session is None
