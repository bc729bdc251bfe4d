"""Live sessions on a Ray cluster (lipsync.live.web.remote): a real two-node cluster on this machine.

Two nodes started with ``ray start`` (as on two machines: ``--head`` and ``--address``), one CPU each;
the app's routes on uvicorn here place each session on a worker, and aiortc clients here receive the
avatar straight from the worker's process. Then one node dies: its session ends with a plain line on
the status route, and a new session opens on the other node. No process of the cluster is left.

Media stays on 127.0.0.1 (``LIPSYNC_ICE_ADDRESSES`` on the nodes, the conftest patch here); Ray's own
traffic goes to this machine's address (Ray on Linux will not bind its nodes to loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-dev.txt)")
pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")

from conftest import ROOT, free_port  # noqa: E402

SIDE = 160  #: the live picture's long side: small, so two sessions fit two busy cores
SDP_MALFORMED = "The SDP offer is malformed: send {'type': 'offer', 'sdp': 'v=0...'}."
DEAD_AFTER_S = 3.0  #: the app takes a silent worker for dead after this (10 s by default)


def _ray_exe() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else shutil.which("ray")


def _tree(proc: subprocess.Popen) -> list[psutil.Process]:
    """``proc`` and every process under it (Ray starts its workers in sessions of their own: they are
    found through their parents, not their group)."""
    try:
        top = psutil.Process(proc.pid)
        return [top] + top.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


class Node:
    """One ``ray start --block`` and the processes it started."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([_ray_exe(), "start", "--block", *args], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}

    def note(self) -> None:
        """Remember the node's processes now (a killed raylet's workers lose their parent)."""
        for p in _tree(self.proc):
            self.seen.setdefault(p.pid, p)

    def kill(self) -> None:
        self.note()
        _kill(list(self.seen.values()))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def alive(self) -> list[psutil.Process]:
        out = []
        for p in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
        return out


def _node_args(resource: str, gpus: int = 0) -> list[str]:
    """One node's own ports (two nodes share this machine), one CPU, ``gpus`` GPUs (this machine has none: Ray
    counts what it is told, and a worker given one finds no CUDA and runs on the CPU), a small object store."""
    base = 20000 + secrets.randbelow(400) * 100
    return ["--num-cpus", "1", "--num-gpus", str(gpus), "--resources", json.dumps({resource: 1}),
            "--node-ip-address", "127.0.0.1", "--object-store-memory", str(80 * 2**20),
            "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--metrics-export-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
            "--min-worker-port", str(base), "--max-worker-port", str(base + 40), "--disable-usage-stats"]


