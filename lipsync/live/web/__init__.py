"""The live avatar over WebRTC (aiortc): signalling routes on the app's own server and the page's "Live" tab.

Routes (``prefix`` defaults to ``/live``), all JSON:

* ``GET  /live/config``: ICE servers for the browser;
* ``GET  /live/capacity``: sessions running, the limit, and the measured frames per second;
* ``POST /live/offer`` ``{"sdp", "type": "offer", "mode": "mic"|"text", "image"?: data URL,
  "video"?: data URL, "consent"?: true, "framing"?: "call"|"full"}`` -> ``{"id", "sdp", "type": "answer", "mode": {...}, "max_s"}``;
  the face is the visitor's photo (``image``), a short video of them (``video``: up to 20 MB
  and 30 s, played back and forth), or the app's default portrait. A face of the
  visitor's own needs ``"consent": true``. The picture frames the head and shoulders
  (``call``, as a video call) or keeps the whole picture (``full``). 400 for a malformed offer, photo or video,
  403 from another site's page, 413 for a body too large, 415 for anything but JSON,
  429 (with ``Retry-After``) when the sessions are all taken, one address asks too
  often or already holds a session, 503 while the model loads;
* ``POST /live/{id}/say`` ``{"text", "voice"?}``: typed text, spoken sentence by sentence;
* ``GET /live/{id}``: what runs now (``mode.summary`` in plain words, the details beside) and counters;
* ``POST /live/{id}/interrupt``; ``DELETE /live/{id}``; unknown ids get 404;
* ``GET /live/static/live.js``: the tab's script.

Media: the server sends the avatar as one video and one audio track (the frames of
a :class:`~lipsync.live.LiveSession`, paced by it; the sound as mono Opus, one 40 ms packet a picture) and, in
``mic`` mode, receives the visitor's microphone and pushes what it hears (an energy
gate keeps room noise out). The page keeps a data channel open and pings every
second; a visitor that vanishes is freed within 5 s, and a session ends at its time
limit (``LIPSYNC_LIVE_MAX_S``) with a notice on that channel.

Settings: ``LIPSYNC_LIVE_SESSIONS`` (sessions at once: ``auto``, measured, or a number;
``GET /live/capacity`` reports it), ``LIPSYNC_LIVE_MAX_S`` (a
session's longest life, 0 = none), ``LIPSYNC_LIVE_ORIGINS`` (other sites whose pages may
start sessions), ``LIPSYNC_TRUST_PROXY`` (count visitors by ``X-Forwarded-For``; on
by itself on a Space), and the ICE servers (STUN, and TURN with short-lived credentials
from a shared secret: :mod:`lipsync.live.turn`).

On a Ray cluster (``install(app, get_engine, ray="HEAD:PORT")``, ``python app.py --ray HEAD:PORT``) the
routes and their checks stay here and each session runs on a worker of the cluster, whose machine sends
the media itself (:mod:`lipsync.live.web.remote`); a session whose worker died answers 410 with a plain line.

aiortc and av are imported only when a route is used (``pip install '.[live]'``).
"""

from __future__ import annotations

from .http import HTTPProblem
from .routes import install
from ..turn import ice_servers
from .server import KEEPALIVE_S, MAX_BODY_BYTES, LiveServer
from .tab import build_tab

__all__ = ["KEEPALIVE_S", "MAX_BODY_BYTES", "HTTPProblem", "LiveServer", "build_tab", "ice_servers", "install"]
