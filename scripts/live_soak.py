#!/usr/bin/env python3
"""Soak the live routes with one good visitor and many hostile ones; the server must not creep.

    python scripts/live_soak.py --serve [--checkpoint C] [--cycles 100]          # an app served in this process
    python scripts/live_soak.py --url http://127.0.0.1:7860/ --server-pid PID --tmpdir DIR [--cycles 100]

Each cycle, a good visitor (an aiortc client) opens a session, receives pictures
and sound, sometimes with a face of its own (a short video, consent given) or a
typed sentence, and stops it. Around it come the hostile requests, each from an
address of its own in 127.0.0.0/8, in turn: a body over the limit without a
Content-Length, a body that arrives slowly, an offer with 300 audio sections,
JSON nested 200,000 deep, a ``text/plain`` POST, another site's page, unknown
session ids, and the good visitor's id used from another address; and, while the
good visitor's session runs, eight parallel 20 MB offers (a busy server must
refuse them without reading them). Every refusal must be a 4xx with a plain JSON
message (no traceback, no server path).

After the warm-up (``--warmup`` cycles) the server's resident memory may grow by at
most ``--max-growth`` (5 %), its file descriptors, threads and child processes stay
flat, and no upload or video spool is left in its temporary folder.

``--serve`` runs the app's live routes on uvicorn in this process (so the figures
include the clients' own memory: a conservative bound), with media on 127.0.0.1
only, and one session at a time (the busy checks need the visitor's session to fill
the server). Against a running app, pass its pid and TMPDIR, and start it with
``LIPSYNC_LIVE_SESSIONS=1`` for the same reason. Only this machine's loopback
addresses are used. Prints one JSON object; exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak import THREAD_SLACK, server_state  # noqa: E402 - the app soak's measurements

IMAGE = ROOT / "assets" / "astronaut.jpg"
#: what the temporary folder may not keep after the run: uploads (lipsync-live-*) and video spools (lipsync-*)
LEFTOVERS = ("lipsync-live-", "lipsync-video-", "lipsync-spool-")
PLAIN_BAD = ("Traceback", 'File "', "/tmp/", "/root/", "site-packages", ".py")


# ----------------------------------------------------------------------------- raw HTTP from chosen addresses

async def request(host: str, port: int, method: str, path: str, *, source: str = "127.0.0.1", body=None,
                  headers: dict | None = None, chunks=None, pause: float = 0.0, timeout: float = 60.0) -> dict:
    """One HTTP/1.1 request from ``source`` (an address in 127.0.0.0/8); the response is read while the body
    is still being sent, as a browser does, so a server that answers early is seen answering early."""
    headers = dict(headers or {})
    if body is not None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(payload))
        chunks = [payload]
    elif chunks is not None:
        headers["Transfer-Encoding"] = "chunked"
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    # keep-alive, as a browser: a server that answers before the body is in then drains the rest (uvicorn does);
    # with "Connection: close" it would close on unread data, and the reset could swallow its answer
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"

    async def send():
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(head.encode())
            for chunk in chunks or ():
                data = chunk if body is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
                writer.write(data)
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
            if body is None and chunks is not None:
                writer.write(b"0\r\n\r\n")
                await writer.drain()

    sender = asyncio.ensure_future(send())
    raw = b""

    def complete() -> bool:
        head_end = raw.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        fields = raw[:head_end].decode("latin-1").lower()
        body = raw[head_end + 4 :]
        for line in fields.split("\r\n"):
            if line.startswith("content-length:"):
                return len(body) >= int(line.split(":", 1)[1])
        return "transfer-encoding: chunked" not in fields or body.endswith(b"0\r\n\r\n")

    async def receive():
        nonlocal raw
        with contextlib.suppress(ConnectionError):
            while not complete():
                chunk = await reader.read(65536)
                if not chunk:
                    return
                raw += chunk
                sender.cancel()  # an answer came: stop sending, as a browser does

    try:
        await asyncio.wait_for(receive(), timeout)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head_raw, _, rest = raw.partition(b"\r\n\r\n")
    lines = head_raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    got = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    if got.get("transfer-encoding") == "chunked":
        out, data = b"", rest
        while data:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line or b"0", 16)
            if size == 0:
                break
            out, data = out + data[:size], data[size + 2 :]
        rest = out
    try:
        decoded = json.loads(rest) if rest else None
    except ValueError:
        decoded = None
    return {"status": status, "headers": got, "json": decoded, "text": rest.decode("utf-8", "replace")}


def plain_refusal(r: dict, status: int | tuple[int, ...]) -> bool:
    """A refusal with the expected status and a plain message in JSON (no traceback, no path, no code)."""
    want = (status,) if isinstance(status, int) else status
    message = (r["json"] or {}).get("error", "") if isinstance(r["json"], dict) else ""
    return r["status"] in want and len(message) > 15 and not any(b in message for b in PLAIN_BAD)


# ----------------------------------------------------------------------------- the visitors

def small_video(folder: Path) -> Path:
    """A 1 s video of the example portrait (256 px), as a visitor's face."""
    import imageio_ffmpeg

    out = folder / "face.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-loop", "1", "-i", str(IMAGE), "-t", "1",
         "-vf", "scale=256:256", "-r", "25", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)],
        check=True, timeout=60,
    )
    return out


