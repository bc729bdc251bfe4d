"""The one place that knows the order of the stages.

``LipSync(...).generate(image, audio, out)`` reads as the recipe:

1. check the inputs and options;
2. open the portrait (or probe the driving video), decode the soundtrack (or
   speak the text), fit its length;
3. find the face (in a video: on every frame, see :mod:`lipsync.sources`),
   compute the mel windows (and which frames are pauses), plan the head motion;
4. run the generator, paste each mouth back and stream the frames to ffmpeg,
   with inference overlapping blending and encoding;
5. return a :class:`Result`.

The face comes from a *source* (:class:`~lipsync.sources.PhotoSource` or
:class:`~lipsync.sources.VideoSource`); everything after step 3 asks the
source, not the input kind.

:meth:`LipSync.stream` runs the same recipe on a worker thread and hands over
playable segments while the video is made (see :mod:`lipsync.media.segments`);
a cancel event stops any run between batches and leaves nothing behind.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from . import features
from .blend import draw_label, label_box
from .errors import Cancelled, InputError, LipSyncError
from .face import FaceBox, face_crop, find_face, make_detector, pad_box
from .media.audio import Speech, load_audio, resample
from .media.captions import CaptionBurner, Cue, cues_for, write_vtt
from .media.encode import VideoWriter, keyframe_interval, write_wav
from .media.segments import Segment, SegmentOutput, SegmentStream
from .media.images import load_image
from .motion import MotionTrack, head_motion
from .sources import PhotoSource, VideoSource
from .speech.activity import speech_weights
from .speech.post import fit_length
from .options import GenerateOptions, Request

__all__ = ["LipSync", "Result", "Progress", "Prepared"]

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
    source: str = "photo"  #: what the face came from: "photo" or "video"
    motion: float = 0.0  #: head motion applied (0 for a still photo and for a video)
    face_frames: int = 0  #: output frames that show a face (all of them for a photo)
    captions: Path | None = None  #: the WebVTT captions beside the MP4 (with ``captions=True``)

    def to_dict(self) -> dict:
        """Plain JSON-ready values: absolute paths as strings, the face box as [y1, y2, x1, x2]."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path):
                v = str(v.absolute())
            elif isinstance(v, FaceBox):
                v = list(v.as_tuple())
            elif isinstance(v, dict):
                v = {k: round(x, 4) if isinstance(x, float) else x for k, x in v.items()}
            out[f.name] = v
        return out


