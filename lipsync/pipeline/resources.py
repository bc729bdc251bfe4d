"""The engine's heavy parts, each built lazily, once, under a lock of its own.

The model (with its int8 calibration) and the face detector load
independently: asking for the detector (a face preview) never waits behind a
model that is still loading, and the other way round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["Lazy", "load_generator", "load_detector"]

log = logging.getLogger("lipsync")

T = TypeVar("T")


class Lazy(Generic[T]):
    """A resource built on first use by ``build()``, once, under its own lock.

    Threads asking while it is being built wait for that one build; a build
    that raises leaves nothing cached, so the next call tries again. ``value``
    is an already-built resource (nothing is built then).
    """

    def __init__(self, build: Callable[[], T], value: T | None = None):
        self._build = build
        self._value = value
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Built already (asking for it returns at once)."""
        return self._value is not None

    @property
    def building(self) -> bool:
        """Being built right now by some thread (asking for it would wait)."""
        return self._value is None and self._lock.locked()

    def get(self) -> T:
        value = self._value
        if value is not None:
            return value
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value


def load_generator(checkpoint: str | Path | None, device: str, precision: str, fast: bool):
    """The Wav2Lip network on its device, in its precision (downloading the checkpoint if needed)."""
    from ..models import load_wav2lip
    from ..runtime.generator import Generator
    from ..weights import WAV2LIP_GAN, resolve_weights

    path = resolve_weights(WAV2LIP_GAN, checkpoint)
    generator = Generator(load_wav2lip(path), device=device, precision=precision, fast=fast)
    log.info("Wav2Lip loaded from %s on %s", path, generator.description)
    return generator


def load_detector(s3fd: str | Path | None):
    """The face detector: S3FD when its weights are available, else the offline one."""
    from ..face import make_detector

    return make_detector(s3fd, device="cpu")