def many_sections_sdp(n: int = 300) -> str:
    """An offer with ``n`` audio sections (small enough to pass the length check)."""
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    section = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"
    return head + section * n


class Visitor:
    """The good visitor: an aiortc client that opens a session, watches it, and stops it."""

    def __init__(self, host: str, port: int, prefix: str = "/live"):
        self.host, self.port, self.prefix = host, port, prefix
        self.offered = 0.0  #: when the last offer went (the server takes one a second from one address)

    async def visit(self, face: dict | None, say: bool, while_open=None) -> dict:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

        config = (await request(self.host, self.port, "GET", f"{self.prefix}/config"))["json"]
        servers = [RTCIceServer(**s) for s in config.get("iceServers", [])]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        got = {"video": 0, "audio": 0}

        @pc.on("track")
        def on_track(track):
            async def pull():
                with contextlib.suppress(Exception):
                    while True:
                        await track.recv()
                        got[track.kind] += 1

            asyncio.ensure_future(pull())

        channel = pc.createDataChannel("keepalive")
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        row: dict = {"ok": False}
        try:
            await pc.setLocalDescription(await pc.createOffer())
            body = {"sdp": pc.localDescription.sdp, "type": "offer", "mode": "text", **(face or {})}
            self.offered = time.monotonic()
            r = await request(self.host, self.port, "POST", f"{self.prefix}/offer", body=body)
            if r["status"] != 200:
                row["error"] = f"offer answered {r['status']}: {r['text'][:200]}"
                return row
            answer = r["json"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            deadline = time.monotonic() + 30
            while (got["video"] < 5 or got["audio"] < 5) and time.monotonic() < deadline:
                if channel.readyState == "open":
                    channel.send("ping")
                await asyncio.sleep(0.1)
            row["frames"] = dict(got)
            if say:
                r = await request(self.host, self.port, "POST", f"{self.prefix}/{answer['id']}/say",
                                  body={"text": "Hello there.", "voice": "espeak:en-us"})
                row["say"] = r["status"]
            row["hostile"] = await while_open(answer["id"]) if while_open is not None else []
            r = await request(self.host, self.port, "DELETE", f"{self.prefix}/{answer['id']}")
            row["ok"] = r["status"] == 200 and got["video"] >= 5 and got["audio"] >= 5 and row.get("say", 200) == 200
        finally:
            await pc.close()
        return row


def hostile_corpus(host: str, port: int, prefix: str = "/live") -> list:
    """The hostile requests, each ``(name, coroutine factory(source) -> bool)``: True when refused plainly."""
    big = b"x" * 2**20
    offer = f"{prefix}/offer"

    async def oversized_chunked(src):
        r = await request(host, port, "POST", offer, source=src, headers={"Content-Type": "application/json"},
                          chunks=[b'{"type": "offer", "video": "data:video/mp4;base64,'] + [big] * 30)
        return plain_refusal(r, 413)

    async def slow_body(src):
        parts = [b'{"type": "offer", ', b'"sdp": "v=0', b'", "mode": "text"}']
        r = await request(host, port, "POST", offer, source=src, headers={"Content-Type": "application/json"},
                          chunks=parts, pause=0.4)
        return plain_refusal(r, 400)

    async def sections(src):
        r = await request(host, port, "POST", offer, source=src, body={"type": "offer", "sdp": many_sections_sdp()})
        return plain_refusal(r, 400)

    async def nested(src):
        r = await request(host, port, "POST", offer, source=src, body=b"[" * 200_000 + b"]" * 200_000)
        return plain_refusal(r, 400)

    async def text_plain(src):
        r = await request(host, port, "POST", offer, source=src, body=b'{"type": "offer", "sdp": "v=0"}',
                          headers={"Content-Type": "text/plain"})
        return plain_refusal(r, 415)

    async def other_site(src):
        r = await request(host, port, "POST", offer, source=src, body={"type": "offer", "sdp": "v=0"},
                          headers={"Origin": "https://elsewhere.example"})
        return plain_refusal(r, 403)

    async def unknown_ids(src):
        rs = [await request(host, port, m, f"{prefix}/{'nosuchsession' + str(k)}{tail}", source=src,
                            body={"text": "hi"} if m == "POST" and tail == "/say" else (b"" if m == "POST" else None))
              for k, (m, tail) in enumerate((("GET", ""), ("DELETE", ""), ("POST", "/say"), ("POST", "/interrupt")))]
        return all(plain_refusal(r, 404) for r in rs)

    return [("oversized body without length", oversized_chunked), ("slow body", slow_body),
            ("300 audio sections", sections), ("nested JSON", nested), ("text/plain", text_plain),
            ("another site's page", other_site), ("unknown ids", unknown_ids)]


_BIG: list[bytes] = []


def big_offer() -> bytes:
    """A 20 MB offer body (made once: the soak measures the server, not its own buffers)."""
    if not _BIG:
        video = "data:video/mp4;base64," + base64.b64encode(os.urandom(15 * 2**20)).decode()
        _BIG.append(json.dumps({"type": "offer", "sdp": "v=0", "consent": True, "video": video}).encode())
    return _BIG[0]


async def while_busy(host: str, port: int, peer_id: str, prefix: str = "/live") -> list:
    """While the good visitor's session runs: its id from another address, and eight parallel 20 MB offers."""
    rows = []
    for m, tail in (("GET", ""), ("DELETE", ""), ("POST", "/interrupt")):
        r = await request(host, port, m, f"{prefix}/{peer_id}{tail}", source="127.0.2.1",
                          body=b"" if m == "POST" else None)
        rows.append(("another visitor's id", plain_refusal(r, 404)))
    payload = big_offer()
    rs = await asyncio.gather(*(request(host, port, "POST", f"{prefix}/offer", source=f"127.0.3.{k + 1}",
                                        body=payload) for k in range(8)))
    rows.append(("eight 20 MB offers while busy", all(plain_refusal(r, 429) and r["headers"].get("retry-after")
                                                       for r in rs)))
    return rows


def leftovers(tmpdir: Path | None) -> list[str]:
    folder = tmpdir or Path(tempfile.gettempdir())
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(LEFTOVERS))


