"""Joining a Ray cluster and planning its workers: one per GPU where there are GPUs, else one per node.

``ray`` is imported only inside these functions (and only when a cluster is asked for).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import LipSyncError

log = logging.getLogger("lipsync")

__all__ = ["Place", "connect", "import_ray", "plan_nodes"]


def import_ray():
    """The ``ray`` module, or a LipSyncError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise LipSyncError(
            "Ray is not installed. Install it with: pip install 'lipsync[ray]' (or pip install 'ray[default]')."
        ) from None
    return ray


def connect(address: str) -> bool:
    """Join the cluster at ``address`` (``HOST:PORT`` of its head, or ``auto``); True if this call joined it,
    False if this process was connected already.

    Raises:
        LipSyncError: Ray missing, or the cluster cannot be reached (saying how to start one).
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise LipSyncError(
            f"Could not join the Ray cluster at {address}: {str(e).strip().splitlines()[0] if str(e).strip() else e}. "
            "Start one with 'ray start --head --port=6379' on one machine and 'ray start --address=HEAD:6379' on the "
            "others (with the same RAY_AUTH_TOKEN where the cluster checks one), then give HEAD:6379 here."
        ) from None
    return True


@dataclass(frozen=True)
class Place:
    """Where one worker goes: a node (Ray's hex id and address) and what it reserves there."""

    node_id: str
    address: str
    num_cpus: float
    num_gpus: int
    slot: int = 0  #: which of the node's workers (one per GPU)

    @property
    def key(self) -> str:
        return f"{self.node_id}:{self.slot}"


def plan_nodes(nodes: list[dict], *, device: str = "auto", cpus_per_worker: float = 1) -> list[Place]:
    """The workers for the live nodes of ``ray.nodes()``.

    Where any node has a GPU (and ``device`` is not ``cpu``), one worker per GPU, on the
    GPU nodes only (a machine without one, such as the app's own, serves nobody slowly);
    otherwise one worker per node that has ``cpus_per_worker`` CPUs.
    """
    alive = [n for n in nodes if n.get("Alive", n.get("alive", False))]
    gpus = {n["NodeID"]: int(n.get("Resources", {}).get("GPU", 0)) for n in alive}
    use_gpus = device != "cpu" and any(gpus.values())
    places = []
    for n in alive:
        address = n.get("NodeManagerAddress", "")
        if use_gpus:
            places += [Place(n["NodeID"], address, cpus_per_worker, 1, k) for k in range(gpus[n["NodeID"]])]
        elif n.get("Resources", {}).get("CPU", 0) >= cpus_per_worker:
            places.append(Place(n["NodeID"], address, cpus_per_worker, 0))
    return places
