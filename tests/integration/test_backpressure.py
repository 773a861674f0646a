"""Backpressure: a backlog far larger than a batch makes lag grow, not memory; nothing is lost.

The worker drains some 50,000 events/s, about as fast as one producer thread fills the
topic on two cores, so a flood started beside it need not build a backlog at all. Most of
the flood is therefore produced before the worker starts (a worker coming back after an
outage), and the rest while it drains.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from retention_model.features.offline import events_by_user
from streams.demo import metric_sum, scrape_metrics
from streams.kafka import ensure_topics
from streams.producer import produce_records
from training.simulator import SimConfig, encode_stream, simulate

from .helpers import (
    assert_state_matches_offline,
    fresh_settings,
    metrics_url,
    read_topic,
    running_worker,
    wait_committed,
)

pytestmark = pytest.mark.integration


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_flood_builds_lag_not_memory_and_loses_nothing(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path)
    events = list(simulate(SimConfig(users=800, days=120, seed=12)))
    records = list(encode_stream(iter(events)))
    samples: list[tuple[float, float, float]] = []  # (seconds, lag, rss MB)
    backlog = len(records) * 3 // 4
    ensure_topics(settings)
    assert sum(produce_records(settings, records[:backlog]).values()) == backlog

    with running_worker(settings, tmp_path / "worker.log") as worker:
        baseline_mb = rss_mb(worker.pid)
        started = time.monotonic()
        producer = threading.Thread(target=produce_records, args=(settings, records[backlog:]))
        producer.start()  # the rest of the flood, as fast as the client goes
        deadline = started + 240
        while True:
            metrics = scrape_metrics(metrics_url(settings))
            applied = metric_sum(metrics, "retention_events_total", outcome="applied")
            samples.append(
                (time.monotonic() - started, metric_sum(metrics, "retention_consumer_lag_records"), rss_mb(worker.pid))
            )
            if applied >= len(records) and not producer.is_alive():
                break
            assert time.monotonic() < deadline, f"applied {applied} of {len(records)}"
            time.sleep(0.2)  # the worker drains the backlog in seconds
        producer.join()
        wait_committed(settings, len(records))  # the last batch's changelog records are acknowledged
        changelog = read_topic(broker, settings.changelog_topics[0], settings.partitions)

    peak_lag = max(lag for _, lag, _ in samples)
    drained_s = samples[-1][0]
    print(  # the figures quoted in the README's Guarantees (run with -s)
        f"backpressure: {len(records)} records, peak lag {peak_lag:.0f}, drained in {drained_s:.0f}s, "
        f"RSS {samples[0][2]:.0f} -> peak {max(mb for *_, mb in samples):.0f} MB"
    )
    assert peak_lag > len(records) / 4, f"the flood never built a backlog (peak lag {peak_lag})"
    # Memory follows Faust's bounded buffers, not the backlog: the worker holds at most a
    # few fetches and one micro-batch, whatever the lag.
    peak_mb = max(mb for *_, mb in samples)
    assert peak_mb - baseline_mb < 250, (baseline_mb, peak_mb)
    during_backlog = [mb for _, lag, mb in samples if lag > peak_lag / 2]
    assert max(during_backlog) - min(during_backlog) < 150, during_backlog
    # Nothing lost, nothing counted twice.
    assert len(events_by_user(events)) == len({k for k, _, _ in changelog if k is not None})
    assert_state_matches_offline(changelog, events)