def run_soak(url: str, pid: int, tmpdir: Path | None, *, cycles: int = 100, warmup: int = 10,
             max_growth: float = 0.05, offer_interval_s: float = 1.0, log=None) -> dict:
    """``cycles`` cycles of the good visitor and the hostile ones; the figures and whether every check passed.

    ``offer_interval_s``: the server's interval between two offers from one address (the visitor keeps to it).
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname is None or not parts.hostname.startswith("127."):
        raise SystemExit("the live soak only targets this machine (127.0.0.1)")
    host, port = parts.hostname, parts.port or 80
    prefix = parts.path.rstrip("/") + "/live"
    corpus = hostile_corpus(host, port, prefix)
    visitor = Visitor(host, port, prefix)

    async def main() -> dict:
        with tempfile.TemporaryDirectory(prefix="live-soak-inputs-") as d:
            clip = small_video(Path(d))
            face = {"video": "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode(), "consent": True}
            rows, samples, warm = [], [], None
            t0 = time.perf_counter()
            for i in range(cycles):
                t = time.perf_counter()
                busy = i % 5 == 4
                good = await visitor.visit(face if i % 4 == 1 else None, say=i % 4 == 2,
                                           while_open=(lambda pid_: while_busy(host, port, pid_, prefix)) if busy else None)
                name, attack = corpus[i % len(corpus)]
                refused = await attack(f"127.0.1.{i % 250 + 1}")
                hostile = [(name, refused)] + good.pop("hostile", [])
                row = {"cycle": i + 1, "visitor": good, "hostile": hostile,
                       "ok": good["ok"] and all(ok for _, ok in hostile), "seconds": round(time.perf_counter() - t, 2)}
                rows.append(row)
                await asyncio.sleep(max(0.0, visitor.offered + offer_interval_s + 0.05 - time.monotonic()))
                st = server_state(pid, tmpdir)
                samples.append(round(st["rss_mb"], 1))
                if log is not None:
                    log(f"{i + 1:4d} {'ok' if row['ok'] else 'FAILED'} {row['seconds']:5.1f} s  "
                        f"{', '.join(n for n, _ in hostile):60s} rss {st['rss_mb']:.0f} MB fds {st['fds']} "
                        f"threads {st['threads']} children {st['children']}")
                    if not row["ok"]:
                        log(f"      {json.dumps(row)[:600]}")
                if i + 1 == warmup:
                    warm = st
            wall = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        return {"rows": rows, "samples": samples, "warm": warm, "wall": wall}

    out = asyncio.run(main())
    end = server_state(pid, tmpdir)
    warm = out["warm"] or end
    growth = (end["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"]
    failed = [r for r in out["rows"] if not r["ok"]]
    left = leftovers(tmpdir)
    checks = {
        "the visitor was served and every hostile request refused plainly": not failed,
        f"RSS growth <= {max_growth:.0%} after the warm-up": growth <= max_growth,
        "file descriptors flat": end["fds"] <= warm["fds"],
        f"threads flat (within {THREAD_SLACK})": end["threads"] <= warm["threads"] + THREAD_SLACK,
        "child processes flat": end["children"] <= warm["children"],
        "no upload or spool left": not left,
    }
    return {
        "cycles": cycles, "warmup": warmup, "wall_s": round(out["wall"], 1),
        "after_warmup": {k: round(v, 1) for k, v in warm.items()},
        "end": {k: round(v, 1) for k, v in end.items()},
        "rss_growth": round(growth, 4), "rss_mb_samples": out["samples"], "left": left,
        "failed": failed[:5], "checks": checks, "passed": all(checks.values()),
    }


# ----------------------------------------------------------------------------- serving in this process

@contextlib.contextmanager
def serving(app):
    """Serve the ASGI ``app`` with uvicorn on a free port of 127.0.0.1, on a thread; yields its URL."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def serve_live(engine, max_side: int = 160, **options):
    """The app's live routes on uvicorn in this process (127.0.0.1), media on loopback only;
    ``options`` go to :func:`~lipsync.live.web.install`."""
    from aioice import ice
    from fastapi import FastAPI

    from lipsync.live.web import install

    from lipsync.memory import limit_malloc_arenas

    limit_malloc_arenas()  # as the app's server does at start (lipsync.webapp.server.main)
    original = ice.get_host_addresses
    ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []  # this machine only
    app = FastAPI()
    server = install(app, lambda: engine, **options)
    server.max_side = max_side
    try:
        with serving(app) as url:
            yield url, server
    finally:
        ice.get_host_addresses = original


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help="serve the live routes in this process")
    ap.add_argument("--checkpoint", help="with --serve: the Wav2Lip checkpoint (default: a scratch one, made here)")
    ap.add_argument("--precision", default="auto", help="with --serve: auto, fp32 or int8")
    ap.add_argument("--url", default="http://127.0.0.1:7860/")
    ap.add_argument("--server-pid", type=int, help="the app's process id (to measure it)")
    ap.add_argument("--tmpdir", type=Path, help="the app's TMPDIR (to look for leftovers)")
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--max-growth", type=float, default=0.05)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if not 1 <= a.cycles <= 2000 or not 0 <= a.warmup < a.cycles:
        raise SystemExit("1-2000 cycles, and a warm-up shorter than the run")
    log = None if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    if a.serve:
        from lipsync import LipSync

        checkpoint = a.checkpoint
        if checkpoint is None:
            from lipsync.models.scratch import write_scratch_checkpoint

            checkpoint = write_scratch_checkpoint(Path(tempfile.mkdtemp(prefix="live-soak-")) / "scratch.pth")
        engine = LipSync(checkpoint, device="cpu", precision=a.precision).load()
        with serve_live(engine, max_sessions=1) as (url, _):  # one place: the visitor's session makes it busy
            rep = run_soak(url, os.getpid(), None, cycles=a.cycles, warmup=a.warmup, max_growth=a.max_growth, log=log)
        rep["load"] = os.getloadavg()
        rep["network"] = engine.generator.description
    else:
        if a.server_pid is None:
            raise SystemExit("give --server-pid (the app's process) or --serve")
        rep = run_soak(a.url, a.server_pid, a.tmpdir, cycles=a.cycles, warmup=a.warmup, max_growth=a.max_growth,
                       log=log)
        rep["load"] = os.getloadavg()
    print(json.dumps(rep, indent=1))
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
