"""Every user-facing knob, and one request object, validated in one place.

:class:`GenerateOptions` holds how a video is made (frame rate, face box
padding, speech length, ...); :class:`Request` holds what it is made of (the
portrait, the soundtrack or the text, the output file) plus the options. Both
check themselves on construction and raise :class:`~lipsync.errors.InputError`
with a message for the user, so the library, the command line, the web app
and batch jobs all refuse bad input with the same words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import InputError
from .limits import MAX_CHARS

__all__ = [
    "GenerateOptions", "Request", "X264_PRESETS", "MAX_CHARS", "VIDEO_LOOPS", "LOOP_MODES", "DEFAULT_MOTION",
    "DEVICES", "PRECISIONS", "OPTION_GROUPS", "option_flag", "option_column", "ENHANCE_MODES",
]

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)
MIN_LENGTH_S = 0.2  #: shortest requested length (one 16-column mel window)
VIDEO_LOOPS = ("pingpong", "loop")  #: how a driving video shorter than the speech is extended
LOOP_MODES = VIDEO_LOOPS  #: the name :mod:`lipsync.sources` uses for them
DEVICES = ("auto", "cpu", "cuda")  #: where the network runs (``--device``)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")  #: how it computes (``--precision``; see :mod:`lipsync.runtime`)
DEFAULT_MOTION = 0.5  #: head motion for a photo, 0 (still) to 1
ENHANCE_MODES = ("auto", "off", "fast", "face")  #: how the mouth is restored (see :mod:`lipsync.enhance`)


#: the sections of ``lipsync generate --help``, in order, and what each holds
OPTION_GROUPS = {
    "speech": "speech (for --text)",
    "face": "face and motion",
    "network": "network",
    "video": "video and captions",
    "limits": "limits",
}


def _opt(default: Any, help: str, *, group: str, **meta: Any) -> Any:
    """A :class:`GenerateOptions` field with its user-facing description, the one source of
    the command line's flags (:mod:`lipsync.cli`) and the jobs file's columns (:mod:`lipsync.batch`).

    Metadata keys (all but ``help`` and ``group`` optional):
        help: one line for ``--help``, lower case, no final full stop, no default (added for you).
        group: a key of :data:`OPTION_GROUPS` (the ``--help`` section).
        flag: the command-line flag (default ``--`` + the name with ``-`` for ``_``).
        column: the jobs-file column (default the field's name).
        choices: the allowed values; metavar: how ``--help`` names the value (a tuple for several numbers).

    ``default`` may be a callable (a ``default_factory``); other keywords go to :func:`dataclasses.field`.
    """
    if group not in OPTION_GROUPS:
        raise ValueError(f"unknown option group {group!r}")
    kwargs = {k: meta.pop(k) for k in ("hash", "compare") if k in meta}
    metadata = {"help": help, "group": group, **meta}
    if callable(default):
        return field(default_factory=default, metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def option_flag(f) -> str:
    """The command-line flag of a :class:`GenerateOptions` field (a :class:`dataclasses.Field`)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def option_column(f) -> str:
    """The jobs-file column of a :class:`GenerateOptions` field."""
    return f.metadata.get("column") or f.name


def _whole(name: str, value: Any, lo: int, hi: int, hint: str = "") -> int:
    """``value`` as an int: whole floats (``1.0``) and numeric strings are accepted."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be a whole number, got {value!r}.")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}.") from None
    if not math.isfinite(f) or f != int(f):
        raise InputError(f"{name} must be a whole number, got {value!r}.")
    if not lo <= int(f) <= hi:
        raise InputError(hint or f"{name} must be between {lo} and {hi}, got {int(f)}.")
    return int(f)


def _number(name: str, value: Any, lo: float, hi: float, hint: str = "") -> float:
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, got {value!r}.")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(f) or not lo <= f <= hi:
        raise InputError(hint or f"{name} must be between {lo:g} and {hi:g}, got {value}.")
    return f


def _ints(name: str, value: Any, n: int, lo: int, hi: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)):
        value = str(value).replace(",", " ").split()
    try:
        vals = list(value)
    except TypeError:
        raise InputError(f"{name} must be {n} whole numbers.") from None
    if len(vals) != n:
        raise InputError(f"{name} must be {n} whole numbers, got {len(vals)}.")
    return tuple(_whole(name, v, lo, hi) for v in vals)


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "y", "on"):
            return True
        if v in ("0", "false", "no", "n", "off", ""):
            return False
        raise InputError(f"{name} must be yes or no, got {value!r}.")
    return bool(value)


@dataclass(frozen=True)
class GenerateOptions:
    """How a video is made from a portrait and a soundtrack (or a text).

    Numbers given as whole floats or strings (``face_index=1.0``, ``fps="25"``)
    are normalised; anything else out of range raises :class:`InputError`.

    Each field is declared with :func:`_opt`: its metadata (help, ``--help`` section, flag,
    jobs-file column) is the one description of the option, from which ``lipsync generate``
    makes its flags and ``lipsync batch`` its columns. A new field goes at the end, with
    its metadata; ``tests/test_cli.py`` checks that every field has a flag.

    Attributes:
        fps: output frame rate (1-60; 25 is what the model was trained at).
        pads: pixels added to the detected face box: (top, bottom, left, right).
            The default grows it 10 px downwards to include the chin.
        box: (y1, y2, x1, x2) face box in pixels of the working image; skips detection.
        face_index: which face when there are several, 0 = largest.
        max_side: the portrait's long side is scaled down to this (0 = keep).
        batch_size: frames per forward pass for this request (default per device).
        skip_silence: show the face at rest during pauses instead of running the network.
        frame_step: run the network on every n-th frame only and blend the frames in
            between (1 = every frame, exact; 2 halves the work on slow CPUs).
        voice: the voice for a text (``python -m lipsync voices``); None = the best available.
        length_s: the soundtrack's (and video's) duration; 0 keeps the natural length.
        loop: with a longer ``length_s``, repeat the speech instead of adding silence.
        max_chars: the text length limit.
        crf, preset, encoder_threads: x264 quality, speed and threads (0 = auto).
        label: draw a small visible "AI-generated" label in a corner of the video.
        captions: also write WebVTT captions of the spoken text beside the MP4
            (``talk.mp4`` -> ``talk.vtt``); needs a text (a recording has no words to show).
        burn_captions: draw the captions into the frames (bottom of the picture,
            clear of the face and the label); needs a text too.
        max_audio_s: longest soundtrack (file or ``length_s``) accepted, in seconds.
        max_audio_bytes: largest audio file accepted.
        motion: head motion for a photo, 0 (a still head, exactly as before) to 1
            (see :mod:`lipsync.motion`); a driving video moves by itself and ignores it.
        video_loop: a driving video shorter than the speech plays back and forth
            (``pingpong``, no jump) or from the start again (``loop``).
        max_video_s: longest driving video accepted, in seconds.
        max_video_bytes: largest driving video file accepted.
        timeout_s: longest the encoder may run before it is stopped.
        metadata: extra MP4 metadata tags.
        enhance: the mouth's restoration (see :mod:`lipsync.enhance`): ``auto`` (default) is
            ``face`` on a CUDA GPU with the restorer's weights, else ``fast``; ``fast`` adds the
            photo's own fine detail back where the skin did not change (a few ms per frame),
            ``face`` runs the GFPGAN v1.4 face restorer on the mouth (for a GPU; falls back to
            ``fast`` without its weights), ``off`` is the plain stretched crop.
        blink: natural eye blinks on a photo (see :mod:`lipsync.blink`); needs the offline
            eyelid landmark model, and is left out (the result says why) without it.
    """

    fps: float = _opt(25.0, "frame rate (1-60; the model was trained at 25)", group="video")
    pads: tuple[int, int, int, int] = _opt(
        (0, 10, 0, 0), "grow the face box by these pixels (the default adds the chin)", group="face",
        metavar=("T", "B", "L", "R"),
    )
    box: tuple[int, int, int, int] | None = _opt(
        None, "use this face box instead of detecting one", group="face", metavar=("Y1", "Y2", "X1", "X2")
    )
    face_index: int = _opt(0, "which face when there are several, 0 = the largest", group="face",
                         metavar="N")
    max_side: int = _opt(1280, "scale the portrait's long side down to this (0 = keep)", group="face", metavar="PX")
    batch_size: int | None = _opt(None, "frames per forward pass (default: per device)", group="network", metavar="N")
    skip_silence: bool = _opt(True, "show the face at rest during pauses instead of running the network",
                              group="network")
    frame_step: int = _opt(1, "run the network on every n-th frame and blend between (faster, softer)",
                           group="network", choices=(1, 2, 3, 4))
    voice: str | None = _opt(None, "voice id for --text (see: lipsync voices; default: the best available)",
                             group="speech")
    length_s: float = _opt(0.0, "make the soundtrack and video this long, 0 = the natural length", group="speech",
                           flag="--length", column="length", metavar="SECONDS")
    loop: bool = _opt(False, "with --length longer than the speech: repeat the speech instead of adding silence",
                      group="speech")
    max_chars: int = _opt(MAX_CHARS, "the text length limit", group="speech", metavar="N")
    crf: int = _opt(20, "x264 quality, 0-51 (lower is better and larger)", group="video", metavar="0-51")
    preset: str = _opt("veryfast", "x264 speed preset, ultrafast to veryslow", group="video", choices=X264_PRESETS,
                      metavar="PRESET")
    encoder_threads: int = _opt(0, "x264 threads (0 = auto)", group="video", metavar="N")
    label: bool = _opt(True, 'draw a small visible "AI-generated" label in a corner of the video', group="video")
    captions: bool = _opt(False, "with a text: also write WebVTT captions beside the video (OUT.vtt), "
                                 "and add them to the HLS package", group="video")
    burn_captions: bool = _opt(False, "with a text: draw the captions into the video's frames", group="video")
    max_audio_s: float = _opt(120.0, "longest soundtrack (or --length) accepted", group="limits",
                              flag="--max-audio-seconds", metavar="S")
    max_audio_bytes: int = _opt(50_000_000, "largest audio file accepted", group="limits", metavar="BYTES")
    motion: float = _opt(DEFAULT_MOTION, "head motion for a photo: 0 = still, 1 = the most", group="face",
                         metavar="0..1")
    video_loop: str = _opt("pingpong", "a driving video shorter than the speech plays back and forth (pingpong) "
                                       "or from the start again (loop)", group="face", choices=VIDEO_LOOPS)
    max_video_s: float = _opt(60.0, "longest driving video accepted", group="limits",
                              flag="--max-video-seconds", metavar="S")
    max_video_bytes: int = _opt(200_000_000, "largest driving video file accepted", group="limits", metavar="BYTES")
    timeout_s: float = _opt(1800.0, "longest the encoder may run before it is stopped", group="limits",
                            flag="--timeout", metavar="S")
    metadata: dict[str, str] = _opt(
        dict, "an MP4 metadata tag (repeat for more)", group="video", flag="--meta", metavar="KEY=VALUE",
        hash=False, compare=False,
    )
    enhance: str = _opt("auto", "the mouth's sharpness: fast adds the photo's own detail back, face runs the "
                                "GFPGAN restorer (for a GPU; downloads its weights), off the plain crop; auto is "
                                "face on a CUDA GPU with the restorer's weights, else fast",
                        group="face", choices=ENHANCE_MODES)
    blink: bool = _opt(True, "natural eye blinks on a photo (needs the offline eyelid landmark model)", group="face")

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("fps", _number("fps", self.fps, 1, 60, f"fps must be between 1 and 60, got {self.fps}."))
        put("pads", _ints("pads", self.pads, 4, -2000, 2000))
        if self.box is not None:
            box = _ints("box", self.box, 4, 0, 100_000)
            y1, y2, x1, x2 = box
            if not (y1 < y2 and x1 < x2):
                raise InputError(f"box must be Y1 Y2 X1 X2 with 0 <= Y1 < Y2 and 0 <= X1 < X2, got {box}.")
            put("box", box)
        put("face_index", _whole("face_index", self.face_index, 0, 99,
                                 "face_index must be 0 (the largest face) or a higher whole number."))
        max_side = _whole("max_side", self.max_side, 0, 4096)
        if max_side and max_side < 128:
            raise InputError("max_side must be 0 (keep) or between 128 and 4096 pixels.")
        put("max_side", max_side)
        if self.batch_size is not None:
            put("batch_size", _whole("batch_size", self.batch_size, 1, 4096))
        put("skip_silence", _flag("skip_silence", self.skip_silence))
        put("frame_step", _whole("frame_step", self.frame_step, 1, 4, "frame_step must be 1 (every frame), 2, 3 or 4."))
        voice = None if self.voice is None else str(self.voice).strip()
        put("voice", voice or None)
        put("max_audio_s", _number("max_audio_s", self.max_audio_s, 1, 3600,
                                   "max_audio_s must be between 1 and 3600 seconds."))
        length = self.length_s if self.length_s not in (None, "") else 0.0
        length = _number("length", length, 0, float("inf"),
                         f"The length must be 0 (natural length) or a positive number of seconds, got {self.length_s!r}.")
        if 0 < length < MIN_LENGTH_S:
            raise InputError(f"The length must be at least {MIN_LENGTH_S:g} seconds (or 0 for the natural length).")
        if length > self.max_audio_s:
            raise InputError(
                f"The requested length of {length:g} seconds is over the limit of {self.max_audio_s:g} seconds."
            )
        put("length_s", length)
        put("loop", _flag("loop", self.loop))
        put("max_chars", _whole("max_chars", self.max_chars, 1, 100_000))
        put("crf", _whole("crf", self.crf, 0, 51))
        if self.preset not in X264_PRESETS:
            raise InputError(f"preset must be one of {', '.join(X264_PRESETS)}.")
        put("encoder_threads", _whole("encoder_threads", self.encoder_threads, 0, 64,
                                      "encoder_threads must be between 0 (auto) and 64."))
        put("label", _flag("label", self.label))
        put("captions", _flag("captions", self.captions))
        put("burn_captions", _flag("burn_captions", self.burn_captions))
        put("max_audio_bytes", _whole("max_audio_bytes", self.max_audio_bytes, 1, 2_000_000_000,
                                      "max_audio_bytes must be between 1 byte and 2 GB."))
        motion = self.motion if self.motion not in (None, "") else 0.0
        put("motion", _number("motion", motion, 0, 1, f"motion must be between 0 (still) and 1, got {self.motion!r}."))
        loop_mode = str(self.video_loop).strip().lower().replace("-", "")
        if loop_mode not in VIDEO_LOOPS:
            raise InputError(f"video_loop must be one of {', '.join(VIDEO_LOOPS)}, got {self.video_loop!r}.")
        put("video_loop", loop_mode)
        put("max_video_s", _number("max_video_s", self.max_video_s, 1, 600,
                                   "max_video_s must be between 1 and 600 seconds."))
        put("max_video_bytes", _whole("max_video_bytes", self.max_video_bytes, 1, 4_000_000_000,
                                      "max_video_bytes must be between 1 byte and 4 GB."))
        put("timeout_s", _number("timeout_s", self.timeout_s, 1e-3, 1e7,
                                 "timeout_s must be a positive number of seconds."))
        enhance = str(self.enhance).strip().lower()
        if enhance not in ENHANCE_MODES:
            raise InputError(f"enhance must be one of {', '.join(ENHANCE_MODES)}, got {self.enhance!r}.")
        put("enhance", enhance)
        put("blink", _flag("blink", self.blink))

    def updated(self, **changes: Any) -> "GenerateOptions":
        """A copy with ``changes`` (None values are ignored), validated again."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"Unknown option(s): {', '.join(unknown)}.")
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **changes) if changes else self


