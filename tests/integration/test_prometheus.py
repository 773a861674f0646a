"""A real Prometheus scrapes a running worker and evaluates the project's rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.kafka import free_port
from streams.producer import produce_records
from training.simulator import SimConfig, encode_stream, simulate

from .helpers import REPO, fresh_settings, running_worker, wait_for_metric

pytestmark = pytest.mark.integration

RULES = REPO / "deploy" / "prometheus" / "rules"


def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="Debian's prometheus is not installed (.ci/run installs it)"
)
def test_prometheus_scrapes_the_worker_and_evaluates_the_rules(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{RULES / "recording.yml"}", "{RULES / "alerts.yml"}"]
scrape_configs:
  - job_name: retention-worker
    static_configs: [{{targets: ["{settings.metrics_host}:{settings.metrics_port}"]}}]
"""
    )
    records = list(encode_stream(simulate(SimConfig(users=50, days=30, seed=4)), seed=1, malformed_rate=0.02))
    with running_worker(settings, tmp_path / "worker.log"):
        server = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        )
        try:
            produce_records(settings, records)
            wait_for_metric(settings, "retention_events_total", len(records))
            deadline = time.monotonic() + 60
            while True:
                try:
                    up = api(port, "query", query='up{job="retention-worker"}')["result"]
                    events = api(port, "query", query="sum(retention_events_total)")["result"]
                    if up and up[0]["value"][1] == "1" and events and float(events[0]["value"][1]) == len(records):
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-2000:]
                time.sleep(0.5)
            time.sleep(3)  # a few rule evaluations
            groups = api(port, "rules")["groups"]
            rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
            outcome = api(port, "query", query="retention:events:rate1m")["result"]
        finally:
            server.terminate()
            server.wait(10)

    expected = {
        "retention:events:rate1m",
        "retention:dead_letters:rate5m",
        "retention:consumer_lag:sum",
        "RetentionWorkerDown",
        "RetentionConsumerLagGrowing",
        "RetentionRecoveryStuck",
    }
    assert expected <= set(rules)
    assert all(rule["health"] == "ok" for rule in rules.values()), {n: r.get("lastError") for n, r in rules.items()}
    assert {sample["metric"]["outcome"] for sample in outcome} >= {"applied", "dead_lettered"}
    assert rules["RetentionWorkerDown"]["state"] == "inactive"