@pytest.fixture(scope="module")
def cluster(checkpoint):
    """A head (``node_a``) and a second node (``node_b``, which says it has a GPU), each one CPU, with a token of
    their own; the nodes' workers import lipsync from this checkout and offer 127.0.0.1 only. Stopped at the module's end, with
    every process of theirs (and only theirs) killed."""
    import ray
    from ray._private.authentication_test_utils import reset_auth_token_state  # Ray's own tests' helper

    temp = Path(tempfile.mkdtemp(prefix="lsray-", dir="/tmp"))  # short: Ray's socket paths live under it
    (temp / "tmp").mkdir()
    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    saved = {k: os.environ.get(k) for k in auth}
    env = dict(os.environ, **auth, RAY_USAGE_STATS_ENABLED="0", TMPDIR=str(temp / "tmp"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
               LIPSYNC_CHECKPOINT=str(checkpoint), LIPSYNC_ICE_ADDRESSES="127.0.0.1", LIPSYNC_OFFLINE="1",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               # a lost node is noticed in about 2 s (Ray's default: 15 s)
               RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="4",
               RAY_health_check_initial_delay_ms="0")
    port = free_port()
    nodes: list[Node] = []
    t0 = time.monotonic()
    try:
        nodes.append(Node(["--head", "--port", str(port), "--temp-dir", str(temp), "--include-dashboard=false",
                           "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
                           *_node_args("node_a")], env, temp / "head.log"))
        deadline = time.monotonic() + 60
        while True:  # the second node joins as soon as the head's GCS answers
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if nodes[0].proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not start:\n{(temp / 'head.log').read_text()[-3000:]}")
            time.sleep(0.2)
        nodes.append(Node(["--address", f"127.0.0.1:{port}", *_node_args("node_b", gpus=1)], env, temp / "b.log"))
        os.environ.update(auth)
        reset_auth_token_state()  # this process read Ray's settings when it imported ray
        while True:
            try:
                ray.init(address=f"127.0.0.1:{port}", logging_level="WARNING", log_to_driver=False)
                break
            except (ConnectionError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        ids = {}
        while len(ids) < 2:
            ids = {r: n["NodeID"] for n in ray.nodes() if n["Alive"] for r in ("node_a", "node_b")
                   if r in n["Resources"]}
            if time.monotonic() > deadline:
                pytest.fail(f"the second node did not join:\n{(temp / 'b.log').read_text()[-3000:]}")
            time.sleep(0.2)
        for n in nodes:
            n.note()
        yield {"address": f"127.0.0.1:{port}", "a": ids["node_a"], "b": ids["node_b"], "head": nodes[0],
               "node_b": nodes[1], "tmp": temp / "tmp", "started_s": time.monotonic() - t0}
    finally:
        ray.shutdown()
        for n in nodes:
            n.kill()
        left = [f"{p.pid} {p.name()}" for n in nodes for p in n.alive()]
        spools = sorted(p.name for p in (temp / "tmp").glob("lipsync-*")) if (temp / "tmp").exists() else []
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_auth_token_state()
        assert not left, f"processes of the test's Ray cluster outlived it: {left}"
        assert not spools, f"the workers left files behind: {spools}"


@pytest.fixture(scope="module")
def served(cluster, checkpoint, coturn):
    """The live routes with ``ray=`` the cluster, on uvicorn at 127.0.0.1, installed at start-up (as the app does).
    The app's environment names a TURN server (a coturn on 127.0.0.1, by its shared secret): the workers get it
    from the app, not from their machines."""
    turn = {"LIPSYNC_TURN_URLS": coturn.url, "LIPSYNC_TURN_SECRET": coturn.secret}
    saved = {k: os.environ.get(k) for k in turn}
    os.environ.update(turn)
    try:
        yield from _served(cluster, checkpoint)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _served(cluster, checkpoint, device="cpu", clips=True, **options):
    """The app's routes on uvicorn, its sessions on the cluster's workers (``device="cpu"``: one per node, GPUs or
    not), and with ``clips`` the Generate tab's clips (this process's one clip engine); yields once two workers
    have loaded their model."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import live_soak
    from fastapi import FastAPI

    from lipsync.batch.execute import EngineSettings
    from lipsync.live.web import install
    from lipsync.webapp.server import install_on_cluster

    box = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):  # as ``app.py --ray`` installs it: the live routes, and Generate's clips on the workers
        settings = dict(checkpoint=str(checkpoint), device=device, precision="fp32")
        options.update(max_side=SIDE, offer_interval_s=0.0, per_client=2, dead_after_s=DEAD_AFTER_S)
        if clips:
            on_cluster = install_on_cluster(install, cluster["address"], settings, app, None, **options)
        else:
            on_cluster = SimpleNamespace(server=install(app, None, ray=cluster["address"],
                                                        settings=EngineSettings(**settings), **options))
            on_cluster.aclose = on_cluster.server.aclose
        box["server"] = on_cluster.server
        try:
            yield
        finally:
            await on_cluster.aclose()

    with live_soak.serving(FastAPI(lifespan=lifespan)) as url:
        server = box["server"]
        deadline = time.monotonic() + 90
        while sum(w["ready"] for w in server.describe()) < 2:  # both workers loaded their model
            assert time.monotonic() < deadline, f"the workers did not load: {server.describe()}"
            time.sleep(0.2)
        yield url.rstrip("/"), server


class Client:
    """A visitor: an aiortc peer (no STUN: loopback only) that counts what arrives and pings the channel."""

    def __init__(self, http):
        self.http = http
        self.got = {"video": 0, "audio": 0}
        self.notices: list[str] = []
        self.pc = self.answer = self.pinger = None

    async def open(self) -> dict:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("track")
        def _track(track):
            async def pull():
                with contextlib.suppress(Exception):
                    while True:
                        await track.recv()
                        self.got[track.kind] += 1

            asyncio.ensure_future(pull())

        channel = pc.createDataChannel("keepalive")
        channel.on("message", self.notices.append)

        async def ping():
            while True:
                await asyncio.sleep(0.5)
                if channel.readyState == "open":
                    channel.send("ping")

        self.pinger = asyncio.ensure_future(ping())
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        r = await self.http.post("/live/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"})
        assert r.status_code == 200, r.text
        self.answer = r.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer["sdp"], type="answer"))
        return self.answer

    async def media(self, n: int = 5, timeout: float = 40) -> bool:
        t = time.monotonic()
        while self.got["video"] < n or self.got["audio"] < n:
            if time.monotonic() - t > timeout:
                return False
            await asyncio.sleep(0.1)
        return True

    async def close(self):
        if self.pinger is not None:
            self.pinger.cancel()
        if self.pc is not None:
            await self.pc.close()


def _candidate_ports(sdp: str) -> set[tuple[str, int]]:
    return {(m[0], int(m[1])) for m in re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", sdp)}


def _udp_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="udp")}


def run(coro):
    return asyncio.run(coro)


def test_sessions_go_to_both_machines_and_the_media_comes_straight_from_each(served, cluster):
    import httpx

    url, server = served

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            one, two = Client(http), Client(http)
            try:
                a1 = await one.open()
                a2 = await two.open()  # the first worker is full (one CPU, one session): the other machine
                where = {server.where(a1["id"])["node_id"], server.where(a2["id"])["node_id"]}
                assert where == {cluster["a"], cluster["b"]}, server.describe()
                assert await one.media() and await two.media(), (one.got, two.got)
                for client, answer in ((one, a1), (two, a2)):
                    # the answer is the worker's own: its host candidates are on 127.0.0.1, in its process
                    found = _candidate_ports(answer["sdp"])
                    assert found and {ip for ip, _ in found} == {"127.0.0.1"}, answer["sdp"]
                    # and it relays through the app's TURN server: coturn took the credentials the worker made
                    # from the secret the app handed it
                    assert re.search(r"a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 \d+ typ relay", answer["sdp"])
                    pid = server.where(answer["id"])["pid"]
                    assert pid != os.getpid() and {p for _, p in found} <= _udp_ports(pid)
                    r = await http.get(f"/live/{answer['id']}")
                    assert r.status_code == 200 and r.json()["frames"] > 0 and r.json()["mode"]["width"] <= SIDE
                # each worker measured what its machine holds (one CPU, fp32: one session); the app sums them
                cap = (await http.get("/live/capacity")).json()
                assert cap["running"] == 2 and cap["limit"] == 2 and len(cap["workers"]) == 2, cap
                assert all("measured" in w["how"] for w in cap["workers"]), cap  # and what bound each
                # both places are taken: a third visitor is told so, as on one machine
                three = await http.post("/live/offer", json={"sdp": "v=0", "type": "offer"})
                assert three.status_code == 429 and "busy" in three.json()["error"] and three.headers["retry-after"]
                r = await http.post(f"/live/{a2['id']}/say", json={"text": "Hello there.", "voice": "espeak:en-us"})
                assert r.status_code == 200 and r.json()["sentences"] == 1
                for answer in (a1, a2):
                    assert (await http.delete(f"/live/{answer['id']}")).status_code == 200
                    assert (await http.get(f"/live/{answer['id']}")).status_code == 404
                t = time.monotonic()
                while any(w["sessions"] for w in server.describe()) and time.monotonic() - t < 5:
                    await asyncio.sleep(0.1)
                assert not any(w["sessions"] for w in server.describe())
            finally:
                await one.close()
                await two.close()

    run(main())


def test_several_workers_share_a_gpu_each_with_its_share_and_sessions_spread_over_them(served, cluster, checkpoint):
    """``app.py --ray ADDRESS --workers-per-gpu 2``: node_b's one GPU gets two worker processes, each with half of
    it (Ray's own accounting) and its own engine; the head has no GPU and gets none. Two visitors land on the two
    processes. (node_b's one CPU is the first app's worker's: these reserve none.)"""
    import httpx

    with contextlib.contextmanager(_served)(cluster, checkpoint, device="auto", clips=False, workers_per_gpu=2,
                                            cpus_per_worker=0) as (url, server):
        workers = server.describe()
        assert len(workers) == 2 and {w["node_id"] for w in workers} == {cluster["b"]}, workers
        assert [w["gpu_share"] for w in workers] == [0.5, 0.5] and len({w["pid"] for w in workers}) == 2
        infos = [w.info for w in server.workers.values()]
        assert all(i["gpus"] == infos[0]["gpus"] and len(i["gpus"]) == 1 for i in infos), infos  # the same GPU
        assert all(i["resources"].get("GPU") == 0.5 for i in infos), infos

        async def main():
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                one, two = Client(http), Client(http)
                try:
                    a1, a2 = await one.open(), await two.open()
                    pids = {server.where(a1["id"])["pid"], server.where(a2["id"])["pid"]}
                    assert pids == {w["pid"] for w in workers}, server.describe()  # the freer process each time
                    assert await one.media() and await two.media(), (one.got, two.got)
                    for answer in (a1, a2):
                        assert (await http.delete(f"/live/{answer['id']}")).status_code == 200
                finally:
                    await one.close()
                    await two.close()

        run(main())
    assert not server.workers  # closed with the app: its processes are gone (the cluster fixture checks the rest)


def test_workers_are_planned_per_gpu_or_per_node_each_with_its_share_of_the_machine(monkeypatch):
    from lipsync.cluster import env_workers_per_gpu, plan_nodes
    from lipsync.errors import LipSyncError

    def node(name, cpus, gpus=0, alive=True):
        return {"NodeID": name, "Alive": alive, "NodeManagerAddress": f"10.0.0.{len(name)}",
                "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}

    nodes = [node("app", 4), node("gpus", 16, gpus=2), node("gone", 16, gpus=8, alive=False)]
    one = plan_nodes(nodes)  # one per GPU, on the GPU machine only, each with half its cores
    assert [(p.node_id, p.num_gpus, p.cores) for p in one] == [("gpus", 1, 8.0)] * 2
    four = plan_nodes(nodes, per_gpu=4, cpus_per_worker=2)
    assert [(p.node_id, p.num_cpus, p.num_gpus, p.cores) for p in four] == [("gpus", 2, 0.25, 2.0)] * 8
    assert len({p.key for p in four}) == 8
    three = plan_nodes(nodes, per_gpu=3)  # Ray counts a GPU in steps of 1/10,000: three shares fit in one
    assert three[0].num_gpus == 0.3333 and 3 * three[0].num_gpus <= 1
    cpu = plan_nodes(nodes, device="cpu", per_gpu=4, cpus_per_worker=2)  # GPUs aside: one per node, whole
    assert [(p.node_id, p.num_gpus, p.cores) for p in cpu] == [("app", 0, 4.0), ("gpus", 0, 16.0)]
    assert [p.node_id for p in plan_nodes(nodes, device="cpu", cpus_per_worker=8)] == ["gpus"]
    with pytest.raises(LipSyncError, match="at least 1"):
        plan_nodes(nodes, per_gpu=0)
    # the network's threads: a CPU worker's, all its machine's
    assert [p.threads for p in cpu] == [4, 16] and {p.threads for p in four} == {2}
    for value, want in (("", 1), ("3", 3), ("0", 1), ("two", 1)):
        monkeypatch.setenv("LIPSYNC_WORKERS_PER_GPU", value)
        assert env_workers_per_gpu() == want


def test_without_ray_the_message_says_how_to_install_it_and_not_another_project(monkeypatch):
    """`pip install 'lipsync[ray]'`, as the message said before, installs another project of that name."""
    from lipsync.cluster import import_ray
    from lipsync.errors import LipSyncError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where it is not installed
    with pytest.raises(LipSyncError) as e:
        import_ray()
    assert "pip install '.[ray]'" in str(e.value) and "'lipsync[" not in str(e.value)


def test_the_app_follows_each_workers_capacity_as_the_worker_measures_it_again_while_serving():
    """A worker measures what it holds at load (the network, and an assumed cost of its sessions' own work), then
    again as its sessions run (their work, measured): each ping brings the app its capacity now."""
    import concurrent.futures

    from lipsync.live.web.remote import RemoteLive, Worker

    reply = {"incarnation": 1, "sessions": ["s1"], "capacity": 7, "how": "measured while serving, 7 in one process"}

    def ping():
        done = concurrent.futures.Future()
        done.set_result(reply)
        return SimpleNamespace(future=lambda: done)

    worker = Worker(SimpleNamespace(key="node-1"), SimpleNamespace(ping=SimpleNamespace(remote=ping)),
                    info={"incarnation": 1, "capacity": 12})
    worker.peers["s1"] = time.monotonic()
    live = RemoteLive.__new__(RemoteLive)  # the app's side without a cluster: its pings only
    live.workers, live.owners, live.dead_after_s = {"node-1": worker}, {}, 5.0
    run(live._ping(worker))
    assert worker.info["capacity"] == 7 and worker.free == 6 and "7 in one process" in worker.info["how"]
    del reply["capacity"], reply["how"]  # a worker of an older version says nothing of it: the last figure stays
    run(live._ping(worker))
    assert worker.info["capacity"] == 7


def test_a_workers_ping_never_loads_its_model_and_says_its_capacity_once_ready():
    """A worker restarted by Ray answers pings before the app has called ready() again: reading its capacity
    then would load the model inside the ping (found in CI: the restarted worker's pings failed, and its ended
    session read as never having existed)."""
    from lipsync.live.web.worker import LiveWorker

    read = []

    def capacity(engine):
        read.append(engine)
        return {"limit": 4, "how": "measured while serving"}

    worker = LiveWorker.__new__(LiveWorker)  # its state only: no engine is made
    worker.incarnation, worker.engine = "i2", object()
    worker.server = SimpleNamespace(peers={}, capacity=capacity)
    worker._ready = False
    assert run(worker.ping()) == {"incarnation": "i2", "sessions": []} and not read
    worker._ready = True
    assert run(worker.ping()) == {"incarnation": "i2", "sessions": [], "capacity": 4, "how": "measured while serving"}


def test_a_restarted_worker_removes_the_clip_folders_of_dead_workers_only(tmp_path):
    from lipsync.cluster.clips import CLIP_PREFIX, remove_orphans

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"{CLIP_PREFIX}{gone.pid}-abc"
    mine = tmp_path / f"{CLIP_PREFIX}{os.getpid()}-def"
    other = tmp_path / "lipsync-clipboard"
    for folder in (dead, mine, other):
        (folder / "preview").mkdir(parents=True)
    assert remove_orphans(tmp_path) == [dead.name]
    assert not dead.exists() and mine.exists() and other.exists()


def _clip_folders(cluster) -> list[str]:
    return sorted(p.name for p in cluster["tmp"].glob("lipsync-clip-*"))


def test_generate_runs_on_a_worker_streams_its_preview_and_packages_there(served, cluster, tmp_path):
    """``app.py --ray``: the Generate tab's clip is made on a worker (the app loads no model): the page's
    handler gets its preview segments as they are made, then the MP4, the captions and the HLS zip, made
    there and written here; a Cancel stops the worker's job; the workers keep no folder afterwards."""
    import zipfile

    from lipsync import Cancelled, Request
    from lipsync.cluster.clips import ClusterClips
    from lipsync.media.hls.probe import probe
    from lipsync.options import GenerateOptions
    from lipsync.webapp import handlers, state

    from conftest import EXAMPLE

    url, server = served
    clips = state.clip_engine()  # the app's clips go to the cluster's workers (installed with the routes)
    assert isinstance(clips, ClusterClips) and clips.remote is server and clips.status()[0] == "ready"
    assert "on 2 machines of the cluster" in state.model_status()
    # the API's handler, as a script calls it: everything is made on a worker, the files land here
    video, zip_path, text, captions = asyncio.run(handlers.make_generate()(
        str(EXAMPLE), "Hello there, astronaut.", "espeak:en-us", consent=True, max_side=160, frame_step=2))
    info = probe(Path(video))
    assert info.has_audio and info.duration_s > 1.0 and Path(captions).read_text().startswith("WEBVTT")
    with zipfile.ZipFile(zip_path) as z:
        assert "master.m3u8" in z.namelist() and any(n.endswith(".ts") or n.endswith(".m4s") for n in z.namelist())
    assert "HLS renditions" in text
    assert not clips._running

    # the page's handler streams: segments arrive while the worker still makes the rest
    request = Request(EXAMPLE, tmp_path / "talk.mp4", text="Hello there. This is the preview.",
                      options=GenerateOptions(voice="espeak:en-us", max_side=160, captions=True, frame_step=2))
    stages, cues = set(), []
    stream = clips.stream(request, lambda stage, done, total: stages.add(stage), folder=tmp_path / "preview",
                          on_captions=cues.extend)
    segments = []
    for seg in stream:
        assert seg.path.read_bytes()[:1] == b"\x47"  # an MPEG-TS packet: playable as it is
        segments.append(seg)
    result = stream.result
    assert len(segments) >= 2 and result.video == tmp_path / "talk.mp4" and result.video.is_file()
    assert abs(segments[-1].end_s - result.duration_s) < 0.1 and cues and {"speech", "lipsync"} <= stages
    # its worker kept the MP4 for the HLS package, and lets it go once packaged
    assert _clip_folders(cluster)
    hls = clips.package(result, tmp_path)
    assert hls.zip == tmp_path / "lipsync_hls.zip" and hls.zip.stat().st_size > 0 and hls.subtitles is not None
    assert not _clip_folders(cluster)

    # a Cancel stops the worker's job: the stream ends with Cancelled, and the worker's folder goes
    long = Request(EXAMPLE, tmp_path / "long.mp4", text="Counting slowly from one to twenty now. " * 6,
                   options=GenerateOptions(voice="espeak:en-us", max_side=160, frame_step=2))
    cancel = __import__("threading").Event()
    stream = clips.stream(long, cancel=cancel)
    with pytest.raises(Cancelled):
        for _ in stream:
            cancel.set()
    assert not (tmp_path / "long.mp4").exists()
    t = time.monotonic()
    while _clip_folders(cluster) and time.monotonic() - t < 10:
        time.sleep(0.2)
    assert not _clip_folders(cluster), "a worker kept a clip's folder"


def test_a_lost_machine_ends_its_session_plainly_and_the_next_goes_to_the_other(served, cluster, tmp_path):
    import httpx

    from lipsync import Request
    from lipsync.live.web.remote import STOPPED
    from lipsync.options import GenerateOptions
    from lipsync.webapp import state

    from conftest import EXAMPLE

    url, server = served

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            one, two, three = Client(http), Client(http), Client(http)
            try:
                ids = {}
                for client in (one, two):
                    answer = await client.open()
                    ids[server.where(answer["id"])["node_id"]] = (client, answer["id"])
                assert set(ids) == {cluster["a"], cluster["b"]}
                on_a, on_b = ids[cluster["a"]], ids[cluster["b"]]
                assert await on_a[0].media() and await on_b[0].media()
                t = time.monotonic()
                cluster["node_b"].kill()  # the machine is gone: its raylet, its agents, its worker
                # a Generate click now: the app may not know yet; whichever worker it tries, the clip is made
                request = Request(EXAMPLE, tmp_path / "after.mp4", text="Still here.",
                                  options=GenerateOptions(voice="espeak:en-us", max_side=160, frame_step=2))
                clip = asyncio.ensure_future(asyncio.to_thread(state.clip_engine().run, request))
                while True:
                    r = await http.get(f"/live/{on_b[1]}")
                    if r.status_code != 200:
                        break
                    assert time.monotonic() - t < 20, "the lost worker's session still answers"
                    await asyncio.sleep(0.2)
                noticed = time.monotonic() - t
                assert r.status_code == 410 and r.json() == {"error": STOPPED}, r.text
                assert (await http.post(f"/live/{on_b[1]}/say", json={"text": "Hi."})).status_code == 410
                # the other machine's session goes on
                before = on_a[0].got["video"]
                r = await http.get(f"/live/{on_a[1]}")
                assert r.status_code == 200, r.text
                await asyncio.sleep(1.0)
                assert on_a[0].got["video"] > before
                assert (await http.delete(f"/live/{on_a[1]}")).status_code == 200
                result = await clip
                assert result.video == tmp_path / "after.mp4" and result.video.stat().st_size > 0
                t = time.monotonic()
                while [w["node_id"] for w in server.describe()] != [cluster["a"]] and time.monotonic() - t < 20:
                    await asyncio.sleep(0.2)  # the dead worker is dropped once Ray has it for dead
                assert [w["node_id"] for w in server.describe()] == [cluster["a"]], server.describe()
                answer = await three.open()
                assert server.where(answer["id"])["node_id"] == cluster["a"]
                assert await three.media()
                assert (await http.delete(f"/live/{answer['id']}")).status_code == 200
                print(f"lost machine noticed in {noticed:.1f} s")
            finally:
                for client in (one, two, three):
                    await client.close()

    run(main())


def test_a_worker_process_that_dies_is_restarted_by_ray_and_serves_again(served, cluster):
    """The worker's process dies (killed, as the kernel's OOM killer would) on a machine that stays up: its
    session ends with the plain line, Ray restarts the worker, and once its model is loaded again it takes
    the next session. (Runs after the lost-machine test: only node a is left.)"""
    import httpx

    from lipsync.live.web.remote import STOPPED
    from lipsync.live.web.server import LOADING

    url, server = served

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            one, two = Client(http), Client(http)
            try:
                answer = await one.open()
                old = server.where(answer["id"])
                assert old["node_id"] == cluster["a"]
                assert await one.media()
                t = time.monotonic()
                os.kill(old["pid"], 9)
                # until the app is sure it died (Ray says it restarted, or it stays silent), the page's polls
                # hear "not answering; try again" (503); then the plain end, as the page shows it
                while (r := await http.get(f"/live/{answer['id']}")).status_code in (200, 503):
                    assert time.monotonic() - t < 20, f"the dead worker's session still answers: {r.text}"
                    await asyncio.sleep(0.2)
                assert r.status_code == 410 and r.json() == {"error": STOPPED}, r.text
                noticed = time.monotonic() - t
                r = await http.post("/live/offer", json={"sdp": "v=0", "type": "offer"})
                # 503 while the restarted worker loads its model; once it is back, admitted, and the bare SDP refused
                assert (r.status_code, r.json()["error"]) in ((503, LOADING), (400, SDP_MALFORMED)), r.text
                while not any(w["ready"] for w in server.describe()):
                    assert time.monotonic() - t < 60, server.describe()
                    await asyncio.sleep(0.2)
                back = time.monotonic() - t
                again = await two.open()
                new = server.where(again["id"])
                assert new["node_id"] == cluster["a"] and new["pid"] != old["pid"]
                assert await two.media()
                assert (await http.delete(f"/live/{again['id']}")).status_code == 200
                print(f"dead worker noticed in {noticed:.1f} s, serving again after {back:.1f} s")
            finally:
                await one.close()
                await two.close()

    run(main())