@dataclass(frozen=True)
class Request:
    """One video to make: a portrait (or a video of the person), a soundtrack or a text, an output file and options.

    Checked on construction: exactly one of ``image`` and ``video``; exactly one of ``audio`` and ``text``; a voice only
    with a text; the text cleaned and within ``options.max_chars``; the voice
    known and usable here; the output an ``.mp4`` file name; input files present;
    captions only where there is a text (or a ``Speech`` that carries its phrases).

    Attributes:
        image: portrait path, bytes, PIL image or (H, W, 3) uint8 RGB array.
        out: the MP4 to write.
        audio: an audio file (any format ffmpeg reads) or a :class:`~lipsync.media.audio.Speech`.
        text: words to speak, cleaned (see :func:`lipsync.speech.clean_text`).
        options: :class:`GenerateOptions`.
        video: a driving video file (MP4, MOV, WebM, MKV) instead of ``image``.
    """

    image: Any
    out: Path
    audio: Any = None
    text: str | None = None
    options: GenerateOptions = field(default_factory=GenerateOptions)
    video: Any = None

    def __post_init__(self) -> None:
        opts = self.options if self.options is not None else GenerateOptions()
        if not isinstance(opts, GenerateOptions):
            raise InputError("options must be a GenerateOptions.")
        object.__setattr__(self, "options", opts)
        image = None if isinstance(self.image, str) and not self.image.strip() else self.image
        video = None if isinstance(self.video, str) and not self.video.strip() else self.video
        if image is None and video is None:
            raise InputError("Give a portrait photo (or a short video of the person).")
        if image is not None and video is not None:
            raise InputError("Give either a portrait photo or a video of the person, not both.")
        if isinstance(image, (str, Path)) and not Path(image).is_file():
            raise InputError(f"The image file {image} does not exist.")
        if video is not None:
            if not isinstance(video, (str, Path)):
                raise InputError(f"The video must be a file path, got {type(video).__name__}.")
            if not Path(video).is_file():
                raise InputError(f"The video file {video} does not exist.")
            video = Path(video)
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "video", video)
        text = self.text
        audio = self.audio if self.audio not in ("", None) else None
        if (audio is None) == (text is None):
            raise InputError("Give either an audio file or a text to speak (exactly one of the two).")
        if isinstance(audio, (str, Path)) and not Path(audio).is_file():
            raise InputError(f"The audio file {audio} does not exist.")
        object.__setattr__(self, "audio", audio)
        if text is not None:
            from .speech import tts

            text = tts.clean_text(str(text), opts.max_chars)
            tts.usable_voice(opts.voice)  # an unknown or unusable voice fails before any work
        elif opts.voice is not None:
            raise InputError("A voice can only be chosen for text, not for an audio file.")
        if (opts.captions or opts.burn_captions) and text is None and not getattr(audio, "phrases", None):
            raise InputError(
                "Captions need the text that is spoken: an audio recording has no words to show. "
                "Give a text instead, or leave captions off."
            )
        object.__setattr__(self, "text", text)
        if self.out is None or str(self.out).strip() == "":
            raise InputError("Give the output file name (ending in .mp4).")
        out = Path(self.out)
        if out.suffix.lower() != ".mp4":
            raise InputError(f"The output must be an .mp4 file, got {out.name}.")
        if out.is_dir():
            raise InputError(f"The output {out} is a folder; give a file name ending in .mp4.")
        object.__setattr__(self, "out", out)
