"""Workers on Ray: joining a cluster (or starting one on this machine), and where the workers go (one loaded engine
per GPU, or several sharing it; else one per node).

The live avatar's workers (:mod:`lipsync.live.web.remote`) are placed with :func:`plan_nodes`; the app's
Generate tab makes its clips on the same workers (:mod:`lipsync.cluster.clips`). ``ray`` is imported only
when a cluster is asked for (:func:`import_ray` says how to install it).
"""

from __future__ import annotations

from .nodes import Place, connect, env_workers_per_gpu, gpu_share, import_ray, plan_nodes

__all__ = ["Place", "connect", "env_workers_per_gpu", "gpu_share", "import_ray", "plan_nodes"]
