"""Erased and expired users stay gone when a second worker joins and recovers their partitions."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from retention_model.events import encode_event
from retention_model.pipeline.erase import erase_request
from streams.demo import metric_sum, scrape_metrics
from streams.kafka import free_port
from streams.producer import produce_records

from .helpers import fresh_settings, metrics_url, running_worker, wait_committed, wait_for_metric
from .test_erasure import user_page
from .test_rebalance import assigned
from .test_silence import T0, buyer_events

pytestmark = pytest.mark.integration


def test_erasure_and_expiry_survive_a_rebalance(broker: str, tmp_path: Path) -> None:
    first = fresh_settings(broker, tmp_path, partitions=4, state_ttl_days=30.0)
    second = first.replace(
        metrics_port=free_port(), web_port=free_port(), data_dir=str(tmp_path / f"b-{uuid.uuid4().hex[:6]}")
    )
    erased = [f"v{i:02d}" for i in range(8)]  # eight users: some land on each partition
    expiring = [f"x{i:02d}" for i in range(8)]  # silent after day 10: gone 30 days later in event time
    kept = [f"s{i:02d}" for i in range(16)]
    events = [e for u in erased + kept for e in buyer_events(u, 60)] + [
        e for u in expiring for e in buyer_events(u, 10)
    ]
    events.sort(key=lambda e: e.ts_ms)
    later = [e for u in kept for e in buyer_events(u, 90) if e.ts_ms > T0 + 61 * 86_400_000]
    later.sort(key=lambda e: e.ts_ms)
    requests = [(u.encode(), erase_request(u, request_id=f"r-{u}", requested_ms=T0), "valid") for u in erased]

    with running_worker(first, tmp_path / "a.log"):
        produce_records(first, [(e.user_id.encode(), encode_event(e), "valid") for e in events])
        wait_for_metric(first, "retention_events_total", len(events))
        produce_records(first, requests)  # mid-stream: their state is stored, and erased
        wait_for_metric(first, "retention_users_erased_total", len(erased))
        wait_for_metric(first, "retention_users_expired_total", len(expiring))
        wait_committed(first, len(events) + len(requests))
        with running_worker(second, tmp_path / "b.log"):
            deadline = time.monotonic() + 60
            while not (assigned(first) > 0 and assigned(second) > 0 and assigned(first) + assigned(second) == 4):
                assert time.monotonic() < deadline, "the two workers never split the partitions"
                time.sleep(0.3)
            # Both process the kept users' next events: the second has recovered its partitions.
            produce_records(first, [(e.user_id.encode(), encode_event(e), "valid") for e in later])
            deadline = time.monotonic() + 90
            while True:
                applied = sum(
                    metric_sum(scrape_metrics(metrics_url(s)), "retention_events_total", outcome="applied")
                    for s in (first, second)
                )
                if applied >= len(events) + len(later):
                    break
                assert time.monotonic() < deadline, f"applied {applied} of {len(events) + len(later)}"
                time.sleep(0.5)
            moved = assigned(second)
            pages = {
                u: (user_page(first.web_port, u, None)[0], user_page(second.web_port, u, None)[0])
                for u in erased + expiring + kept
            }
            tracked = sum(
                metric_sum(scrape_metrics(metrics_url(s)), "retention_users_tracked") for s in (first, second)
            )

    assert moved > 0
    # Asked on either worker (the request is routed to the owner): erased and expired users are absent.
    assert {u: p for u, p in pages.items() if u not in kept and p != (404, 404)} == {}
    assert {u: p for u, p in pages.items() if u in kept and p != (200, 200)} == {}
    assert tracked == len(kept)
