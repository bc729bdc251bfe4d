"""The form: every field of a Generate, defined once.

Each :class:`Field` names a parameter of the API, its type and default, and
makes its widget. The page lays the widgets out; both handlers (the page's
streaming one and the ``/generate`` endpoint) take their signatures from
:data:`FIELDS` through :func:`signature`, and :func:`to_request` turns the
values into one checked :class:`~lipsync.Request`. A new field is one entry here
(plus one place on the page, and what it means in :func:`to_request`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from lipsync import GenerateOptions, Request
from lipsync.options import DEFAULT_MOTION, MAX_CHARS

__all__ = ["Field", "FIELDS", "FIELD_NAMES", "signature", "bind", "to_request", "check_first", "CONSENT_LABEL",
           "MAX_LENGTH_S", "PortraitUpload"]

#: the slider goes as far as the library allows
MAX_LENGTH_S = int(GenerateOptions().max_audio_s)
CONSENT_LABEL = (
    "I have the right to use this person's likeness (it is me, or I have their permission), "
    "and I will not use the video to deceive anyone."
)
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Field:
    """One form field: the API parameter and the widget that fills it.

    Attributes:
        name: the parameter's name (in the API, and in both handlers).
        annotation: its type, as the API describes it.
        default: the API's default (:data:`REQUIRED` for none); the widget may start elsewhere.
        widget: makes the widget, called with the page's context (``voices``, ``default_voice``,
            ``frame_step``) inside the layout block where it goes.
    """

    name: str
    annotation: Any
    default: Any
    widget: Callable[[dict], gr.components.Component]


class PortraitUpload(gr.Image):
    """``gr.Image`` that hands the handler the uploaded file untouched.

    Stock ``gr.Image`` decodes every upload with Pillow before the handler
    runs (any format, converted to RGB, 16-bit clipped); a broken file then
    fails inside Gradio with a bare error. Here the file goes, as is, to
    :func:`lipsync.load_image`, the one place that opens untrusted images.
    """

    def preprocess(self, payload):
        return None if payload is None else str(payload.path)

    def get_block_name(self) -> str:
        return "image"


def _portrait(ctx):
    return PortraitUpload(
        type="filepath", label="Portrait (one face, looking at the camera)", sources=["upload", "clipboard"],
        height=320, elem_id="portrait",
    )


def _pad(label, value, elem_id=None):
    return lambda ctx: gr.Number(value, label=label, precision=0, minimum=-200, maximum=200, elem_id=elem_id)


FIELDS: tuple[Field, ...] = (
    Field("image", str | None, REQUIRED, _portrait),
    Field("text", str, REQUIRED, lambda ctx: gr.Textbox(
        label="Text to speak", lines=4, max_lines=12, elem_id="text",
        placeholder="Type what the person should say…", render=False)),
    Field("voice", str | None, REQUIRED, lambda ctx: gr.Dropdown(
        choices=ctx["voices"], value=ctx["default_voice"], label="Voice", elem_id="voice", scale=4,
        allow_custom_value=True,  # an unknown id reaches the library, which says what to do
        info="Voices that cannot run here are listed as unavailable, with the reason.")),
    Field("length_s", float, 0.0, lambda ctx: gr.Slider(
        0, MAX_LENGTH_S, value=0, step=1, label="Video length (seconds)", elem_id="length",
        info="0 = as long as the speech. Longer: the video continues after the speech "
        "(or repeats it, with “Loop”); shorter: the speech is cut.")),
    Field("loop", bool, False, lambda ctx: gr.Checkbox(
        False, label="Loop: repeat the speech to fill the length", elem_id="loop")),
    Field("audio", str | None, None, lambda ctx: gr.Audio(
        type="filepath", sources=["upload", "microphone"], elem_id="audio",
        label="Speech (WAV, MP3, M4A, OGG, FLAC): replaces the text and voice")),
    Field("consent", bool, False, lambda ctx: gr.Checkbox(False, label=CONSENT_LABEL, elem_id="consent")),
    Field("pad_top", float, 0, _pad("Face padding top (px)", 0)),
    Field("pad_bottom", float, 10, _pad("bottom (px)", 10)),
    Field("pad_left", float, 0, _pad("left (px)", 0)),
    Field("pad_right", float, 0, _pad("right (px)", 0)),
    Field("face_index", float, 0, lambda ctx: gr.Number(
        0, label="Which face (0 = the largest)", precision=0, minimum=0, maximum=20, elem_id="face-index")),
    Field("fps", float, 25, lambda ctx: gr.Slider(
        10, 60, value=25, step=1, label="Frames per second (the model was trained at 25)", elem_id="fps")),
    Field("max_side", float, 1280, lambda ctx: gr.Dropdown(
        choices=[("Keep the photo's size", 0), ("480 px", 480), ("720 px", 720), ("1080 px", 1080),
                 ("1280 px", 1280), ("1920 px", 1920)],
        value=1280, label="Output size: longest side at most", elem_id="max-side")),
    Field("frame_step", float, 1, lambda ctx: gr.Radio(
        choices=[("Best: the network draws every frame", 1),
                 ("Faster: every 2nd frame, blended between (about 2x faster)", 2)],
        value=ctx["frame_step"], label="Speed", elem_id="speed",
        info="On a CPU without a GPU the faster setting is the default. By default a CPU runs "
        "the network in int8 where it matches float32 closely for this model (the summary says).")),
    Field("burn_captions", bool, False, lambda ctx: gr.Checkbox(
        False, label="Burn the captions into the video (they are always in the player and the HLS package)",
        elem_id="burn-captions")),
    Field("video", str | None, None, lambda ctx: gr.File(
        label="Video (MP4, MOV, WebM, MKV; up to 60 s): replaces the photo; looped or cut to the speech",
        file_types=[".mp4", ".mov", ".webm", ".mkv"], type="filepath", elem_id="video-source")),
    Field("motion", float, DEFAULT_MOTION, lambda ctx: gr.Slider(
        0, 1, value=DEFAULT_MOTION, step=0.05, elem_id="motion",
        label="Head motion for a photo (0 = a still head; a video moves by itself)")),
    Field("enhance", str, "auto", lambda ctx: gr.Radio(
        choices=[("Auto: the face restorer on a GPU, else sharp", "auto"),
                 ("Sharp: the photo's own detail added back around the mouth", "fast"),
                 ("Plain: the network's mouth, stretched", "off")],
        value="auto", label="Mouth", elem_id="enhance")),
    Field("blink", bool, True, lambda ctx: gr.Checkbox(
        True, label="Eyes blink (a photo)", elem_id="blink")),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)


def signature(*extra: inspect.Parameter) -> inspect.Signature:
    """The handlers' signature: the fields in order, then ``extra`` (Gradio's request, progress)."""
    params = [
        inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=f.annotation)
        for f in FIELDS
    ]
    return inspect.Signature([*params, *extra])


def with_signature(fn: Callable, sig: inspect.Signature) -> Callable:
    """Give ``fn(*args, **kwargs)`` the signature ``sig``: Gradio and its API description read it."""
    fn.__signature__ = sig
    fn.__annotations__ = {p.name: p.annotation for p in sig.parameters.values() if p.annotation is not p.empty}
    return fn


def bind(sig: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The values of one call, by name, defaults filled in (a wrong call raises TypeError, as Python does)."""
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def check_first(values: dict[str, Any]) -> None:
    """What a person must fix before anything runs."""
    if not values["consent"]:
        raise gr.Error(
            "Please tick the box confirming you have the right to use this person's likeness.",
            title="Consent needed", print_exception=False,
        )
    if not values["image"] and not values["video"]:
        raise gr.Error("Please upload a portrait photo (or click the example portrait).", print_exception=False)


def to_request(values: dict[str, Any], workdir: Path) -> Request:
    """The fields' values as one checked request (captions whenever there is a text)."""
    v = values
    uses_text = not v["audio"]
    pads = (v["pad_top"], v["pad_bottom"], v["pad_left"], v["pad_right"])
    options = GenerateOptions(
        fps=v["fps"],
        pads=tuple(p or 0 for p in pads),
        face_index=v["face_index"] or 0,
        max_side=v["max_side"] or 0,
        frame_step=v["frame_step"] or 1,
        voice=(v["voice"] or None) if uses_text else None,
        length_s=v["length_s"] or 0.0,
        loop=bool(v["loop"]),
        max_chars=MAX_CHARS,
        captions=uses_text,
        burn_captions=bool(v["burn_captions"]) and uses_text,
        motion=DEFAULT_MOTION if v["motion"] is None else v["motion"],
        enhance=v["enhance"] or "auto",
        blink=True if v["blink"] is None else bool(v["blink"]),
    )
    return Request(
        image=None if v["video"] else v["image"], out=workdir / "lipsync.mp4", audio=v["audio"] or None,
        text=(v["text"] or "") if uses_text else None, options=options, video=v["video"] or None,
    )
