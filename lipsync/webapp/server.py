"""The command line and the launch: the engine's flags, the optional tabs and routes, then serve.

Routes (``install(fastapi_app, get_engine)`` callables) are installed on
Gradio's FastAPI app in its lifespan start-up, before the server accepts a
request, so they work the same with ``--share`` and behind a Space's proxy.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import importlib
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence

import gradio as gr

from lipsync.cli import add_engine_args, engine_settings
from lipsync.memory import limit_malloc_arenas

from . import handlers, jobs, state, voices
from .page import CSS, PAGE_JS, build_demo

__all__ = ["main", "launch", "lifespan_with", "parser", "default_tabs", "default_routes", "OMP_ENV"]

log = logging.getLogger("lipsync.app")

#: OpenMP threads that wait by sleeping rather than spinning. The network's threads share the
#: CPU with the encoder, Gradio's handling of each preview segment (and, on a small machine, the
#: browser); spinning threads then burn the cores the others need. Measured on 2 cores with the
#: page open in Chromium: the lip-sync stage of a 10.8 s clip took 5.5-5.7 s spinning and 3.7-3.8 s
#: sleeping, with less CPU time in all (see README, Speed). Set before torch loads; an explicit
#: OMP_WAIT_POLICY in the environment wins.
OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

#: On a stop (SIGTERM, Ctrl+C), the requests still running get this long to finish, then they are cancelled and
#: the routes close (the Live tab's sessions, their threads and video spools): Gradio gives the server 5 s in all
#: before the process exits. (Each open page's heartbeat stream, which never finishes by itself, is ended first:
#: before, one open page meant 5 s to stop, and the routes never closed.)
STOP_GRACE_S = 2.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Talking-portrait web app (lipsync + Gradio).")
    p.add_argument("--host", default=None, help="address to listen on (default $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--share", action="store_true", help="also make a temporary public link (needs internet)")
    p.add_argument("--ray", metavar="ADDRESS", nargs="?", const="local", default=None,
                   help="run the Live tab's sessions and the Generate tab's clips on the workers of a Ray "
                        "cluster: its head's HOST:PORT or auto (default $LIPSYNC_RAY; none: in this process); "
                        "--ray alone starts a Ray instance on this machine only (with --workers-per-gpu: several "
                        "processes on each of its GPUs). See the README's 'Live on a Ray cluster'.")
    p.add_argument("--workers-per-gpu", metavar="N", type=_positive, default=None,
                   help="with --ray: worker processes per GPU, each with its own model, sharing the GPU "
                        "(default $LIPSYNC_WORKERS_PER_GPU, else 1); one process's picture work limits the "
                        "live sessions it holds, so several use more of a GPU machine's cores")
    add_engine_args(p)
    return p


def _optional(module: str, name: str):
    """``module.name`` where that module is part of this install, else None (the Live tab comes later)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None
        raise
    return getattr(mod, name, None)


def default_tabs() -> list[tuple[str, Callable[[], object]]]:
    """The tabs after "Generate": "Live" where :mod:`lipsync.live.web` is installed."""
    build_tab = _optional("lipsync.live.web", "build_tab")
    return [("Live", lambda: build_tab(state.get_engine))] if build_tab else []


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def default_routes(ray: str | None = None, settings: dict | None = None, **cluster) -> list[Callable]:
    """The HTTP routes to install before serving: the Live tab's signalling where it is installed.

    With ``ray`` (a cluster's head, ``HOST:PORT``) its sessions run on the cluster's workers, each
    building its engine from ``settings`` (``checkpoint``, ``s3fd``, ``device``, ``precision``), and
    the Generate tab's clips are made there too (:class:`~lipsync.cluster.clips.ClusterClips`);
    ``cluster`` goes to :class:`~lipsync.live.web.remote.RemoteLive` (``workers_per_gpu``...).
    """
    install = _optional("lipsync.live.web", "install")
    if not install:
        return []
    if ray:
        return [functools.partial(install_on_cluster, install, ray, settings, **cluster)]
    return [install]


class _OnCluster:
    """The live routes' server on a cluster, and the Generate tab's clips made on its workers until it closes."""

    def __init__(self, server):
        from lipsync.cluster.clips import ClusterClips

        self.server = server
        state.set_clip_engine(ClusterClips(server))

    async def aclose(self) -> None:
        state.set_clip_engine(None)
        await self.server.aclose()


