"""Many videos from one jobs file, on this machine or on a Ray cluster.

    >>> from lipsync.batch import run_batch
    >>> summary = run_batch("jobs.csv", "out/", workers=2)            # local processes
    >>> summary = run_batch("jobs.csv", "out/", ray=True, ray_address="auto")  # a Ray cluster

See :mod:`lipsync.batch.manifest` for the jobs file, :mod:`lipsync.batch.runner`
for what "finished" means and how re-runs resume, :mod:`lipsync.batch.local` and
:mod:`lipsync.batch.ray_backend` for the workers. ``ray`` is imported only when a
Ray run is asked for.
"""

from .execute import EngineSettings, Outcome
from .manifest import Job, Manifest, RowError, load_manifest
from .results import OUTPUT_NAMES, RESULTS_NAME
from .runner import EXIT_JOBS_FAILED, BatchSummary, Interrupted, run_batch

__all__ = [
    "run_batch",
    "BatchSummary",
    "Interrupted",
    "EXIT_JOBS_FAILED",
    "EngineSettings",
    "Outcome",
    "Job",
    "Manifest",
    "RowError",
    "load_manifest",
    "OUTPUT_NAMES",
    "RESULTS_NAME",
]
