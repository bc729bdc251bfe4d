"""Shared fixtures. Tests run offline on the CPU with deterministic random weights."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
EXAMPLE = ROOT / "assets" / "astronaut.jpg"

# Never touch the network from tests, in this process or in the ones it starts.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("LIPSYNC_TEST", "1")


#: every model cache a test could read: each points at an empty folder of the session,
#: so a machine with cached Coqui voices, Hub files or torch-hub weights gives the same results
CACHE_VARS = ("LIPSYNC_CACHE", "HF_HOME", "TTS_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "TORCH_HOME")


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    for var in CACHE_VARS:
        os.environ[var] = str(tmp_path_factory.mktemp(var.lower()))
    for var in ("LIPSYNC_CHECKPOINT", "LIPSYNC_S3FD", "LIPSYNC_OFFLINE", "HF_ENDPOINT", "LIPSYNC_DEVICE",
                "LIPSYNC_PRECISION"):
        os.environ.pop(var, None)
    yield


@pytest.fixture(scope="session")
def reference() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def oracle(reference):
    return dict(np.load(reference / "oracle_a.npz"))


@pytest.fixture(scope="session")
def oracle_wav(reference) -> Path:
    return reference / "oracle_a.wav"


def make_checkpoint(out: Path, seed: int = 1234) -> Path:
    from lipsync.models.scratch import write_scratch_checkpoint

    return write_scratch_checkpoint(out, seed)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """The seed-1234 checkpoint the reference outputs were made with."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "wav2lip_seed1234.pth")


@pytest.fixture
def speech():
    """One second of a steady 200 Hz tone: a soundtrack that speaks on every frame."""
    from lipsync import Speech

    t = np.arange(16000) / 16000
    return Speech((0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)


@pytest.fixture(scope="session")
def example_image() -> Path:
    return EXAMPLE


@pytest.fixture(scope="session")
def engine(checkpoint):
    """One CPU engine with the offline face detector, shared by the tests."""
    from lipsync import LipSync
    from lipsync.face import HaarDetector

    return LipSync(checkpoint, device="cpu", detector=HaarDetector())


def ffprobe(path: Path) -> dict:
    import json

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def temp_entries() -> set[str]:
    """Names in the temporary folder (see ``own_tempdir``)."""
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).iterdir()}


@pytest.fixture
def own_tempdir(tmp_path, monkeypatch):
    """Requests' temporary directories go to a folder only this test uses."""
    import tempfile

    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def reference_inputs(oracle):
    """The reference face crop and the mel windows of the frames the oracle predicted."""
    starts = oracle["chunk_starts"][oracle["frame_index"]]
    mels = np.stack([oracle["mel"][:, s : s + 16] for s in starts]).astype(np.float32)
    return oracle["face_crop_bgr"], mels


def predict_all(gen, face, mels, **kw):
    """Every mouth crop a generator predicts, as one array."""
    return np.concatenate(list(gen.predict(face, mels, **kw)))


@pytest.fixture(scope="module")
def fp32_engine(checkpoint):
    """The fp32 scratch network on one thread: one frame at a time, two threads only fight a loaded machine."""
    import torch

    from lipsync import LipSync
    from lipsync.face import HaarDetector

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield LipSync(checkpoint, device="cpu", precision="fp32", detector=HaarDetector()).load()
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- live sessions

LIVE_SIDE = 256  #: the live tests' picture size: small, so each frame is cheap


@pytest.fixture
def open_live(fp32_engine, example_image):
    sessions = []

    def make(**kw):
        kw.setdefault("max_side", LIVE_SIDE)
        kw.setdefault("adapt", False)
        kw.setdefault("enhance", "off")  # the exact-picture tests compare with the plain paste
        kw.setdefault("blink", False)
        if "video" not in kw:  # the photo, unless a test drives the face with a video
            kw.setdefault("image", example_image)
        s = fp32_engine.live(**kw)
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()


@pytest.fixture
def every_picture(monkeypatch):
    """Make every frame's picture even when late (no catch-up), for the tests that read pictures in order."""
    from lipsync.live import session as live

    monkeypatch.setattr(live, "CATCH_UP_SLOTS", 1e9)
    monkeypatch.setattr(live, "CATCH_UP_HOLD", False)


def take(session, n):
    out = []
    for f in session:
        out.append(f)
        if len(out) == n:
            break
    return out


def noise_int16(seconds, rate=16000, seed=0, amp=6000):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, amp, int(seconds * rate)), -32768, 32767).astype(np.int16)


