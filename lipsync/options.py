"""Every user-facing knob, as frozen dataclasses validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import InputError

__all__ = ["GenerateOptions", "X264_PRESETS"]

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)  # fmt: skip


def _ints(name: str, value, n: int) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {n} whole numbers.") from None
    if len(vals) != n or any(float(a) != float(b) for a, b in zip(vals, value)):
        raise InputError(f"{name} must be {n} whole numbers, got {value!r}.")
    return vals


@dataclass(frozen=True)
class GenerateOptions:
    """How a video is made from a portrait and a soundtrack.

    Attributes:
        fps: output frame rate (1-60; 25 is what the model was trained at).
        pads: pixels added to the detected face box: (top, bottom, left, right).
            The default grows it 10 px downwards to include the chin.
        box: (y1, y2, x1, x2) face box in pixels of the working image; skips detection.
        face_index: which face when there are several, 0 = largest.
        max_side: the portrait's long side is scaled down to this (0 = keep).
        batch_size: frames per forward pass (default per device).
        skip_silence: show the face at rest during pauses instead of running the network.
        frame_step: run the network on every n-th frame only and blend the frames in
            between (1 = every frame, exact; 2 halves the work on slow CPUs).
        crf, preset, encoder_threads: x264 quality, speed and threads (0 = auto).
        label: draw a small visible "AI-generated" label in a corner of the video.
        max_audio_s: longest soundtrack accepted from a file (seconds).
        max_audio_bytes: largest audio file accepted.
        timeout_s: longest the encoder may run before it is stopped.
        metadata: extra MP4 metadata tags.
    """

    fps: float = 25.0
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)
    box: tuple[int, int, int, int] | None = None
    face_index: int = 0
    max_side: int = 1280
    batch_size: int | None = None
    skip_silence: bool = True
    frame_step: int = 1
    crf: int = 20
    preset: str = "veryfast"
    encoder_threads: int = 0
    label: bool = True
    max_audio_s: float = 120.0
    max_audio_bytes: int = 50_000_000
    timeout_s: float = 1800.0
    metadata: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        fps = float(self.fps)
        if not math.isfinite(fps) or not 1 <= fps <= 60:
            raise InputError(f"fps must be between 1 and 60, got {self.fps}.")
        object.__setattr__(self, "fps", fps)
        pads = _ints("pads", self.pads, 4)
        if any(not -2000 <= p <= 2000 for p in pads):
            raise InputError("Each face padding must be between -2000 and 2000 pixels.")
        object.__setattr__(self, "pads", pads)
        if self.box is not None:
            box = _ints("box", self.box, 4)
            y1, y2, x1, x2 = box
            if not (0 <= y1 < y2 and 0 <= x1 < x2):
                raise InputError(f"box must be Y1 Y2 X1 X2 with 0 <= Y1 < Y2 and 0 <= X1 < X2, got {box}.")
            object.__setattr__(self, "box", box)
        if int(self.face_index) != self.face_index or self.face_index < 0:
            raise InputError("face_index must be 0 (the largest face) or a higher whole number.")
        if self.max_side and not 128 <= int(self.max_side) <= 4096:
            raise InputError("max_side must be 0 (keep) or between 128 and 4096 pixels.")
        if self.batch_size is not None and not 1 <= int(self.batch_size) <= 4096:
            raise InputError("batch_size must be between 1 and 4096.")
        if int(self.frame_step) != self.frame_step or not 1 <= self.frame_step <= 4:
            raise InputError("frame_step must be 1 (every frame), 2, 3 or 4.")
        if not 0 <= int(self.crf) <= 51:
            raise InputError("crf must be between 0 and 51.")
        if self.preset not in X264_PRESETS:
            raise InputError(f"preset must be one of {', '.join(X264_PRESETS)}.")
        if not (math.isfinite(float(self.max_audio_s)) and 1 <= float(self.max_audio_s) <= 3600):
            raise InputError("max_audio_s must be between 1 and 3600 seconds.")
        if not 1 <= int(self.max_audio_bytes) <= 2_000_000_000:
            raise InputError("max_audio_bytes must be between 1 byte and 2 GB.")
        if not (math.isfinite(float(self.timeout_s)) and float(self.timeout_s) > 0):
            raise InputError("timeout_s must be a positive number of seconds.")
        if not 0 <= int(self.encoder_threads) <= 64:
            raise InputError("encoder_threads must be between 0 (auto) and 64.")
