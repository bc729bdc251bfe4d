"""The "Live" tab on the Gradio page: its HTML and script are files of their own under ``static/``.

The HTML (``static/live.html``) is filled with the installed voices and the
consent statement of the Generate tab; the script (``static/live.js``, an ES
module) is served by :func:`~lipsync.live.web.install` at ``{prefix}/static/live.js``
and mounted on the tab's element when the page loads.
"""

from __future__ import annotations

import html
import json

from .routes import STATIC

__all__ = ["build_tab", "page_html"]


def page_html(voices: list[str], consent: str) -> str:
    """The tab's markup with ``voices`` in the picker and ``consent`` as the checkbox's statement."""
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in voices)
    text = (STATIC / "live.html").read_text(encoding="utf-8")
    return text.replace("__VOICES__", options).replace("__CONSENT__", html.escape(consent))


def build_tab(get_engine=None, *, prefix: str = "/live"):
    """The "Live" tab's components (call inside ``with gr.Tab("Live"):``); the routes come from
    :func:`~lipsync.live.web.install`.

    Returns the ``gr.HTML`` block (video, face picker and consent, start/stop, text box,
    voice picker) whose script does getUserMedia and the RTCPeerConnection against ``prefix``.
    """
    import gradio as gr

    from ...speech import list_voices
    from ...webapp.form import CONSENT_LABEL

    voices = [v.id for v in list_voices() if v.available]
    gr.Markdown(
        "Talk live: the avatar speaks as the sound arrives. Use your microphone (it says what you say) "
        "or type sentences (the chosen voice speaks them one by one). The face is the example portrait, "
        "or a photo or short video you choose (with the consent box ticked)."
    )
    loader = (f"import({json.dumps(prefix + '/static/live.js')})"
              f".then((m) => m.mount(element, {json.dumps(prefix)}));")
    return gr.HTML(page_html(voices, CONSENT_LABEL), js_on_load=loader)
