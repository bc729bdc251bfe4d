"""lipsync: one portrait (or a short video) and a soundtrack (or a few lines of text) -> a talking, lip-synced video.

    >>> from lipsync import LipSync
    >>> result = LipSync().generate("portrait.jpg", "speech.wav", "out.mp4")
    >>> result.video, result.duration_s
"""

from __future__ import annotations

import logging

from .features import mel_windows, melspectrogram, window_starts
from .errors import (
    AudioError,
    BackendError,
    Cancelled,
    EncodeError,
    ImageError,
    InputError,
    LipSyncError,
    NoFaceError,
    ResourceError,
    TextError,
    VideoError,
    VoiceError,
    WeightsError,
)
from .face import FaceBox
from .media.audio import Phrase, Speech, load_audio
from .media.captions import Cue
from .media.segments import Segment
from .media.images import load_image
from .options import GenerateOptions, Request
from .pipeline import LipSync, Prepared, Progress, Result
from .speech import Voice, default_voice, fit_length, get_voice, list_voices, synthesize

__version__ = "0.1.0"

__all__ = [
    "LipSync",
    "GenerateOptions",
    "Request",
    "Prepared",
    "Result",
    "Progress",
    "Speech",
    "Phrase",
    "Segment",
    "Cue",
    "FaceBox",
    "load_image",
    "load_audio",
    "melspectrogram",
    "window_starts",
    "mel_windows",
    "fit_length",
    "Voice",
    "list_voices",
    "get_voice",
    "default_voice",
    "synthesize",
    "LipSyncError",
    "InputError",
    "ImageError",
    "VideoError",
    "AudioError",
    "TextError",
    "VoiceError",
    "NoFaceError",
    "WeightsError",
    "EncodeError",
    "ResourceError",
    "BackendError",
    "Cancelled",
    "__version__",
]

logging.getLogger("lipsync").addHandler(logging.NullHandler())
