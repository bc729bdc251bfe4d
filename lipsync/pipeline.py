"""The one place that knows the order of the stages.

``LipSync(...).generate(image, audio, out)`` reads as the recipe:

1. check the inputs and options;
2. open the portrait, decode the soundtrack (or speak the text), fit its length;
3. find the face, compute the mel windows (and which frames are pauses);
4. run the generator, paste each mouth back and stream the frames to ffmpeg,
   with inference overlapping blending and encoding;
5. return a :class:`Result`.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import features
from .blend import Blender, draw_label
from .errors import InputError, LipSyncError
from .face import FaceBox, face_crop, find_face, make_detector, pad_box
from .media.audio import Speech, load_audio, resample
from .media.encode import VideoWriter, write_wav
from .media.images import load_image
from .speech.activity import speech_weights
from .speech.post import check_length_s, fit_length
from .options import GenerateOptions

__all__ = ["LipSync", "Result", "Progress"]

log = logging.getLogger("lipsync")

#: progress callback: (stage, done, total)
Progress = Callable[[str, int, int], None]


@dataclass
class Result:
    """What :meth:`LipSync.generate` made."""

    video: Path  #: the MP4
    duration_s: float  #: video duration (frames / fps)
    frames: int
    fps: float
    width: int
    height: int
    box: FaceBox  #: face box in the output's pixels
    detector: str  #: "s3fd", "mtcnn", "opencv-haar-multi", "opencv-haar" or "given"
    device: str  #: where the network ran, and in what precision
    audio_duration_s: float
    sample_rate: int  #: the soundtrack's rate in the MP4
    timings: dict[str, float] = field(default_factory=dict)  #: seconds per stage
    speaking_frames: int = 0  #: frames the network ran on (others were pauses)
    voice: str | None = None  #: the voice id that spoke the text (None for given audio)


class _Stop(Exception):
    pass


class LipSync:
    """A reusable lip-sync engine: one model, one face detector, many requests.

    Args:
        checkpoint: a local Wav2Lip checkpoint; ``None`` uses ``$LIPSYNC_CHECKPOINT``
            or downloads ``wav2lip_gan.pth`` from the Hub on first use.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        s3fd: a local S3FD weights file; ``None`` tries ``$LIPSYNC_S3FD`` and the
            Hub, and falls back to OpenCV's detector.
        detector: an already-built detector (anything with ``name`` and ``detect``).
        generator: an already-built :class:`~lipsync.generator.Generator`.
        fast: use the fast inference path (see :mod:`lipsync.generator`).

    The model and detector are loaded lazily, once, on the first request, so
    an app can start (and explain what is missing) before weights are present.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        s3fd: str | Path | None = None,
        detector=None,
        generator=None,
        fast: bool = True,
    ):
        self.checkpoint = checkpoint
        self.device = device
        self.precision = precision
        self.s3fd = s3fd
        self.fast = fast
        self._detector = detector
        self._generator = generator
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        from .runtime.generator import resolve_device, resolve_precision

        resolve_precision(precision, resolve_device(device))  # fail fast on bad values

    # -- lazily built parts -----------------------------------------------------
    @property
    def generator(self):
        with self._lock:
            if self._generator is None:
                from .runtime.generator import Generator
                from .models import load_wav2lip
                from .weights import WAV2LIP_GAN, resolve_weights

                path = resolve_weights(WAV2LIP_GAN, self.checkpoint)
                self._generator = Generator(
                    load_wav2lip(path), device=self.device, precision=self.precision, fast=self.fast
                )
                log.info("Wav2Lip loaded from %s on %s", path, self._generator.description)
            return self._generator

    @property
    def detector(self):
        with self._lock:
            if self._detector is None:
                self._detector = make_detector(self.s3fd, device="cpu")
            return self._detector

    def load(self) -> "LipSync":
        """Load the model and detector now (else the first request does)."""
        _ = self.generator, self.detector
        return self

    # -- the recipe ---------------------------------------------------------------
    def generate(
        self,
        image,
        audio: str | Path | Speech | None = None,
        out: str | Path | None = None,
        options: GenerateOptions | None = None,
        progress: Progress | None = None,
        *,
        text: str | None = None,
        voice: str | None = None,
        length_s: float = 0.0,
        loop: bool = False,
        max_chars: int = 1000,
    ) -> Result:
        """Make a lip-synced MP4 of ``image`` speaking ``audio`` or ``text``.

        Args:
            image: portrait path, bytes, PIL image or (H, W, 3) uint8 RGB array.
            audio: an audio file (any format ffmpeg reads) or a :class:`Speech`.
            out: the MP4 to write. Nothing is left there if generation fails.
            options: :class:`GenerateOptions`.
            progress: ``(stage, done, total)`` callback.
            text: words to speak instead of ``audio`` (exactly one of the two).
            voice: a voice id for ``text`` (``python -m lipsync voices``); None = the default voice.
            length_s: the soundtrack's (and video's) duration in seconds; 0 keeps
                the natural length (see :func:`lipsync.audio.fit_length`).
            loop: when ``length_s`` is longer, repeat the speech rather than pad with silence.
            max_chars: the text length limit.

        Raises:
            LipSyncError: with a message for the user (bad image, no face,
                unusable audio, missing weights, encoder failure).
        """
        opts = options or GenerateOptions()
        report = progress or (lambda stage, done, total: None)
        if (audio is None) == (text is None):
            raise InputError("Give either an audio file or a text to speak (exactly one of the two).")
        if out is None:
            raise InputError("Give the output file name (ending in .mp4).")
        length_s = check_length_s(length_s)
        if text is not None:
            from .speech import tts

            tts.clean_text(text, max_chars)  # bad text and unusable voices fail before any work
            if voice is not None:
                tts.usable_voice(voice)
        elif voice is not None:
            raise InputError("A voice can only be chosen for text, not for an audio file.")
        out = Path(out)
        if out.suffix.lower() != ".mp4":
            raise InputError(f"The output must be an .mp4 file, got {out.name}.")
        if out.is_dir():
            raise InputError(f"The output {out} is a folder; give a file name ending in .mp4.")
        timings: dict[str, float] = {}
        t = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            timings[stage] = timings.get(stage, 0.0) + now - t
            t = now

        # 2. the model first (a missing checkpoint is reported before any work), then inputs
        report("model", 0, 1)
        gen = self.generator
        if opts.batch_size:
            gen.batch_size = int(opts.batch_size)
        lap("model")
        report("image", 0, 1)
        rgb = load_image(image, max_side=opts.max_side)
        lap("image")
        voice_id = None
        if text is not None:
            report("speech", 0, 1)
            speech, used = tts.narrate(text, voice, max_chars=max_chars)
            voice_id = used.id
            lap("speech")
            report("speech", 1, 1)
        report("audio", 0, 1)
        if text is None:
            speech = audio if isinstance(audio, Speech) else Speech(
                *load_audio(
                    audio, sample_rate=None, max_seconds=opts.max_audio_s, max_bytes=opts.max_audio_bytes
                )
            )
        if speech.duration_s > opts.max_audio_s:
            raise InputError(
                f"The audio lasts {speech.duration_s:.0f} seconds; the limit is {opts.max_audio_s:g} seconds."
            )
        if not np.isfinite(speech.samples).all():
            raise InputError("The audio contains invalid samples (NaN or infinity).")
        if length_s > opts.max_audio_s:
            raise InputError(
                f"The requested length of {length_s:g} seconds is over the limit of {opts.max_audio_s:g} seconds."
            )
        speech = fit_length(speech, length_s, loop=loop)
        wav16 = resample(speech.samples, speech.sample_rate, features.SAMPLE_RATE)
        if len(wav16) < features.MEL_STEP * features.HOP:
            raise InputError("The audio is too short: it must last at least 0.2 seconds.")
        lap("audio")

        # 3. face and mel windows
        report("face", 0, 1)
        if opts.box is not None:
            y1, y2, x1, x2 = opts.box
            box = pad_box((x1, y1, x2, y2), (0, 0, 0, 0), rgb.shape)
            detector_name = "given"
        else:
            det = self.detector
            box = find_face(rgb, det, face_index=opts.face_index, pads=opts.pads)
            detector_name = det.name
        crop = face_crop(rgb, box)
        if opts.label:
            rgb = draw_label(rgb, avoid=box)
        lap("face")
        mel = features.melspectrogram(wav16)
        n_frames = features.frame_count(len(speech.samples), speech.sample_rate, opts.fps)
        starts = features.window_starts(mel.shape[1], opts.fps, n_frames)
        mels = features.mel_windows(mel, opts.fps, starts=starts)
        weights = speech_weights(speech.samples, speech.sample_rate, n_frames, opts.fps) if opts.skip_silence else None
        lap("mel")

        # 4. generate, paste, encode
        h, w = rgb.shape[:2]
        work = Path(tempfile.mkdtemp(prefix="lipsync-"))
        try:
            wav_path = write_wav(work / "speech.wav", speech.samples, speech.sample_rate)
            meta = {"comment": "AI-generated lip-sync video", "encoder_tool": "lipsync"}
            meta.update(opts.metadata)
            writer = VideoWriter(
                out, w, h, opts.fps, wav_path,
                crf=opts.crf, preset=opts.preset, threads=opts.encoder_threads, metadata=meta,
                timeout=opts.timeout_s,
            )  # fmt: skip
            with self._run_lock:  # one request at a time on the model (its batch size adapts to OOM)
                self._stream(
                    gen, crop, mels, weights, Blender(rgb, box), writer, report, timings, step=opts.frame_step
                )
            t = time.perf_counter()
            report("encode", 0, 1)
            writer.close()
            lap("encode")
            report("encode", 1, 1)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return Result(
            video=out,
            duration_s=n_frames / opts.fps,
            frames=n_frames,
            fps=opts.fps,
            width=w,
            height=h,
            box=box,
            detector=detector_name,
            device=gen.description,
            audio_duration_s=speech.duration_s,
            sample_rate=speech.sample_rate,
            timings=timings,
            speaking_frames=int(n_frames if weights is None else np.count_nonzero(weights > 0)),
            voice=voice_id,
        )

    @staticmethod
    def _stream(gen, crop, mels, weights, blender, writer, report, timings, step: int = 1) -> None:
        """Inference on a worker thread, blending and encoding on this one.

        A queue of two batches bounds memory; an error on either side stops both
        and is raised here; the writer is aborted so no partial file remains.
        """
        n = len(mels)
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        failure: list[BaseException] = []
        busy = {"infer": 0.0}

        def produce() -> None:
            try:
                t0 = time.perf_counter()
                for batch in gen.predict(crop, mels, weights=weights, step=step):
                    busy["infer"] += time.perf_counter() - t0
                    while True:
                        if stop.is_set():
                            raise _Stop
                        try:
                            q.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    t0 = time.perf_counter()
            except _Stop:
                return
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                failure.append(e)
            finally:
                while True:
                    try:
                        q.put(None, timeout=0.1)
                        break
                    except queue.Full:
                        if stop.is_set():
                            break

        worker = threading.Thread(target=produce, name="lipsync-infer", daemon=True)
        t_start = time.perf_counter()
        worker.start()
        done = 0
        frame = np.empty_like(blender.image)
        try:
            report("lipsync", 0, n)
            while True:
                batch = q.get()
                if batch is None:
                    break
                for pred in batch:
                    writer.write(blender.paste(pred, out=frame))
                done += len(batch)
                report("lipsync", done, n)
            if failure:
                raise failure[0]
            if done != n:  # pragma: no cover - defensive
                raise LipSyncError(f"Only {done} of {n} frames were produced.")
        except BaseException:
            stop.set()
            writer.abort()
            raise
        finally:
            stop.set()
            worker.join(timeout=60)
            timings["lipsync"] = time.perf_counter() - t_start
            timings["inference_busy"] = busy["infer"]

