"""The worker's side of a batch: one engine, one job at a time, into a work folder.

Used the same way by a local worker process and by a Ray actor; neither writes
into the output folder: they hand back an :class:`Outcome` and the driver
puts the files in place (see :mod:`lipsync.batch.runner`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LipSyncError
from .manifest import Job
from .results import jsonable

__all__ = ["EngineSettings", "Outcome", "make_engine", "set_threads", "execute", "worker_name"]

log = logging.getLogger("lipsync")


@dataclass(frozen=True)
class EngineSettings:
    """How each worker builds its :class:`~lipsync.LipSync` engine."""

    checkpoint: str | None = None
    device: str = "auto"
    precision: str = "auto"
    s3fd: str | None = None


@dataclass
class Outcome:
    """What a worker made of one job.

    ``files`` maps an output kind (``video``, ``hls_zip``, ``captions``) to a file
    in the work folder (local workers) or its bytes (Ray workers).
    """

    id: str
    status: str  #: "ok" or "error"
    error: str | None = None
    wall_s: float = 0.0
    result: dict | None = None  #: the Result's fields, JSON-ready
    files: dict[str, Path | bytes] = field(default_factory=dict)
    worker: str = ""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def set_threads(n: int) -> None:
    """Limit this process's compute threads (torch, OpenCV) to ``n``, so that
    several workers on one machine share its cores instead of fighting over them."""
    n = max(1, int(n))
    import torch

    torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover - a hard dependency
        pass


def make_engine(settings: EngineSettings):
    from ..pipeline import LipSync

    return LipSync(**dataclasses.asdict(settings))


def execute(engine, job: Job, workdir: Path, *, image: Path | None = None, audio: Path | None = None) -> Outcome:
    """Make ``job``'s outputs in ``workdir``. Errors the user can fix come back
    as an error Outcome; an interrupt (KeyboardInterrupt, SystemExit) propagates.

    Args:
        image, audio: local copies of the job's inputs (else the job's own paths).
    """
    from ..media.hls import package_hls

    t0 = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        out = workdir / f"{job.id}.mp4"
        result = engine.generate(**job.generate_kwargs(out, image=image, audio=audio))
        files: dict[str, Path | bytes] = {"video": Path(result.video)}
        if job.hls:
            hls_dir = workdir / "hls"
            zip_path = workdir / f"{job.id}_hls.zip"
            try:
                # a captioned job's package carries the subtitles rendition too
                package_hls(Path(result.video), hls_dir, zip_path=zip_path, captions=result.captions)
            finally:
                shutil.rmtree(hls_dir, ignore_errors=True)
            files["hls_zip"] = zip_path
        if result.captions:  # the WebVTT file, when the job asked for captions
            files["captions"] = Path(result.captions)
        return Outcome(job.id, "ok", wall_s=time.perf_counter() - t0, result=jsonable(result), files=files,
                       worker=worker_name())
    except LipSyncError as e:
        return Outcome(job.id, "error", error=str(e), wall_s=time.perf_counter() - t0, worker=worker_name())
    except Exception as e:  # noqa: BLE001 - one job's bug must not stop the others
        log.exception("job %s failed unexpectedly", job.id)
        return Outcome(job.id, "error", error=f"internal error: {type(e).__name__}: {e}",
                       wall_s=time.perf_counter() - t0, worker=worker_name())