@pytest.fixture
def no_restorer_weights(monkeypatch, tmp_path):
    """Offline, an empty Hub cache, no local file: the face restorer's weights cannot be had."""
    from lipsync.enhance import face as face_mode

    monkeypatch.setenv("LIPSYNC_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("LIPSYNC_GFPGAN", raising=False)
    face_mode.forget()
    yield
    face_mode.forget()


# ----------------------------------------------------------------------------- WebRTC on loopback only

#: Chromium resolves no name but loopback (the page's fonts from elsewhere are not even looked up)
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


def keep_local(page) -> None:
    """Abort every request of ``page`` that is not for 127.0.0.1."""
    from urllib.parse import urlparse

    page.route("**/*", lambda route: route.continue_() if urlparse(route.request.url).hostname == "127.0.0.1"
               else route.abort())


@pytest.fixture(scope="session", autouse=True)
def _webrtc_on_loopback():
    """aiortc offers this machine's own addresses only: 127.0.0.1 (aioice leaves loopback out and
    offers every interface's address otherwise), so test media never leaves the loopback range."""
    try:
        from aioice import ice
    except ImportError:
        yield
        return
    original = ice.get_host_addresses
    ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []
    yield
    ice.get_host_addresses = original


REALM = "lipsync.test"


@dataclass
class Coturn:
    port: int
    secret: str
    log: Path

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def free_port() -> int:
    """A loopback port free for both UDP and TCP (coturn listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free loopback port")


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    """coturn on 127.0.0.1 with TURN REST auth, relaying to loopback peers only; stopped at the module's end
    (a module of its own each: other tests check that no child process outlives them)."""
    exe = shutil.which("turnserver")
    if exe is None:
        pytest.skip("turnserver is missing: apt-get install coturn (make test installs packages-dev.txt)")
    d = tmp_path_factory.mktemp("coturn")
    server = Coturn(free_port(), secrets.token_urlsafe(24), d / "turn.log")
    args = [
        exe, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={server.port}",
        "--use-auth-secret", f"--static-auth-secret={server.secret}", f"--realm={REALM}", "--fingerprint",
        "--allow-loopback-peers", "--no-multicast-peers", "--no-tls", "--no-dtls", "--no-cli", "--no-rfc5780",
        # relay to loopback only (IPv6 needs no rule: an IPv4 relay address reaches IPv4 peers only, and a
        # "::-ffff:..." rule would deny 127.0.0.1 as well)
        "--denied-peer-ip=0.0.0.0-126.255.255.255", "--denied-peer-ip=128.0.0.0-255.255.255.255",
        f"--pidfile={d / 'turn.pid'}", f"--log-file={server.log}", "--simple-log", "--verbose",
        f"--userdb={d / 'turndb'}",  # its own (unused) database instead of /var/lib/turn's
    ]
    with open(d / "stdout.txt", "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def stop():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    try:
        ready = f"UDP listener opened on: 127.0.0.1:{server.port}"
        deadline = time.monotonic() + 15
        while ready not in server.text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"coturn did not start (exit {proc.poll()}):\n{server.text()[-3000:]}")
            time.sleep(0.05)
        yield server
    finally:
        stop()


# ----------------------------------------------------------------------------- the command line in process

#: the engine flags of the command-line runs that share one loaded engine (``shared_engine``)
SHARED_ENGINE = ("--device", "cpu", "--precision", "fp32")


@pytest.fixture(scope="module")
def cli_engine(checkpoint):
    """The engine `generate` builds from SHARED_ENGINE, loaded once for a module's in-process runs."""
    from lipsync.cli import _parser, engine_from_args

    args = _parser().parse_args(["generate", "--image", "x", "--audio", "y", "--out", "z.mp4",
                                 "--checkpoint", str(checkpoint), *SHARED_ENGINE])
    engine = engine_from_args(args)
    engine.load()
    return engine


@pytest.fixture
def shared_engine(cli_engine, monkeypatch):
    """`generate` in this process gets the loaded module engine, once it checked that the flags
    ask for the same engine (a model load per run cost seconds each)."""
    import lipsync.cli

    def reuse(args, **kw):
        assert lipsync.cli.engine_settings(args) == {
            "checkpoint": str(cli_engine.checkpoint), "s3fd": None, "device": "cpu", "precision": "fp32"}
        return cli_engine

    monkeypatch.setattr(lipsync.cli, "engine_from_args", reuse)


def in_process(capsys, *args):
    """`lipsync ARGS` run by main() in this process (with the shared engine): its exit status, stderr and stdout
    (argparse's own refusals exit: their status is the code)."""
    from types import SimpleNamespace

    from lipsync.cli import main

    try:
        code = main([str(a) for a in args] + list(SHARED_ENGINE))
    except SystemExit as e:
        code = e.code
    said = capsys.readouterr()
    return SimpleNamespace(returncode=code, stderr=said.err, stdout=said.out)


@pytest.fixture
def program_priorities(monkeypatch):
    """(started, lowered): the programs the library starts from now on, as (name, pid), and the
    niceness asked of each lowered one, by pid, relative to ours."""
    import os

    started, lowered = [], {}
    real_popen, real_setpriority = subprocess.Popen, os.setpriority

    class Popen(real_popen):
        def __init__(self, args, *a, **k):
            super().__init__(args, *a, **k)
            started.append((Path(args[0]).name, self.pid))

    def setpriority(which, pid, value):
        lowered[pid] = value - os.getpriority(os.PRIO_PROCESS, 0)
        real_setpriority(which, pid, value)

    monkeypatch.setattr(subprocess, "Popen", Popen)
    monkeypatch.setattr(os, "setpriority", setpriority)
    return started, lowered
