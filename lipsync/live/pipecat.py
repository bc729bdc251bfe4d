"""A Pipecat frame processor that gives a voice agent a lip-synced face.

Put it after the TTS service in a pipeline::

    from lipsync.live.pipecat import LipSyncAvatar

    avatar = LipSyncAvatar(engine, image="portrait.jpg")
    pipeline = Pipeline([transport.input(), stt, llm, tts, avatar, transport.output()])

It takes the bot's ``TTSAudioRawFrame`` s (any rate, int16; stereo is mixed down)
out of the stream, pushes them into a :class:`~lipsync.live.LiveSession`, and
sends the session's paced frames downstream as ``OutputImageRawFrame`` (RGB) and
``OutputAudioRawFrame`` (mono, exactly the sound of that picture), so picture and
sound leave together. The sound goes out at the pipeline's output rate (the TTS's
own rate: ``audio_out_sample_rate`` of Pipecat's processor setup; 24 kHz where the
pipeline gives none), so a TTS at that rate is heard bit for bit, not band-limited.
When no one speaks it keeps sending idle frames. An ``InterruptionFrame`` (the
user talks over the bot) drops the queued speech: the face is at rest within a
few frames. ``EndFrame``/``CancelFrame`` close the session.

**Back-pressure.** The session's frames are made on a thread of their own and
handed to the event loop; at most :data:`MAX_IN_FLIGHT` of them (a picture is
about 0.8 MB) wait there at once. When the loop falls behind, the thread waits
for it, so the session falls behind its clock and repeats the last picture
until it has caught up (see :class:`~lipsync.live.LiveSession`): pictures are
repeated, the sound is never dropped or cut, and memory does not grow.

The sound needs no cutting into 20 ms packets here: Pipecat's output transport
re-chunks every ``OutputAudioRawFrame`` (10 ms x ``audio_out_10ms_chunks``) and
its WebRTC track hands aiortc 10 ms frames, so aiortc's Opus encoder never
makes two packets of one frame (which would share one RTP timestamp).

Needs ``pip install '.[pipecat]'`` (from the project's folder) (pipecat-ai and aiortc; not the
``pipecat-ai[webrtc]`` extra, which would pull opencv-python-headless over this
package's opencv-python: both install the module ``cv2``).
"""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InterruptionFrame,
        OutputAudioRawFrame,
        OutputImageRawFrame,
        StartFrame,
        TTSAudioRawFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "The Pipecat avatar needs pipecat-ai: pip install '.[pipecat]' from the project's folder "
        f"(without pipecat-ai's [webrtc] extra; see lipsync/live/pipecat.py). ({e})"
    ) from None

__all__ = ["LipSyncAvatar"]

log = logging.getLogger("lipsync")

FALLBACK_RATE = 24_000  #: the sound's rate where the pipeline gives none (Pipecat's own default)
MAX_IN_FLIGHT = 2  #: frames handed to the event loop and not yet pushed downstream, at most


class LipSyncAvatar(FrameProcessor):
    """Bot speech in, avatar video and its audio out (see the module's docstring).

    Args:
        engine: a loaded :class:`~lipsync.LipSync`.
        image: the portrait.
        video: instead of ``image``, a driving video of the person (played back and forth).
        fps: frames per second.
        **session: more :class:`~lipsync.live.LiveSession` options (motion, max_side, label...;
            ``sample_rate`` instead of the pipeline's output rate).
    """

    def __init__(self, engine, image=None, *, video=None, fps: float = 25.0, **session):
        super().__init__()
        self._engine = engine
        self._image = image
        self._video = video
        self._fps = fps
        self._options = session
        self.session = None
        self._driver: threading.Thread | None = None
        self._out_rate = 0  # the pipeline's output rate, from setup() (or the StartFrame of an older Pipecat)
        self._flight = threading.Condition()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Frames handed to the event loop and not yet pushed downstream (at most :data:`MAX_IN_FLIGHT`)."""
        return self._in_flight

    async def setup(self, setup) -> None:
        await super().setup(setup)
        self._out_rate = int(getattr(setup, "audio_out_sample_rate", 0) or 0)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            if not self._out_rate:  # Pipecat before 1.8 said it on the StartFrame only (deprecated since)
                self._out_rate = int(getattr(frame, "audio_out_sample_rate", 0) or 0)
            await self.push_frame(frame, direction)
            await self._start()
        elif isinstance(frame, TTSAudioRawFrame):
            if self.session is not None:
                pcm = np.frombuffer(frame.audio, dtype=np.int16)
                if frame.num_channels > 1:
                    pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
                if pcm.size:
                    self.session.push(pcm, frame.sample_rate)
        elif isinstance(frame, InterruptionFrame):
            if self.session is not None:
                self.session.interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _start(self) -> None:
        if self.session is not None:
            return
        options = {"sample_rate": self._out_rate or FALLBACK_RATE, **self._options}
        self.session = await asyncio.to_thread(
            self._engine.live, image=self._image, video=self._video, fps=self._fps, **options
        )
        loop = asyncio.get_running_loop()
        session = self.session
        flight = self._flight

        def room() -> bool:
            """Wait until fewer than MAX_IN_FLIGHT frames wait on the loop; False when the session or loop ended."""
            with flight:
                while self._in_flight >= MAX_IN_FLIGHT:
                    if session.closed or loop.is_closed():
                        return False
                    flight.wait(0.1)
                self._in_flight += 1
                return True

        def drive() -> None:
            try:
                for f in session:
                    h, w = f.image.shape[:2]
                    image = OutputImageRawFrame(image=f.image.tobytes(), size=(w, h), format="RGB")
                    audio = OutputAudioRawFrame(audio=f.audio.tobytes(), sample_rate=f.sample_rate, num_channels=1)
                    # back-pressure: wait for the loop (the session then repeats pictures to catch up);
                    # every frame's sound is sent, none is dropped
                    if not room():
                        break
                    emit = self._emit(image, audio)
                    try:
                        asyncio.run_coroutine_threadsafe(emit, loop)
                    except RuntimeError:  # the loop closed under us
                        emit.close()
                        self._landed()
                        break
            except Exception:
                log.exception("lipsync avatar: the live session stopped")

        self._driver = threading.Thread(target=drive, name="lipsync-pipecat-avatar", daemon=True)
        self._driver.start()

    async def _emit(self, image, audio) -> None:
        try:
            await self.push_frame(image)
            await self.push_frame(audio)
        finally:
            self._landed()

    def _landed(self) -> None:
        with self._flight:
            self._in_flight -= 1
            self._flight.notify()

    async def _stop(self) -> None:
        if self.session is not None:
            self.session.close()
        if self._driver is not None:
            await asyncio.to_thread(self._driver.join, 5.0)
        self.session, self._driver = None, None

    async def cleanup(self) -> None:
        await self._stop()
        await super().cleanup()
