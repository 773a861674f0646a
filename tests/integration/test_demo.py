"""`retention demo` runs in the suite, and nothing is lost on the way."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO

pytestmark = pytest.mark.integration


def test_demo_loses_nothing_and_intervenes(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--seconds", "20", "--summary-json", str(summary_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()[-3000:]
    summary = json.loads(summary_path.read_text())
    for key in (
        "events_produced",
        "events_consumed",
        "events_dead_lettered",
        "events_ignored",
        "scores",
        "interventions",
        "latency_ms_p50",
        "latency_ms_p99",
        "model_version",
    ):
        assert key in summary
    produced = summary["events_produced"]
    assert produced > 10_000
    assert summary["events_consumed"] == produced
    assert summary["events_applied"] + summary["events_dead_lettered"] + summary["events_ignored"] == produced
    assert summary["events_dead_lettered"] == summary["produced_by_kind"]["malformed"]
    assert summary["events_ignored"] == summary["produced_by_kind"]["unknown"]
    assert summary["scores"] > 0
    assert summary["interventions"]["coupon"] >= 1
    assert summary["interventions"]["recommendation"] >= 1
    assert summary["latency_ms_p50"] is not None and summary["latency_ms_p50"] > 0
    # The demo leaves no process behind: its broker's port is closed and no
    # process mentions it.
    match = re.search(rb"embedded broker \(Tansu\) up on 127.0.0.1:(\d+)", result.stdout)
    assert match, result.stdout.decode()[:2000]
    port = int(match.group(1))
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True).stdout == b""