class _Stop(Exception):
    pass


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def _cancellable(report: Progress, cancel: threading.Event | None) -> Progress:
    """``report``, raising :class:`Cancelled` first once ``cancel`` is set.

    Every stage reports progress, and the render loop after each batch, so
    this is where a run notices a cancel; the code around each report already
    stops the network and aborts the writer on any error.
    """
    if cancel is None:
        return report

    def checked(stage: str, done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled()
        report(stage, done, total)

    return checked


class _Clock:
    """Seconds per stage, accumulated lap by lap."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def restart(self) -> None:
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._t
        self._t = now


@dataclass
class Prepared:
    """A request made ready for the network (see :meth:`LipSync.prepare`)."""

    request: Request
    image: np.ndarray  #: (H, W, 3) uint8 RGB working frame (label drawn); a video's first frame with a face
    box: FaceBox
    detector: str
    crop: np.ndarray  #: (96, 96, 3) uint8 BGR face crop
    speech: Speech  #: the final soundtrack (length fitted)
    mels: np.ndarray  #: (N, 80, 16) float32, one window per video frame
    weights: np.ndarray | None  #: (N,) mouth weight per frame (speech x face), None = every frame speaks
    voice: str | None  #: the voice that spoke the text
    source: PhotoSource | VideoSource | None = None  #: where the face comes from (None: the photo above)
    motion: MotionTrack | None = None  #: head pose per frame for a photo (None: still)

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = PhotoSource(self.image, self.box, self.detector, plain=None, n_frames=len(self.mels))

    def close(self) -> None:
        """Remove what the source keeps on disk (a video's decoded frames); :meth:`LipSync.run` does this."""
        self.source.close()

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
        image=None,
        audio: str | Path | Speech | None = None,
        out: str | Path | None = None,
        options: GenerateOptions | None = None,
        progress: Progress | None = None,
        *,
        text: str | None = None,
        voice: str | None = None,
        length_s: float | None = None,
        loop: bool | None = None,
        max_chars: int | None = None,
        video: str | Path | None = None,
        motion: float | None = None,
    ) -> Result:
        """Make a lip-synced MP4 of ``image`` (or ``video``) speaking ``audio`` or ``text``.

        Args:
            image: portrait path, bytes, PIL image or (H, W, 3) uint8 RGB array.
            video: a driving video of the person instead of ``image`` (MP4, MOV, WebM, MKV).
            audio: an audio file (any format ffmpeg reads) or a :class:`Speech`.
            out: the MP4 to write. Nothing is left there if generation fails.
            options: :class:`GenerateOptions`.
            progress: ``(stage, done, total)`` callback.
            text: words to speak instead of ``audio`` (exactly one of the two).
            voice, length_s, loop, max_chars, motion: shortcuts for the options of the same
                name (see :class:`GenerateOptions`); given here, they override ``options``.

        Raises:
            LipSyncError: with a message for the user (bad image, no face,
                unusable audio, missing weights, encoder failure).
        """
        opts = (options or GenerateOptions()).updated(
            voice=voice, length_s=length_s, loop=loop, max_chars=max_chars, motion=motion
        )
        return self.run(Request(image=image, out=out, audio=audio, text=text, options=opts, video=video), progress)

    def run(
        self,
        request: Request,
        progress: Progress | None = None,
        *,
        predict: Callable[[Prepared], np.ndarray] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """Make the video a checked :class:`Request` asks for. The recipe:

        1. load the model (missing weights are reported before any work);
        2. prepare the inputs: photo, speech, face, mel windows (:meth:`prepare`);
        3. write the captions, when asked for (they are known once the speech is);
        4. animate: the network, the paste and the encoder, overlapped (:meth:`render`);
        5. say what was made (:class:`Result`).

        Args:
            request: what to make.
            progress: ``(stage, done, total)`` callback.
            predict: run the network apart, all frames at once (as
                :meth:`predict_mouths` does), e.g. inside a ZeroGPU slot; by
                default it streams, overlapping the paste and the encoder.
            on_segment: also cut the video into playable segments while it is
                made, and call this with each one (see :meth:`render`).
            cancel: set it (from any thread) to stop: :class:`Cancelled` is
                raised at the next stage or batch, and no file is left behind.
        """
        report = _cancellable(progress or _no_progress, cancel)
        clock = _Clock()
        report("model", 0, 1)
        _ = self.generator
        clock.lap("model")
        with self.prepare(request, report, clock) as parts:
            opts = request.options
            captions = write_vtt(self.cues(parts), request.out.with_suffix(".vtt")) if opts.captions else None
            try:
                mouths = None
                if predict is not None:
                    report("lipsync", 0, len(parts.mels))
                    mouths = [predict(parts)]
                    clock.lap("network")
                self.render(parts, report, clock, mouths=mouths, on_segment=on_segment)
            except BaseException:
                if captions is not None:
                    captions.unlink(missing_ok=True)
                raise
            result = self.result(parts, clock)
            result.captions = captions
            return result

    def stream(
        self,
        request: Request,
        progress: Progress | None = None,
        *,
        cancel: threading.Event | None = None,
        folder: str | Path | None = None,
        predict: Callable[[Prepared], np.ndarray] | None = None,
    ) -> SegmentStream:
        """Make the video on a worker thread, handing over playable segments as they are finished.

        Iterating over the returned :class:`~lipsync.media.segments.SegmentStream`
        gives each :class:`~lipsync.media.segments.Segment` (MPEG-TS, H.264 + AAC,
        about a second, starting on a keyframe); afterwards its ``result`` is
        the :class:`Result`. The MP4 is written as by :meth:`run`,
        with the same frames. Leaving the loop early cancels the run.

        Args:
            request, progress, predict: as for :meth:`run` (progress is called on the worker thread).
            cancel: an event that stops the run when set.
            folder: keep the segments here; by default they are in a temporary
                folder removed when the stream is closed.

        Example::

            for seg in (s := engine.stream(Request("me.jpg", "talk.mp4", text="Hi!"))):
                player.append(seg.path)
            print(s.result.video)
        """
        return SegmentStream(
            lambda on_segment, stop: self.run(request, progress, predict=predict, on_segment=on_segment, cancel=stop),
            folder=folder, cancel=cancel,
        )  # fmt: skip

    def live(self, image=None, *, video=None, fps: float = 25.0, **kw):
        """A real-time session: speech pushed in chunks, paced frames out (see :class:`lipsync.live.LiveSession`)."""
        from .live import open_session

        return open_session(self, image, video, fps=fps, **kw)

    def cues(self, parts: Prepared) -> list[Cue]:
        """The captions of a prepared request: its spoken phrases as cues, within the video's length."""
        return cues_for(parts.speech.phrases, duration_s=len(parts.mels) / parts.request.options.fps)

    def prepare(self, request: Request, progress: Progress | None = None, clock: "_Clock | None" = None) -> Prepared:
        """Everything before the network: the photo or video, the soundtrack, the face and the mel windows.

        Needs no model and no GPU (a ZeroGPU Space runs it outside the GPU slot).
        A video's decoded frames stay in a temporary folder until
        :meth:`Prepared.close` (``with engine.prepare(...) as parts:``).
        """
        report = progress or _no_progress
        clock = clock or _Clock()
        opts = request.options
        rgb = video = None
        if request.video is not None:
            from .media.video import probe_video

            report("video", 0, 1)  # checked before any speech is made
            video = probe_video(request.video, max_seconds=opts.max_video_s, max_bytes=opts.max_video_bytes)
            clock.lap("video")
        else:
            report("image", 0, 1)
            rgb = load_image(request.image, max_side=opts.max_side)
            clock.lap("image")
        speech, voice_id = self._speech(request, report, clock)
        report("audio", 0, 1)
        wav16 = self._check_soundtrack(speech, opts)
        clock.lap("audio")
        n_frames = features.frame_count(len(speech.samples), speech.sample_rate, opts.fps)
        report("face", 0, 1)
        source = None
        if video is not None:
            source, rgb = self._video_source(video, opts, n_frames, report)
        if source is None:  # a photo (or a video of one frame)
            box, detector = self._face(rgb, opts)
            plain = rgb
            if opts.label:
                rgb = draw_label(rgb, avoid=box)
            source = PhotoSource(rgb, box, detector, plain=plain if opts.label else None, n_frames=n_frames)
        clock.lap("face")
        try:
            mel = features.melspectrogram(wav16)
            starts = features.window_starts(mel.shape[1], opts.fps, n_frames)
            mels = features.mel_windows(mel, opts.fps, starts=starts)
            speaking = speech_weights(speech.samples, speech.sample_rate, n_frames, opts.fps) if opts.skip_silence else None
            weights = source.weights(speaking)
            motion = None
            if source.kind == "photo" and opts.motion > 0:
                motion = head_motion(
                    speech.samples, speech.sample_rate, n_frames, opts.fps, source.box.height, opts.motion
                )
            clock.lap("mel")
            if source.kind == "photo":
                image, crop = source.image, source.still_face
            else:
                image = source.spool.read(source.first_face_frame)
                crop = face_crop(image, source.box)
        except BaseException:
            source.close()
            raise
        return Prepared(
            request, image, source.box, source.detector, crop, speech, mels, weights, voice_id, source, motion
        )

    def render(
        self,
        parts: Prepared,
        progress: Progress | None = None,
        clock: "_Clock | None" = None,
        *,
        mouths: Iterable[np.ndarray] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> Path:
        """Animate and encode: mouth crops pasted into the photo, streamed to the MP4.

        Args:
            parts: from :meth:`prepare`.
            mouths: precomputed mouth crops in frame order (batches of (B, 96, 96, 3)
                BGR in [0, 1]), e.g. from :meth:`predict_mouths` run elsewhere; by
                default the network runs here, on a worker thread, overlapping the
                paste and the encoder.
            on_segment: the same encode is also cut into MPEG-TS segments, and
                this is called (on a watcher thread) with each as soon as it is
                finished. A segment's file lives in this call's temporary folder:
                move it elsewhere within the callback to keep it.
        """
        report = progress or _no_progress
        clock = clock or _Clock()
        opts = parts.request.options
        out = parts.request.out
        h, w = parts.source.height, parts.source.width
        work = Path(tempfile.mkdtemp(prefix="lipsync-"))
        try:
            wav_path = write_wav(work / "speech.wav", parts.speech.samples, parts.speech.sample_rate)
            meta = {"comment": "AI-generated lip-sync video", "encoder_tool": "lipsync", **opts.metadata}
            segments = None
            if on_segment is not None:
                segments = SegmentOutput(work / "segments", on_segment, fps=opts.fps, gop=keyframe_interval(opts.fps))
            writer = VideoWriter(
                out, w, h, opts.fps, wav_path,
                crf=opts.crf, preset=opts.preset, threads=opts.encoder_threads, metadata=meta,
                timeout=opts.timeout_s, segments=segments,
            )  # fmt: skip
            sink = writer
            if opts.burn_captions:
                label = label_box(parts.image.shape, avoid=parts.box) if opts.label else None
                sink = CaptionBurner(writer, self.cues(parts), opts.fps, parts.image.shape,
                                     avoid=parts.box, keep_clear=[label] if label else [])  # fmt: skip
            if mouths is None:
                mouths = self._predict_batches(parts)
            self._stream(mouths, parts.source.compositor(parts), sink, report, clock.timings, len(parts.mels))
            clock.restart()
            report("encode", 0, 1)
            writer.close()
            clock.lap("encode")
            report("encode", 1, 1)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return out

    def predict_mouths(self, parts: Prepared) -> np.ndarray:
        """All mouth crops of a clip at once: (N, 96, 96, 3) uint8 BGR.

        For callers that must run the network apart from the rest (a ZeroGPU
        Space holds the GPU only for this); :meth:`render` streams instead.
        """
        return np.concatenate(
            [np.clip(b * 255.0 + 0.5, 0, 255).astype(np.uint8) for b in self._predict_batches(parts)]
        )

    def result(self, parts: Prepared, clock: "_Clock | None" = None) -> Result:
        opts = parts.request.options
        n = len(parts.mels)
        h, w = parts.source.height, parts.source.width
        return Result(
            video=parts.request.out,
            duration_s=n / opts.fps,
            frames=n,
            fps=opts.fps,
            width=w,
            height=h,
            box=parts.box,
            detector=parts.detector,
            device=self.generator.description,
            audio_duration_s=parts.speech.duration_s,
            sample_rate=parts.speech.sample_rate,
            timings=dict(clock.timings) if clock else {},
            speaking_frames=int(n if parts.weights is None else np.count_nonzero(parts.weights > 0)),
            voice=parts.voice,
            source=parts.source.kind,
            motion=float(opts.motion) if parts.motion is not None and not parts.motion.still else 0.0,
            face_frames=parts.source.face_frames,
        )

    # -- the steps ------------------------------------------------------------------
    def _speech(self, request: Request, report: Progress, clock: "_Clock") -> tuple[Speech, str | None]:
        """The soundtrack: the text spoken, or the audio decoded; fitted to the length asked for."""
        opts = request.options
        voice_id = None
        if request.text is not None:
            from .speech import tts

            report("speech", 0, 1)
            speech, used = tts.narrate(request.text, opts.voice, max_chars=opts.max_chars)
            voice_id = used.id
            clock.lap("speech")
            report("speech", 1, 1)
        elif isinstance(request.audio, Speech):
            speech = request.audio
        else:
            report("audio", 0, 1)
            speech = Speech(
                *load_audio(request.audio, sample_rate=None, max_seconds=opts.max_audio_s, max_bytes=opts.max_audio_bytes)
            )
        if speech.duration_s > opts.max_audio_s:
            raise InputError(
                f"The audio lasts {speech.duration_s:.0f} seconds; the limit is {opts.max_audio_s:g} seconds."
            )
        if not np.isfinite(speech.samples).all():
            raise InputError("The audio contains invalid samples (NaN or infinity).")
        return fit_length(speech, opts.length_s, loop=opts.loop), voice_id

    @staticmethod
    def _check_soundtrack(speech: Speech, opts: GenerateOptions) -> np.ndarray:
        """The soundtrack at the model's 16 kHz, refused when too short for one window."""
        wav16 = resample(speech.samples, speech.sample_rate, features.SAMPLE_RATE)
        if len(wav16) < features.MEL_STEP * features.HOP:
            raise InputError("The audio is too short: it must last at least 0.2 seconds.")
        return wav16

    def _face(self, rgb: np.ndarray, opts: GenerateOptions) -> tuple[FaceBox, str]:
        if opts.box is not None:
            y1, y2, x1, x2 = opts.box
            return pad_box((x1, y1, x2, y2), (0, 0, 0, 0), rgb.shape), "given"
        det = self.detector
        return find_face(rgb, det, face_index=opts.face_index, pads=opts.pads), det.name

    def _video_source(self, video, opts: GenerateOptions, n_frames: int, report: Progress):
        """(VideoSource, None), or (None, the frame) for a video of one frame, which is used as a photo."""
        from .sources import scan_video

        source = scan_video(video, opts, n_frames, None if opts.box is not None else self.detector, report)
        if source.frames > 1:
            return source, None
        frame = source.spool.read(0)
        source.close()
        log.info("%s has a single frame: used as a photo", video.path.name)
        return None, frame

    def _predict_batches(self, parts: Prepared) -> Iterator[np.ndarray]:
        """The network's mouth crops, batch by batch, one request at a time on the model."""
        opts = parts.request.options
        source = parts.source
        with self._run_lock:  # concurrent forwards would only compete for the same cores / GPU memory
            if source.still_face is not None:  # a photo: the face encoder once per clip
                yield from self.generator.predict(
                    parts.crop, parts.mels, weights=parts.weights, step=opts.frame_step, batch_size=opts.batch_size
                )
            else:  # a video: a new face on every frame
                active = np.ones(len(parts.mels), bool) if parts.weights is None else parts.weights > 0
                yield from self.generator.predict_frames(
                    source.face_at, parts.mels, active, step=opts.frame_step, batch_size=opts.batch_size
                )

    @staticmethod
    def _stream(mouths: Iterable[np.ndarray], blender, writer, report, timings, n: int) -> None:
        """Mouths from a worker thread, pasted and encoded on this one.

        A queue of two batches bounds memory; an error on either side stops both
        and is raised here; the writer is aborted so no partial file remains.
        """
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        failure: list[BaseException] = []
        busy = {"infer": 0.0}

        def produce() -> None:
            it = iter(mouths)
            try:
                while True:
                    t0 = time.perf_counter()
                    batch = next(it, None)
                    busy["infer"] += time.perf_counter() - t0
                    if batch is None:
                        break
                    while True:
                        if stop.is_set():
                            raise _Stop
                        try:
                            q.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except _Stop:
                return
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                failure.append(e)
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()  # releases the model lock at once
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
            if done != n:
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
