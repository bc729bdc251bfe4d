"""Live mode: a session that turns speech pushed in chunks into paced, lip-synced frames.

::

    with engine.live(image="portrait.jpg", fps=25) as session:   # or video="me.mp4" (lipsync.live.video)
        session.push(samples, sample_rate)      # any rate, int16 or float32, mono; returns at once
        for frame in session:                   # LiveFrame(pts, image, audio, sample_rate, speaking)
            ...

See :mod:`lipsync.live.session` for the timing rules. The transports
(:mod:`lipsync.live.web` for WebRTC, :mod:`lipsync.live.pipecat` for Pipecat)
import their third-party packages only when used.
"""

from __future__ import annotations

from .session import (
    LOOKAHEAD_S,
    MAX_CHUNK_S,
    LiveFrame,
    LiveMode,
    LiveSession,
    LiveStats,
    open_session,
)

__all__ = ["LOOKAHEAD_S", "MAX_CHUNK_S", "LiveFrame", "LiveMode", "LiveSession", "LiveStats", "open_session"]
