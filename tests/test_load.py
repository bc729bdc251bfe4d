"""Many concurrent API requests against a small queue: each succeeds or is turned away
quickly, nothing errors, and the server's resources return to where they started."""

import sys

import pytest

from conftest import ROOT
from test_app import running_app

sys.path.insert(0, str(ROOT / "scripts"))
from load_test import run_load  # noqa: E402


@pytest.mark.slow
def test_concurrent_requests_with_a_small_queue(checkpoint, tmp_path):
    info: dict = {}
    with running_app(checkpoint, tmp_path, env_extra={"LIPSYNC_QUEUE_SIZE": "2"}, info=info) as (url, log):
        report = run_load(url, requests=8, concurrency=8, server_pid=info["pid"], tmpdir=tmp_path, timeout=240)
        print(report)
    assert report["counts"]["error"] == 0 and report["counts"]["bad-result"] == 0, report
    assert report["counts"]["ok"] >= 1, report
    assert report["counts"]["queue-full"] >= 1, report  # the small queue really filled up
    assert report["slowest_rejection_s"] < 30, report  # turned away quickly, not after waiting its turn
    assert {"open_files", "children"} <= set(report["server_before"]), report
    for key, before in report["server_before"].items():
        assert report["server_after"][key] <= before, report
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and " 500 " not in text
