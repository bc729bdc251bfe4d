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

import importlib

#: where each public name lives; the modules load on first use, so :mod:`lipsync.webapp.messages`
#: (the one message policy, which the Live tab's routes use too) imports without Gradio
_WHERE = {
    "FIELDS": "form", "GENERIC_ERROR": "messages", "build_demo": "page", "cancel_generation": "jobs",
    "get_engine": "state", "launch": "server", "main": "server", "make_generate": "handlers",
    "make_generate_live": "handlers", "model_status": "state", "set_engine": "state",
    "start_model_loading": "state", "voice_choices": "voices", "voice_sample": "voices",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
