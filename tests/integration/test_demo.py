"""`retention demo` runs in the suite, and nothing is lost on the way."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .helpers import REPO, clean_env

pytestmark = pytest.mark.integration


def test_demo_loses_nothing_and_intervenes(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    env = clean_env()
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
    # The closed loop: simulated users answered, and the effect against the holdout is in the summary.
    effect = summary["effect"]
    for key in ("uplift", "ci_low", "ci_high", "n_treated", "n_holdout", "redemptions", "clicks", "true_uplift"):
        assert key in effect
    assert 0 < effect["interventions_answered"] <= effect["interventions_read"]
    assert effect["clicks"] > 0
    assert effect["n_treated"] > 0
    if effect["uplift"] is not None:
        assert effect["ci_low"] <= effect["uplift"] <= effect["ci_high"]
    assert b"uplift vs holdout" in result.stdout
    if effect["true_uplift"] is not None:
        assert b"true uplift (simulator)" in result.stdout
    # Live quality: the demo replays 120 days, so sampled scores' 30-day horizons close in the run.
    live = summary["model_live"]
    assert live["n"] >= 50, live
    assert 0.5 < live["roc_auc"] <= 1 and 0 <= live["brier"] < 0.25 and 0 <= live["ece"] <= 1, live
    assert b"model, live" in result.stdout
    # The demo leaves no process behind: its broker's port is closed and no
    # process mentions it.
    match = re.search(rb"embedded broker \(Tansu\) up on 127.0.0.1:(\d+)", result.stdout)
    assert match, result.stdout.decode()[:2000]
    port = int(match.group(1))
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True).stdout == b""


def _ignore_sigint() -> None:
    """What a background job of a non-interactive shell inherits: SIGINT set to ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_demo_stops_everything_on_ctrl_c_even_when_started_with_sigint_ignored() -> None:
    """Python leaves an inherited SIG_IGN in place, so the demo must install its own Ctrl-C handler;
    `make test` run as such a background job saw the demo ignore Ctrl-C and keep its broker and worker."""
    env = clean_env()
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "demo", "--seconds", "120"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_ignore_sigint,
    )
    port = None
    children: list[int] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline().decode()
            if not line and process.poll() is not None:
                break
            if "embedded broker (Tansu) up on" in line:
                port = int(line.rsplit(":", 1)[1])
            if "streaming" in line:
                break
        assert port is not None and process.poll() is None
        # Its broker and worker: these, not any other test's, must be gone afterwards.
        found = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout
        children = [int(pid) for pid in found.split()]
        assert len(children) >= 2, found
        # Keep reading what it prints: a full pipe would block its last words, not its Ctrl-C.
        printed: list[bytes] = []
        reader = threading.Thread(target=lambda: printed.extend(process.stdout or ()), daemon=True)
        reader.start()
        time.sleep(2)
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(60) == 130
        except subprocess.TimeoutExpired:
            tail = b"".join(printed[-40:]).decode(errors="replace")
            raise AssertionError(f"still running 60 s after Ctrl-C; it printed:\n{tail}") from None
    finally:
        if process.poll() is None:
            process.kill()  # its children get SIGTERM with it (die_with_parent)
            process.wait()
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