def install_on_cluster(install, ray: str, settings: dict | None, app, get_engine, **options):
    """Install the live routes with their sessions on the cluster at ``ray``; Generate's clips go there too.
    ``options`` go to ``install``."""
    from lipsync.batch.execute import EngineSettings

    return _OnCluster(install(app, get_engine, ray=ray, settings=EngineSettings(**(settings or {})), **options))


def lifespan_with(routes: Sequence[Callable]):
    """A FastAPI lifespan that installs ``routes`` at start-up and closes what they return (``aclose``) at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        installed = [install(app, state.get_engine) for install in routes]
        try:
            yield
        finally:  # the Live tab's sessions end with the app: their tracks, threads and video spools go
            for part in installed:
                close = getattr(part, "aclose", None)
                if close is not None:
                    await close()
            log.info("stopped: the routes are closed")

    return lifespan


def launch(demo: gr.Blocks, *, routes: Sequence[Callable] = (), share: bool = False, **kwargs):
    """Serve ``demo``; each of ``routes`` is called as ``install(fastapi_app, get_engine)`` before serving.

    ``share`` asks Gradio for a public link too, and serves locally only when none can be made.
    Other keyword arguments go to :meth:`gradio.Blocks.launch`. Returns when the server stops
    (:data:`STOP_GRACE_S`), or at once with ``prevent_thread_lock=True`` (then ``demo.close()`` stops it).
    """
    kwargs.setdefault("app_kwargs", {})["lifespan"] = lifespan_with(routes)
    wait = not kwargs.pop("prevent_thread_lock", False)
    if share:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                served = demo.launch(share=True, prevent_thread_lock=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - no network: serve locally instead
            log.warning("could not create a share link (%s); serving locally only", e)
            demo.close()
            kwargs["app_kwargs"]["lifespan"] = lifespan_with(routes)
            share = False
    if not share:
        served = demo.launch(share=False, prevent_thread_lock=True, **kwargs)
    demo.server.config.timeout_graceful_shutdown = STOP_GRACE_S  # read when the server stops
    if not wait:  # the caller stops it (demo.close())
        return served
    try:
        while demo.is_running:
            time.sleep(0.1)
    except KeyboardInterrupt:  # (SIGTERM raises it too) Gradio's own wait would stop the server only, and
        log.info("stopping")  # the pages' heartbeat streams would hold it: closing the app ends them first
        demo.close()
    return served


def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt  # launch() closes the app on it; then atexit removes request folders


def _remove_files() -> None:
    jobs.remove_workdirs()
    voices.remove_process_dir()


def main(argv: list[str] | None = None) -> None:
    """``python app.py [--host H] [--port P] [--share] [--ray [HEAD:PORT] [--workers-per-gpu N]] [--checkpoint C]
    [--device D] [--precision P]``."""
    for key, value in OMP_ENV.items():
        os.environ.setdefault(key, value)
    p = parser()
    args = p.parse_args(argv)
    ray = args.ray or os.environ.get("LIPSYNC_RAY", "").strip() or None
    if args.workers_per_gpu is not None and not ray:
        p.error("--workers-per-gpu places workers with Ray: add --ray (a Ray instance on this machine) or "
                "--ray HEAD:PORT (a cluster)")
    limit_malloc_arenas()
    signal.signal(signal.SIGTERM, _stop)
    atexit.register(_remove_files)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    state.ENGINE_CONFIG.update(engine_settings(args))
    cluster = {} if args.workers_per_gpu is None else {"workers_per_gpu": args.workers_per_gpu}
    if ray:  # joined before anything starts: a missing Ray or an unreachable cluster is a plain line
        from lipsync.cluster import connect
        from lipsync.errors import LipSyncError

        try:
            connect(ray)
        except LipSyncError as e:
            raise SystemExit(str(e)) from None
    if ray:  # the model runs on the cluster's workers, each loading its own; this machine only signals
        pass
    elif handlers.spaces is not None:  # ZeroGPU forks a worker per GPU call: it inherits the model loaded here, once
        state.start_model_loading().join()
    else:  # in the background: the page comes up at once and shows the loading state
        state.start_model_loading()
    demo = build_demo(extra_tabs=default_tabs())
    launch(
        demo, routes=default_routes(ray, engine_settings(args), **cluster), share=args.share, server_name=args.host, server_port=args.port,
        max_file_size="20mb", show_error=False, js=PAGE_JS, css=CSS or None,
    )
