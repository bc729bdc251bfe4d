"""Live mode: a session that turns speech pushed in chunks into paced, lip-synced frames.

::

    with engine.live(image="portrait.jpg", fps=25) as session:   # or video="me.mp4" (lipsync.live.video)
        session.push(samples, sample_rate)      # any rate, int16 or float32, mono; returns at once
        for frame in session:                   # LiveFrame(pts, image, audio, sample_rate, speaking)
            ...

One room per concern: :mod:`~lipsync.live.session` (the session and its pacing),
:mod:`~lipsync.live.timeline` (each frame's slot of sound; the timing rules),
:mod:`~lipsync.live.audio` (the sample queue, the chunk checks, the mel windows),
:mod:`~lipsync.live.speed` (the speed policy), :mod:`~lipsync.live.pose` (the head's
sway), :mod:`~lipsync.live.photo` and :mod:`~lipsync.live.video` (the face, from a
photo or a driving video), :mod:`~lipsync.live.look` (blinks and the mouth's
enhancement). The transports (:mod:`lipsync.live.web` for WebRTC,
:mod:`lipsync.live.pipecat` for Pipecat) import their third-party packages only when used.
"""

from __future__ import annotations

from .session import (
    LOOKAHEAD_S,
    MAX_CHUNK_S,
    SAMPLE_RATE,
    LiveFrame,
    LiveMode,
    LiveSession,
    LiveStats,
    open_session,
)

__all__ = ["LOOKAHEAD_S", "MAX_CHUNK_S", "SAMPLE_RATE", "LiveFrame", "LiveMode", "LiveSession", "LiveStats",
           "open_session"]
