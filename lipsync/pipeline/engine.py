"""The engine: :class:`LipSync` holds the loaded parts and runs the recipe.

``LipSync(...).generate(image, audio, out)`` reads as the recipe:

1. check the inputs and options;
2. open the portrait (or probe the driving video), decode the soundtrack (or
   speak the text), fit its length;
3. find the face (in a video: on every frame, see :mod:`lipsync.sources`),
   compute the mel windows (and which frames are pauses), plan the head motion
   (:mod:`.prepare`);
4. run the generator, paste each mouth back and stream the frames to ffmpeg,
   with inference overlapping blending and encoding; publish the MP4 and its
   captions together (:mod:`.render`);
5. return a :class:`Result` (:mod:`.result`).

The model and the face detector are lazy resources with a lock each
(:mod:`.resources`). The face comes from a *source*
(:class:`~lipsync.sources.PhotoSource` or :class:`~lipsync.sources.VideoSource`);
everything after building it asks the source, not the input kind.

:meth:`LipSync.stream` runs the same recipe on a worker thread and hands over
playable segments while the video is made (see :mod:`lipsync.media.segments`);
a cancel event stops any run between batches and leaves nothing behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..face.detect import RememberedDetector
from ..media.audio import Speech
from ..media.captions import Cue
from ..media.segments import Segment, SegmentStream
from ..options import GenerateOptions, Request
from ..proc import background
from . import render as _render
from .prepare import Prepared, prepare
from .progress import Clock, Progress, cancellable, no_progress
from .resources import Lazy, load_detector, load_generator
from .result import Result, make_result

__all__ = ["LipSync"]

log = logging.getLogger("lipsync")


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
        # one lock per resource: the face preview never waits behind a model that is loading or calibrating
        self._generator = Lazy(
            lambda: load_generator(self.checkpoint, self.device, self.precision, self.fast), generator
        )
        # the same photo's faces are found once: the page's face preview, then its Generate
        self._detector = Lazy(lambda: RememberedDetector(load_detector(self.s3fd)),
                              None if detector is None else RememberedDetector(detector))
        self._run_lock = threading.Lock()  # one request at a time on the network
        from ..runtime.generator import resolve_device, resolve_precision

        resolve_precision(precision, resolve_device(device))  # fail fast on bad values

    # -- lazily built parts -----------------------------------------------------
    @property
    def generator(self):
        """The network (loaded on first use; see :mod:`lipsync.pipeline.resources`)."""
        return self._generator.get()

    @property
    def detector(self):
        """The face detector (loaded on first use, independently of the network)."""
        return self._detector.get()

    @property
    def loaded(self) -> bool:
        """The network and the face detector are loaded (using them does not wait)."""
        return self._generator.ready and self._detector.ready

    @property
    def loading(self) -> bool:
        """Some thread is loading the network or the detector right now."""
        return self._generator.building or self._detector.building

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

    @background()  # its helper programs (decode, espeak-ng, ffprobe) run lower than live sessions' work
    def run(
        self,
        request: Request,
        progress: Progress | None = None,
        *,
        predict: Callable[[Prepared], np.ndarray] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
        cancel: threading.Event | None = None,
        on_captions: Callable[[list[Cue]], None] | None = None,
    ) -> Result:
        """Make the video a checked :class:`Request` asks for. The recipe:

        1. load the model (missing weights are reported before any work);
        2. prepare the inputs: photo, speech, face, mel windows (:meth:`prepare`);
        3. animate: the network, the paste and the encoder, overlapped, then publish
           the MP4 and, when asked for, its captions together (:meth:`render`);
        4. say what was made (:class:`Result`).

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
            on_captions: with ``captions=True``, called with the cues as soon as
                they are known, before the first frame (the ``.vtt`` beside the MP4
                is published only with the MP4), e.g. for a live preview.
        """
        report = cancellable(progress or no_progress, cancel)
        clock = Clock()
        report("model", 0, 1)
        _ = self.generator
        clock.lap("model")
        with self.prepare(request, report, clock) as parts:
            mouths = None
            if predict is not None:
                # the network runs apart (a ZeroGPU slot): the paste here has no GPU for the mouth's restorer
                parts.device = "cpu"
                report("lipsync", 0, len(parts.mels))
                mouths = [predict(parts)]
                clock.lap("network")
            self.render(parts, report, clock, mouths=mouths, on_segment=on_segment, on_captions=on_captions)
            return make_result(parts, clock, self.generator.description, _render.captions_path(parts))

    def stream(
        self,
        request: Request,
        progress: Progress | None = None,
        *,
        cancel: threading.Event | None = None,
        folder: str | Path | None = None,
        predict: Callable[[Prepared], np.ndarray] | None = None,
        on_captions: Callable[[list[Cue]], None] | None = None,
    ) -> SegmentStream:
        """Make the video on a worker thread, handing over playable segments as they are finished.

        Iterating over the returned :class:`~lipsync.media.segments.SegmentStream`
        gives each :class:`~lipsync.media.segments.Segment` (MPEG-TS, H.264 + AAC,
        about a second, starting on a keyframe); afterwards its ``result`` is
        the :class:`Result`. The MP4 is written as by :meth:`run`,
        with the same frames. Leaving the loop early cancels the run.

        Args:
            request, progress, predict, on_captions: as for :meth:`run` (called on the worker thread).
            cancel: an event that stops the run when set.
            folder: keep the segments here; by default they are in a temporary
                folder removed when the stream is closed.

        Example::

            for seg in (s := engine.stream(Request("me.jpg", "talk.mp4", text="Hi!"))):
                player.append(seg.path)
            print(s.result.video)
        """
        return SegmentStream(
            lambda on_segment, stop: self.run(request, progress, predict=predict, on_segment=on_segment, cancel=stop,
                                              on_captions=on_captions),
            folder=folder, cancel=cancel,
        )

    def live(self, image=None, *, video=None, fps: float = 25.0, **kw):
        """A real-time session: speech pushed in chunks, paced frames out (see :class:`lipsync.live.LiveSession`)."""
        from ..live import open_session

        return open_session(self, image, video, fps=fps, **kw)

    def cues(self, parts: Prepared) -> list[Cue]:
        """The captions of a prepared request: its spoken phrases as cues, within the video's length."""
        return _render.cues(parts)

    def prepare(self, request: Request, progress: Progress | None = None, clock: Clock | None = None) -> Prepared:
        """Everything before the network: the photo or video, the soundtrack, the face and the mel windows.

        Needs no model and no GPU (a ZeroGPU Space runs it outside the GPU slot).
        A video's decoded frames stay in a temporary folder until
        :meth:`Prepared.close` (``with engine.prepare(...) as parts:``).
        """
        parts = prepare(request, lambda: self.detector, progress, clock)
        parts.device = str(self.device)  # the mouth's restorer runs (and auto chooses) by the engine's device
        return parts

    def render(
        self,
        parts: Prepared,
        progress: Progress | None = None,
        clock: Clock | None = None,
        *,
        mouths: Iterable[np.ndarray] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
        on_captions: Callable[[list[Cue]], None] | None = None,
    ) -> Path:
        """Animate and encode: mouth crops pasted into the photo, streamed to the MP4, then published
        with its captions (see :func:`lipsync.pipeline.render.render`).

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
        if mouths is None:
            mouths = self._predict_batches(parts)
        return _render.render(parts, mouths, progress, clock, on_segment=on_segment, on_captions=on_captions)

    def predict_mouths(self, parts: Prepared) -> np.ndarray:
        """All mouth crops of a clip at once: (N, 96, 96, 3) uint8 BGR.

        For callers that must run the network apart from the rest (a ZeroGPU
        Space holds the GPU only for this); :meth:`render` streams instead.
        """
        return np.concatenate(
            [np.clip(b * 255.0 + 0.5, 0, 255).astype(np.uint8) for b in self._predict_batches(parts)]
        )

    def result(self, parts: Prepared, clock: Clock | None = None) -> Result:
        """The :class:`Result` of a request rendered from ``parts``."""
        return make_result(parts, clock, self.generator.description, _render.captions_path(parts))

    # -- the steps ------------------------------------------------------------------
    def _predict_batches(self, parts: Prepared) -> Iterator[np.ndarray]:
        """The network's mouth crops, batch by batch, one request at a time on the model."""
        opts = parts.request.options
        source = parts.source
        face = parts.crop if source.still_face is not None else source.face_at  # one crop, or one per frame
        with self._run_lock:  # concurrent forwards would only compete for the same cores / GPU memory
            yield from self.generator.predict(
                face, parts.mels, weights=parts.weights, step=opts.frame_step, batch_size=opts.batch_size
            )
