"""The web app: a portrait and a few lines of text -> a talking, lip-synced video (Gradio).

One room per concern:

- :mod:`~lipsync.webapp.state`: the process's engine and the model's status line;
- :mod:`~lipsync.webapp.voices`: the voice list, notes and samples;
- :mod:`~lipsync.webapp.jobs`: work folders, the generation per page, Cancel, files Gradio still reads;
- :mod:`~lipsync.webapp.form`: the form's fields, once, and the handlers' signatures made from them;
- :mod:`~lipsync.webapp.handlers`: the page's streaming handler and the ``/generate`` API handler;
- :mod:`~lipsync.webapp.page`: the layout (a "Generate" tab, and room for more);
- :mod:`~lipsync.webapp.server`: the command line and the launch.

Scripts get a plain, non-streaming endpoint::

    from gradio_client import Client, handle_file
    video, hls_zip, summary, captions = Client("http://127.0.0.1:7860/").predict(
        image=handle_file("me.jpg"), text="Hello!", voice="espeak:en-us",
        consent=True, api_name="/generate")

A second tab and its HTTP routes (the Live tab)::

    demo = build_demo(extra_tabs=[("Live", lambda: live.web.build_tab(get_engine))])
    launch(demo, routes=[live.web.install])   # install(fastapi_app, get_engine), before serving

(:func:`main` does this by itself where :mod:`lipsync.live.web` is installed.)
"""

from __future__ import annotations

from .form import FIELDS
from .handlers import make_generate, make_generate_live
from .jobs import cancel_generation
from .messages import GENERIC_ERROR
from .page import build_demo
from .server import launch, main
from .state import get_engine, model_status, set_engine, start_model_loading
from .voices import voice_choices, voice_sample

__all__ = [
    "FIELDS", "GENERIC_ERROR", "build_demo", "cancel_generation", "get_engine", "launch", "main", "make_generate",
    "make_generate_live", "model_status", "set_engine", "start_model_loading", "voice_choices", "voice_sample",
]
