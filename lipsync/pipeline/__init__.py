"""The finished-clip recipe: prepare → render → result, on an engine of lazily loaded parts.

    >>> from lipsync.pipeline import LipSync, Request
    >>> result = LipSync().run(Request("me.jpg", "talk.mp4", text="Hello!"))

One room per concern:

* :mod:`.engine`: :class:`LipSync`, the engine and the recipe (``generate``,
  ``run``, ``stream``);
* :mod:`.resources`: the model and the face detector, each built lazily under
  its own lock;
* :mod:`.prepare`: everything before the network (:class:`Prepared`);
* :mod:`.render`: the writer, the queue that overlaps the network with the
  paste and the encoder, captions, and publishing;
* :mod:`.result`: :class:`Result`;
* :mod:`.progress`: the progress callback, cancel and the stage clock.
"""

from ..options import GenerateOptions, Request
from .engine import LipSync
from .prepare import Prepared
from .progress import Progress
from .result import Result

__all__ = ["LipSync", "Result", "Progress", "Prepared", "GenerateOptions", "Request"]
