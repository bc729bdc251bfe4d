"""What the page says when something goes wrong: plain words for the visitor, the details for the log.

Library errors are written for end users, but some carry what only the
server's operator should see: ffmpeg's own error output (an
:class:`~lipsync.errors.EncodeError`) or a path on the server. The page shows
:func:`plain_message`; the handler logs the full text.
"""

from __future__ import annotations

import re

from lipsync import EncodeError, LipSyncError

__all__ = ["GENERIC_ERROR", "ENCODE_ERROR", "CANCELLED", "plain_message", "hide_paths"]

GENERIC_ERROR = (
    "Something went wrong on our side while making the video, and it has been logged. "
    "Please try again; if it keeps happening, try another photo or a shorter text."
)
ENCODE_ERROR = (
    "The video could not be encoded on the server, and the details have been logged. "
    "Please try again; if it keeps happening, try a shorter text or a smaller output size."
)
CANCELLED = "**Cancelled.** Nothing was saved; change what you like and press Generate again."

#: an absolute path of two parts or more, not inside a URL or a number ("6.4/255")
_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`:,;()<>]+/)+([^\s/'\"`:,;()<>]+)")


def hide_paths(text: str) -> str:
    """``text`` with every absolute path reduced to its file name (``/tmp/x/photo.jpg`` -> ``photo.jpg``)."""
    return _PATH.sub(lambda m: m.group(1), text)


def plain_message(error: LipSyncError) -> str:
    """The message for the page: the library's words without server paths; encoder failures in general terms."""
    if isinstance(error, EncodeError):
        return ENCODE_ERROR
    return hide_paths(str(error))
