"""Quix Streams beside our worker, on the embedded broker, in the same run as the e2e figures.

The peer a user would pick instead (issue 15): Quix Streams 3.28 (confluent-kafka under
the hood) over 100,000 pre-produced events of 1,000 users, each mode on a fresh broker and
a 4-partition topic of its own. ``quix_noop``: ``sdf.update`` doing nothing (Quix's own
ceiling); ``quix_state``: a per-key state update with its changelog; ``quix_naive``: per-key
state plus one model call per event through the project's scorer, the obvious Quix version
of our job (``quix_worker.py``). ``e2e.events_per_s`` names the first two as references.

Tansu answers DescribeConfigs only with the configs a topic was created with, and Quix
reads ``retention.ms`` and ``retention.bytes`` from it when it sets up the changelog: the
topic is created with both, or Quix raises ``KeyError: 'retention.ms'``.

Needs the ``bench`` extra (``make bench`` installs it); without quixstreams the module skips.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "quixstreams",
    reason="quixstreams is not installed: `pip install -e '.[bench]'` (make bench does) to measure quix_*",
)

from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka import EmbeddedBroker
from streams.producer import produce_records
from tests.benchmarks.test_e2e import RECORDS
from tests.integration.helpers import fresh_settings

REPO = Path(__file__).resolve().parents[2]
EVENTS = 100_000
QUIX_RECORDS = RECORDS[:EVENTS]  # the first 100,000 of the e2e benchmark's events: 1,000 users
RUNS = 3
WEEK_MS = 7 * 24 * 3600 * 1000


def _quix_rate(mode: str, tmp_path: Path, *, window_s: float) -> float:
    """One Quix run on a fresh broker: events/s from the first processed event to the last."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker() as embedded:
        topic = f"quix-{mode}-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": embedded.bootstrap})
        config = {"retention.ms": str(WEEK_MS), "retention.bytes": "-1"}
        admin.create_topics([NewTopic(topic, 4, 1, config=config)])[topic].result(10)
        produce_records(fresh_settings(embedded.bootstrap, tmp_path, events_topic=topic), QUIX_RECORDS)
        done = subprocess.run(
            [
                sys.executable,
                str(REPO / "tests" / "benchmarks" / "quix_worker.py"),
                *(embedded.bootstrap, topic, f"quix-{mode}-{uuid.uuid4().hex[:6]}", mode),
                *(str(EVENTS), str(window_s), str(tmp_path / "state")),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert done.returncode == 0, f"quix {mode} worker failed:\n{done.stderr[-3000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["events"] > 1 and result["seconds"] > 0, result
    return (result["events"] - 1) / result["seconds"]


def _median_of_runs(bench: Any, mode: str, tmp_path: Path, unit: str) -> None:
    rates = [_quix_rate(mode, tmp_path / f"{mode}{i}", window_s=60) for i in range(RUNS)]
    bench(f"quix_{mode}.events_per_s", statistics.median(rates), unit=unit, runs=rates)


def test_quix_noop(bench: Any, tmp_path: Path) -> None:
    _median_of_runs(bench, "noop", tmp_path, "events/s (reference: Quix Streams, sdf.update no-op)")


def test_quix_state(bench: Any, tmp_path: Path) -> None:
    _median_of_runs(bench, "state", tmp_path, "events/s (reference: Quix Streams, per-key state with changelog)")


def test_quix_naive(bench: Any, tmp_path: Path) -> None:
    """Per event: state read, fold, one model call, policy, state write. One run, 20 s at most."""
    rate = _quix_rate("naive", tmp_path, window_s=20)
    bench("quix_naive.events_per_s", rate, unit="events/s (reference: per-event Quix, a model call per event)")
