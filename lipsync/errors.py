"""Errors raised by lipsync, with messages written for the person using it.

Every error a user can cause (a bad file, no face, no weights, no network) is a
:class:`LipSyncError`. Its ``str()`` is a complete sentence that says what went
wrong and what to do; the command line prints it alone and exits with status 2,
the app shows it in the page.
"""

from __future__ import annotations

__all__ = [
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
]


class LipSyncError(Exception):
    """Base class: something the user can fix or needs to know about."""


class InputError(LipSyncError, ValueError):
    """An input value or file is unusable."""


class ImageError(InputError):
    """The portrait cannot be opened or used."""


class VideoError(InputError):
    """The driving video cannot be opened, decoded or used."""


class AudioError(InputError):
    """The audio cannot be decoded or used."""


class TextError(InputError):
    """The text cannot be spoken (empty, too long, nothing pronounceable)."""


class VoiceError(InputError):
    """The voice id is unknown or the voice cannot be used here."""


class NoFaceError(InputError):
    """No face was found in the portrait."""

    def __init__(self, message: str | None = None):
        super().__init__(
            message
            or (
                "No face was found in the photo. Use a clear, well-lit portrait "
                "where one face looks roughly towards the camera, is not covered "
                "(no mask or hand over the mouth) and fills at least a tenth of "
                "the picture's width; or give the face box yourself (--box on the command line, "
                "box= in Python)."
            )
        )


class WeightsError(LipSyncError):
    """Model weights are missing, unreachable, corrupt or of the wrong kind."""


class EncodeError(LipSyncError):
    """ffmpeg failed to write the video."""


class ResourceError(LipSyncError):
    """The machine ran out of a resource (GPU memory, time)."""


class BackendError(LipSyncError):
    """An optional inference backend (int8) is not installed or cannot be used here."""


class Cancelled(LipSyncError):
    """Generation was stopped on request (a cancel token was set); nothing was left behind."""

    def __init__(self, message: str | None = None):
        super().__init__(message or "Generation was cancelled; nothing was saved.")
