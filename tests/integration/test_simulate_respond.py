"""`retention simulate --respond` against a real broker and worker: the simulated users answer
the worker's interventions, and the command prints the measured and the true uplift."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO, clean_env, fresh_settings, running_worker, worker_env

pytestmark = pytest.mark.integration

PERCENT = r"([+-]\d+\.\d)%"


def simulate(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "simulate", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_simulated_users_answer_the_worker_and_the_uplift_is_measured(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path)
    with running_worker(settings, tmp_path / "worker.log"):
        result = simulate(
            worker_env(settings),
            "--respond",
            "--users",
            "200",
            "--days",
            "90",
            "--seed",
            "18",
            "--rate",
            "3000",
            "--respond-tail-s",
            "2",
            "--broker-wait-s",
            "10",
        )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:] + (tmp_path / "worker.log").read_text()[-3000:]
    assert "Traceback" not in result.stderr
    answered = re.search(
        r"^responses: (\S+) coupons redeemed of (\S+), (\S+) clicks on .*\((\S+) of (\S+) interventions answered\)$",
        out,
        re.M,
    )
    assert answered, out
    redeemed, coupons, clicks, n_answered, n_read = (int(g.replace(",", "")) for g in answered.groups())
    assert 0 < n_answered <= n_read, out
    assert coupons > 0 and redeemed + clicks > 0, out
    measured = re.search(
        rf"^uplift vs holdout: {PERCENT} \(95% CI {PERCENT} \.\. {PERCENT}; (\S+) treated, (\S+) holdout", out, re.M
    )
    assert measured, out
    uplift, low, high = (float(measured.group(i)) for i in (1, 2, 3))
    assert low <= uplift <= high
    assert int(measured.group(4).replace(",", "")) > 0 and int(measured.group(5).replace(",", "")) > 0
    true = re.search(rf"^true uplift \(simulator\): {PERCENT} over the same (\S+) users", out, re.M)
    assert true, out
    assert float(true.group(1)) > 0  # persuadable users exist and were counted


def test_respond_without_a_broker_says_so_in_one_line(tmp_path: Path) -> None:
    env = clean_env()
    result = simulate(
        {**env, "RETENTION_BROKER": "127.0.0.1:1"}, "--respond", "--users", "5", "--days", "3", "--broker-wait-s", "2"
    )
    out = (result.stdout + result.stderr).strip()
    assert result.returncode == 3, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
