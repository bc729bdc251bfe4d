"""What a finished run made: :class:`Result`, built from the prepared request and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..enhance import describe as describe_enhance
from ..face import FaceBox
from .prepare import Prepared
from .progress import Clock

__all__ = ["Result", "make_result"]


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
    #: seconds per stage; "stage.part" keys say where a stage went (a video's face stage:
    #: face.load (the detector, on first use), face.decode, face.spool, face.detect, face.track;
    #: lipsync.network, lipsync.paste,
    #: lipsync.write, the network on a thread of its own beside the other two)
    timings: dict[str, float] = field(default_factory=dict)
    speaking_frames: int = 0  #: frames the network ran on (others were pauses)
    voice: str | None = None  #: the voice id that spoke the text (None for given audio)
    source: str = "photo"  #: what the face came from: "photo" or "video"
    motion: float = 0.0  #: head motion applied (0 for a still photo and for a video)
    face_frames: int = 0  #: output frames that show a face (all of them for a photo)
    captions: Path | None = None  #: the WebVTT captions beside the MP4 (with ``captions=True``)
    #: share (0-1) of the "lipsync" stage the network spent computing; the rest it waited
    #: for the paste and the encoder (None: the network ran apart, see ``LipSync.run(predict=)``)
    network_busy: float | None = None
    enhance: str = ""  #: the mouth's restoration that ran (see :mod:`lipsync.enhance`)
    blink: str = ""  #: the blinks made, or why there were none (see :mod:`lipsync.blink`)

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


def make_result(parts: Prepared, clock: Clock | None, device: str, captions: Path | None = None) -> Result:
    """The :class:`Result` of a rendered request."""
    opts = parts.request.options
    n = len(parts.mels)
    h, w = parts.source.height, parts.source.width
    timings = dict(clock.timings) if clock else {}
    busy = None
    if clock and "network" not in timings and timings.get("lipsync", 0.0) > 0:
        busy = round(min(1.0, clock.network_busy_s / timings["lipsync"]), 4)
    return Result(
        video=parts.request.out,
        duration_s=n / opts.fps,
        frames=n,
        fps=opts.fps,
        width=w,
        height=h,
        box=parts.box,
        detector=parts.detector,
        device=device,
        audio_duration_s=parts.speech.duration_s,
        sample_rate=parts.speech.sample_rate,
        timings=timings,
        speaking_frames=int(n if parts.weights is None else np.count_nonzero(parts.weights > 0)),
        voice=parts.voice,
        source=parts.source.kind,
        motion=float(opts.motion) if parts.motion is not None and not parts.motion.still else 0.0,
        face_frames=parts.source.face_frames,
        captions=captions,
        network_busy=busy,
        enhance=parts.enhance_note or describe_enhance(opts.enhance, parts.device),
        blink=parts.blink_note,
    )


def stages_text(timings: dict[str, float]) -> str:
    """``timings`` for people: "face 0.62s (decode 0.20s, ...), lipsync 3.1s (...)"."""
    parts: dict[str, list[str]] = {}
    for k, v in timings.items():
        stage, _, part = k.partition(".")
        if part:
            parts.setdefault(stage, []).append(f"{part} {v:.2f}s")
    return ", ".join(
        f"{k} {v:.2f}s" + (f" ({', '.join(parts[k])})" if k in parts else "")
        for k, v in timings.items() if "." not in k
    )
