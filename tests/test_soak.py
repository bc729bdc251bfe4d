"""A short soak of the running app (scripts/soak.py, 20 requests): no creep, nothing left behind.

The full run is ``scripts/soak.py --requests 200`` against a running app (see its docstring).
"""

from __future__ import annotations

import sys
import time

import pytest

from conftest import ROOT
from test_app import running_app

sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="module")
def soak_server(checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soak")
    info: dict = {}
    with running_app(checkpoint, tmp, info=info) as (url, log_path):
        yield url, info["pid"], tmp, log_path


def test_fourteen_requests_leave_the_server_as_they_found_it(soak_server):
    """Text, audio and video requests, one cancelled mid-run, bad inputs with clear messages;
    after the warm-up RSS grows <= 5 %, and file descriptors, threads, children and folders stay flat."""
    import soak

    url, pid, tmp, log_path = soak_server
    t = time.perf_counter()
    report = soak.run_soak(url, pid, tmp, requests=14, warmup=8, base={"max_side": 480, "frame_step": 2})
    print(f"\nsoak: {time.perf_counter() - t:.0f} s, RSS {report['after_warmup']['rss_mb']:.0f} -> "
          f"{report['end']['rss_mb']:.0f} MB ({report['rss_growth']:+.1%})")
    assert not report["failed"], report["failed"]
    assert report["passed"], report["checks"]
    assert "Traceback" not in log_path.read_text(errors="replace")
