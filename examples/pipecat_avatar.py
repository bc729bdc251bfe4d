#!/usr/bin/env python3
"""A Pipecat voice bot with a lip-synced face, over Pipecat's local WebRTC transport. No cloud keys.

    pip install '.[pipecat]'      # from the project's folder; pipecat-ai + aiortc (not pipecat-ai[webrtc]: see README)
    python examples/pipecat_avatar.py --image portrait.jpg [--checkpoint wav2lip_gan.pth] [--port 7861]
    python examples/pipecat_avatar.py --video me.mp4       # a driving video instead of a photo
    # open http://localhost:7861, press Start, allow the microphone, and talk

The bot is an echo bot spoken by espeak-ng: it greets you, then repeats what you
said (your own recording) each time you pause. Its speech goes through
:class:`lipsync.live.pipecat.LipSyncAvatar`, which turns it into the avatar's
picture and sound; talking over the bot interrupts it.

Pipeline: transport.input() -> EchoBot -> LipSyncAvatar -> transport.output().
"""


import argparse  # no `from __future__ import annotations`: FastAPI reads the routes' annotations at run time
import asyncio
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGE = """<!doctype html><meta charset="utf-8"><title>lipsync + Pipecat</title>
<video id="v" autoplay playsinline style="width:512px;max-width:100%;background:#111"></video><br>
<button id="go">Start</button> <span id="s"></span>
<script>
document.getElementById("go").onclick = async () => {
  const pc = new RTCPeerConnection();
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); document.getElementById("v").srcObject = stream; };
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});
  pc.addTransceiver(mic.getAudioTracks()[0], {direction: "sendrecv"});
  pc.addTransceiver("video", {direction: "recvonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => { if (pc.iceGatheringState === "complete") ok();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && ok(); setTimeout(ok, 2000); });
  const r = await fetch("/api/offer", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"})});
  await pc.setRemoteDescription(await r.json());
  document.getElementById("s").textContent = "Connected: say something, then pause.";
};
</script>"""


def speak(text: str) -> tuple[np.ndarray, int]:
    from lipsync.speech import narrate

    speech, _ = narrate(text, "espeak:en-us")
    return (np.clip(speech.samples, -1, 1) * 32767).astype(np.int16), speech.sample_rate


def make_echo_bot():
    from pipecat.frames.frames import (
        InputAudioRawFrame,
        InterruptionFrame,
        StartFrame,
        TTSAudioRawFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class EchoBot(FrameProcessor):
        """Greets, then plays back each thing the user says after a 0.6 s pause (an energy gate, no STT)."""

        def __init__(self):
            super().__init__()
            self.heard: list[np.ndarray] = []
            self.quiet_s = 0.0
            self.rate = 16000

        async def say(self, pcm: np.ndarray, rate: int) -> None:
            await self.push_frame(TTSAudioRawFrame(audio=pcm.tobytes(), sample_rate=rate, num_channels=1))

        async def process_frame(self, frame, direction: FrameDirection):
            await super().process_frame(frame, direction)
            if isinstance(frame, StartFrame):
                await self.push_frame(frame, direction)
                await self.say(*await asyncio.to_thread(speak, "Hello! Say something, and I will say it back."))
                return
            if isinstance(frame, InputAudioRawFrame):
                pcm = np.frombuffer(frame.audio, np.int16).reshape(-1, frame.num_channels).mean(axis=1)
                self.rate = frame.sample_rate
                loud = 20 * np.log10(np.sqrt(np.mean((pcm / 32768.0) ** 2)) + 1e-9) > -40
                dt = len(pcm) / frame.sample_rate
                if loud:
                    if not self.heard:  # the user starts talking: stop the bot
                        await self.push_frame(InterruptionFrame())
                    self.heard.append(pcm.astype(np.int16))
                    self.quiet_s = 0.0
                elif self.heard:
                    self.heard.append(pcm.astype(np.int16))
                    self.quiet_s += dt
                    if self.quiet_s >= 0.6:
                        said, self.heard = np.concatenate(self.heard), []
                        await self.say(said, self.rate)
                return  # the user's own audio is not played back as is
            await self.push_frame(frame, direction)

    return EchoBot()


def picture_size(engine, image, video, side: int) -> tuple[int, int]:
    """The avatar's (width, height): the transport sends frames of one size, set before the session opens.

    A photo's is its live framing's (head and shoulders, see lipsync.live.photo); a video's is its
    working size (Pipecat's output scales a framed video's frames to it).
    """
    if video is not None:
        from lipsync.media.video import probe_video, working_size

        return working_size(probe_video(video), side)
    from lipsync.live.photo import frame_photo

    h, w = frame_photo(image, engine.detector, max_side=side)[0].shape[:2]
    return w, h


def build_app(engine, image=None, video=None, side: int = 512):
    """The example's web app: the page at ``/``, and ``/api/offer``, which starts one echo-bot
    pipeline with the avatar per WebRTC visitor (``app.state.running``: their asyncio tasks, each
    with its ``.worker``)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from pipecat.workers.runner import WorkerRunner

    from lipsync.live.pipecat import LipSyncAvatar

    width, height = picture_size(engine, image, video, side)
    app = FastAPI()
    app.state.running = running = set()

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.post("/api/offer")
    async def offer(request: Request) -> dict:
        body = await request.json()
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=body["sdp"], type=body["type"])
        avatar = LipSyncAvatar(engine, image, video=video, max_side=side)
        transport = SmallWebRTCTransport(
            webrtc_connection=connection,
            params=TransportParams(
                audio_in_enabled=True, audio_out_enabled=True,  # the pipeline's rate (24 kHz): the avatar's too
                video_out_enabled=True, video_out_is_live=True, video_out_width=width, video_out_height=height,
            ),
        )
        worker = PipelineWorker(Pipeline([transport.input(), make_echo_bot(), avatar, transport.output()]))

        @transport.event_handler("on_client_disconnected")
        async def gone(_transport, _client):
            await worker.cancel()

        async def run() -> None:
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()

        job = asyncio.ensure_future(run())
        job.worker = worker
        running.add(job)
        job.add_done_callback(running.discard)
        return connection.get_answer()

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    face = ap.add_mutually_exclusive_group()
    face.add_argument("--image", type=Path, help="the portrait (default: the example astronaut)")
    face.add_argument("--video", type=Path, help="a driving video of the person instead of a photo")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7861)
    args = ap.parse_args()

    import uvicorn

    from lipsync import LipSync

    engine = LipSync(args.checkpoint).load()
    image = args.image or (None if args.video else ROOT / "assets" / "astronaut.jpg")
    app = build_app(engine, image, args.video)
    print(f"open http://{args.host}:{args.port} (device: {engine.generator.description})")
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
