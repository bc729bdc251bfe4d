"""Everything before the network: the picture, the soundtrack, the face and the mel windows.

:func:`prepare` needs no model and no GPU (a ZeroGPU Space runs it outside
the GPU slot). It asks the *source* (:mod:`lipsync.sources`) for what it
needs and never branches on the input kind beyond building the source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import features
from ..blink import plan_blinks
from ..blend import draw_label, label_box
from ..errors import InputError
from ..face import FaceBox, find_face, pad_box
from ..media.audio import Speech, load_audio, resample
from ..media.images import load_image
from ..motion import MotionTrack, head_motion
from ..options import GenerateOptions, Request
from ..sources import PhotoSource, VideoSource, scan_or_still
from ..speech.activity import speech_weights
from ..speech.post import fit_length
from .progress import Clock, Progress, no_progress

__all__ = ["Prepared", "prepare"]

log = logging.getLogger("lipsync")


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
    blinks: Any = None  #: :class:`lipsync.blink.Blinks` for a photo (None: no blinks)
    blink_note: str = ""  #: what the blinks are, or why there are none
    device: str | None = None  #: the engine's device (``--device``): the mouth's ``face`` restorer follows it
    enhance_note: str = ""  #: what the mouth's enhancement ran, and why (set when the frames are composed)

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = PhotoSource(self.image, self.box, self.detector, plain=None, n_frames=len(self.mels))

    def keep_clear(self) -> tuple[FaceBox | None, tuple[int, int, int, int] | None]:
        """(face region, label rectangle): what burned and player captions keep clear of.

        The face region is the one the visible label avoids (on a video, the
        union of the face boxes of the frames used), and the label rectangle
        (x, y, width, height) is where the label is drawn, or None without one.
        """
        face = self.source.label_avoid()
        label = None
        if self.request.options.label:
            label = label_box((self.source.height, self.source.width), avoid=face)
        return face, label

    def close(self) -> None:
        """Remove what the source keeps on disk (a video's decoded frames); :meth:`LipSync.run` does this."""
        self.source.close()

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prepare(request: Request, detector: Callable[[], object], report: Progress | None = None,
            clock: Clock | None = None) -> Prepared:
    """The photo or video, the soundtrack, the face and the mel windows of ``request``.

    Args:
        detector: returns the face detector (called only when a face must be found).

    A video's decoded frames stay in a temporary folder until
    :meth:`Prepared.close` (``with prepare(...) as parts:``).
    """
    report = report or no_progress
    clock = clock or Clock()
    opts = request.options
    rgb = video = None
    if request.video is not None:
        from ..media.video import probe_video

        report("video", 0, 1)  # checked before any speech is made
        video = probe_video(request.video, max_seconds=opts.max_video_s, max_bytes=opts.max_video_bytes)
        clock.lap("video")
    else:
        report("image", 0, 1)
        rgb = load_image(request.image, max_side=opts.max_side)
        clock.lap("image")
    speech, voice_id = _speech(request, report, clock)
    report("audio", 0, 1)
    wav16 = _check_soundtrack(speech)
    clock.lap("audio")
    n_frames = features.frame_count(len(speech.samples), speech.sample_rate, opts.fps)
    report("face", 0, 1)
    source = None
    if video is not None:
        source, rgb = scan_or_still(video, opts, n_frames, detector, report)
    if source is None:  # a photo (or a video of one frame)
        box, found_by = _face(rgb, opts, detector)
        plain = rgb
        if opts.label:
            rgb = draw_label(rgb, avoid=box)
        source = PhotoSource(rgb, box, found_by, plain=plain if opts.label else None, n_frames=n_frames)
    clock.lap("face")
    for part, seconds in getattr(source, "timings", {}).items():  # a video's: where the face stage went
        clock.timings[f"face.{part}"] = seconds
    try:
        mel = features.melspectrogram(wav16)
        starts = features.window_starts(mel.shape[1], opts.fps, n_frames)
        mels = features.mel_windows(mel, opts.fps, starts=starts)
        speaking = speech_weights(speech.samples, speech.sample_rate, n_frames, opts.fps) if opts.skip_silence else None
        weights = source.weights(speaking)
        motion = None
        if source.still_picture and opts.motion > 0:
            motion = head_motion(speech.samples, speech.sample_rate, n_frames, opts.fps, source.box.height, opts.motion)
        blinks, blink_note = plan_blinks(source, speech, n_frames, opts)
        clock.lap("mel")
        image, crop = source.key_frame()
    except BaseException:
        source.close()
        raise
    return Prepared(
        request, image, source.box, source.detector, crop, speech, mels, weights, voice_id, source, motion,
        blinks, blink_note,
    )


def _speech(request: Request, report: Progress, clock: Clock) -> tuple[Speech, str | None]:
    """The soundtrack: the text spoken, or the audio decoded; fitted to the length asked for."""
    opts = request.options
    voice_id = None
    if request.text is not None:
        from ..speech import tts

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
        raise InputError(f"The audio lasts {speech.duration_s:.0f} seconds; the limit is {opts.max_audio_s:g} seconds.")
    if not np.isfinite(speech.samples).all():
        raise InputError("The audio contains invalid samples (NaN or infinity).")
    return fit_length(speech, opts.length_s, loop=opts.loop), voice_id


def _check_soundtrack(speech: Speech) -> np.ndarray:
    """The soundtrack at the model's 16 kHz, refused when too short for one window."""
    wav16 = resample(speech.samples, speech.sample_rate, features.SAMPLE_RATE)
    if len(wav16) < features.MEL_STEP * features.HOP:
        raise InputError("The audio is too short: it must last at least 0.2 seconds.")
    return wav16


def _face(rgb: np.ndarray, opts: GenerateOptions, detector: Callable[[], object]) -> tuple[FaceBox, str]:
    if opts.box is not None:
        y1, y2, x1, x2 = opts.box
        return pad_box((x1, y1, x2, y2), (0, 0, 0, 0), rgb.shape), "given"
    det = detector()
    return find_face(rgb, det, face_index=opts.face_index, pads=opts.pads), det.name
