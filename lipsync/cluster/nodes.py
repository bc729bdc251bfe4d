"""Joining a Ray cluster and planning its workers: one per GPU (or several sharing it) where there are GPUs,
else one per node.

``ray`` is imported only inside these functions (and only when a cluster is asked for).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import LipSyncError

log = logging.getLogger("lipsync")

__all__ = ["Place", "connect", "env_workers_per_gpu", "gpu_share", "import_ray", "plan_nodes"]


def import_ray():
    """The ``ray`` module, or a LipSyncError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise LipSyncError(
            "Ray is not installed. Install it with: pip install '.[ray]' from the project's folder (or pip install "
            "'ray[default]>=2.60,<3'). The name lipsync on PyPI belongs to another project."
        ) from None
    return ray


def connect(address: str) -> bool:
    """Join the cluster at ``address`` (``HOST:PORT`` of its head, or ``auto``), or start a Ray instance of this
    process's own on this machine (``local``); True if this call joined or started it, False if this process
    was connected already.

    Raises:
        LipSyncError: Ray missing, or the cluster cannot be reached (saying how to start one).
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=True)
    if address == "local":
        # its workers must import lipsync from where this process does (a checkout is not installed)
        here = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)
        return True
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise LipSyncError(
            f"Could not join the Ray cluster at {address}: {str(e).strip().splitlines()[0] if str(e).strip() else e}. "
            "Start one with 'ray start --head --port=6379' on one machine and 'ray start --address=HEAD:6379' on the "
            "others (with the same RAY_AUTH_TOKEN where the cluster checks one), then give HEAD:6379 here; or give "
            "--ray alone for a Ray instance on this machine only."
        ) from None
    return True


def gpu_share(per_gpu: int) -> float:
    """Each worker's share of a GPU that ``per_gpu`` workers share: 1/``per_gpu``, rounded down to Ray's step of
    1/10,000 of a GPU (three shares of 0.3333 fit in one; three of a third might not)."""
    return 1 if per_gpu == 1 else math.floor(10_000 / per_gpu) / 10_000


def env_workers_per_gpu() -> int:
    """``$LIPSYNC_WORKERS_PER_GPU``: worker processes that share each GPU (default 1)."""
    env = os.environ.get("LIPSYNC_WORKERS_PER_GPU", "").strip()
    if not env:
        return 1
    if env.isdigit() and int(env) > 0:
        return int(env)
    log.warning("LIPSYNC_WORKERS_PER_GPU=%r is not a positive whole number; using 1", env)
    return 1


@dataclass(frozen=True)
class Place:
    """Where one worker goes: a node (Ray's hex id and address) and what it reserves there."""

    node_id: str
    address: str
    #: CPUs Ray reserves for it (a GPU worker's network threads; a CPU machine's one worker computes on all its cores)
    num_cpus: float
    num_gpus: float  #: its share of a GPU: 1, or 1/N where N workers share one
    slot: int = 0  #: which of the node's workers
    #: the node's CPU cores that are this worker's to encode its sessions' pictures on (its share of the
    #: machine: a GPU worker's network runs on the GPU, and every session's picture is encoded on a core)
    cores: float = 1.0

    @property
    def key(self) -> str:
        return f"{self.node_id}:{self.slot}"

    @property
    def threads(self) -> int:
        """The network's compute threads: a GPU worker's CPUs; a CPU worker, alone on its machine, its cores (it
        reserves only ``num_cpus`` of Ray's count, but a network on one thread of a many-core machine holds a
        fraction of the sessions)."""
        return max(1, int(self.num_cpus if self.num_gpus else self.cores))


def plan_nodes(nodes: list[dict], *, device: str = "auto", cpus_per_worker: float = 1,
               per_gpu: int = 1) -> list[Place]:
    """The workers for the live nodes of ``ray.nodes()``.

    Where any node has a GPU (and ``device`` is not ``cpu``), ``per_gpu`` workers per GPU (each
    a process with its own engine and 1/``per_gpu`` of the GPU), on the GPU nodes only (a machine
    without one, such as the app's own, serves nobody slowly); otherwise one worker per node that
    has ``cpus_per_worker`` CPUs. Each worker's :attr:`Place.cores` is its even share of its
    node's CPUs.
    """
    if int(per_gpu) != per_gpu or per_gpu < 1:
        raise LipSyncError(f"Workers per GPU must be a whole number of at least 1, not {per_gpu}.")
    per_gpu = int(per_gpu)
    alive = [n for n in nodes if n.get("Alive", n.get("alive", False))]
    gpus = {n["NodeID"]: int(n.get("Resources", {}).get("GPU", 0)) for n in alive}
    use_gpus = device != "cpu" and any(gpus.values())
    places = []
    for n in alive:
        address = n.get("NodeManagerAddress", "")
        cpus = float(n.get("Resources", {}).get("CPU", 0))
        if use_gpus:
            count = gpus[n["NodeID"]] * per_gpu
            places += [Place(n["NodeID"], address, cpus_per_worker, gpu_share(per_gpu), k, cpus / count if cpus else 1.0)
                       for k in range(count)]
        elif cpus >= cpus_per_worker:
            places.append(Place(n["NodeID"], address, cpus_per_worker, 0, 0, max(cpus, 1.0)))
    return places
