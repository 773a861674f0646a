"""Time and money under attack: far-future events, record timestamps, a surge of interventions,
retried events and a hot key, against a real worker on a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from retention_model.events import MAX_TS_MS, MIN_TS_MS, Event, EventType, encode_event
from retention_model.features.state import load_state
from streams.demo import metric_sum, scrape_metrics
from streams.producer import make_producer, produce_records
from training.simulator import SimConfig, encode_stream, simulate

from .helpers import REPO, fresh_settings, metrics_url, read_topic, running_worker, settled_metrics, wait_for_metric

pytestmark = pytest.mark.integration

YEAR_2099_MS = 4_070_908_800_000


def sent(broker: str, topic: str, partitions: int) -> int:
    return len(read_topic(broker, topic, partitions, idle_s=1.0))


def dlq_reasons(broker: str, topic: str, partitions: int) -> list[str]:
    return [headers["retention.dlq.reason"].decode() for _, _, headers in read_topic(broker, topic, partitions)]


def test_a_dozen_far_future_events_send_no_coupon_storm(broker: str, tmp_path: Path) -> None:
    """The attack from the issue: after a base log, 12 new users' events dated 2099 change nothing."""
    settings = fresh_settings(broker, tmp_path)
    base = list(encode_stream(simulate(SimConfig(users=150, days=60, seed=21))))
    future = [
        (f"future-{i}".encode(), encode_event(Event(f"f{i}", f"future-{i}", EventType.VIEW, YEAR_2099_MS + i)), "valid")
        for i in range(12)
    ]
    with running_worker(settings, tmp_path / "worker.log"):
        produce_records(settings, base)
        wait_for_metric(settings, "retention_events_total", len(base))
        before = settled_metrics(settings)
        coupons = sent(broker, settings.coupon_topic, settings.partitions)
        recommendations = sent(broker, settings.recommendation_topic, settings.partitions)
        assert coupons > 0 and recommendations > 0  # the base log does produce interventions

        produce_records(settings, future)
        wait_for_metric(settings, "retention_events_total", len(base) + 12)
        time.sleep(3.0)  # what a storm would need to start: the old worker sent hundreds within seconds
        after = settled_metrics(settings)

    # At most the new users' own decisions on top (here none: their only events were refused).
    assert sent(broker, settings.coupon_topic, settings.partitions) <= coupons + 12
    assert sent(broker, settings.recommendation_topic, settings.partitions) <= recommendations + 12
    assert metric_sum(after, "retention_silence_rescored_total") == metric_sum(
        before, "retention_silence_rescored_total"
    )
    assert dlq_reasons(broker, settings.dlq_topic, settings.partitions).count("timestamp_in_future") == 12
    # The replay itself jumps (days per batch); the 12 events moved no watermark at all.
    assert metric_sum(after, "retention_watermark_jumps_total") == metric_sum(before, "retention_watermark_jumps_total")


def test_record_timestamps_and_the_schemas_time_bounds(broker: str, tmp_path: Path) -> None:
    """An event ahead of its record's timestamp is refused; a record timestamp from the future
    is not trusted (the wall clock decides); the schema's oldest time is accepted, its newest refused."""
    settings = fresh_settings(broker, tmp_path)
    now_ms = int(time.time() * 1000)
    cases = [
        # (user, event time, record timestamp, expected outcome)
        ("ahead-of-record", now_ms, now_ms - 3_600_000, "timestamp_in_future"),
        ("record-from-the-future", now_ms, YEAR_2099_MS, "applied"),
        ("both-in-the-future", YEAR_2099_MS, YEAR_2099_MS, "timestamp_in_future"),
        ("oldest-allowed", MIN_TS_MS, now_ms, "applied"),
        ("newest-allowed", MAX_TS_MS - 1, now_ms, "timestamp_in_future"),
        ("old-replayed-event", now_ms - 400 * 86_400_000, now_ms, "applied"),
    ]
    with running_worker(settings, tmp_path / "worker.log"):
        producer = make_producer(settings.broker)
        for user, ts, record_ts, _ in cases:
            value = encode_event(Event(f"{user}-1", user, EventType.VIEW, ts))
            producer.produce(settings.events_topic, key=user.encode(), value=value, timestamp=record_ts)
        assert producer.flush(30) == 0
        wait_for_metric(settings, "retention_events_total", len(cases))
        samples = settled_metrics(settings)
    refused = [user for user, *_, expected in cases if expected == "timestamp_in_future"]
    assert metric_sum(samples, "retention_dead_letters_total", reason="timestamp_in_future") == len(refused)
    assert metric_sum(samples, "retention_events_total", outcome="applied") == len(cases) - len(refused)
    dead = read_topic(broker, settings.dlq_topic, settings.partitions)
    assert sorted(key.decode() for key, _, _ in dead if key) == sorted(refused)
    assert all(b"RETENTION_MAX_FUTURE_SKEW_S" in headers["retention.dlq.detail"] for _, _, headers in dead)


def test_a_retried_purchase_counts_once_and_a_hot_key_stays_bounded(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path)
    t0 = 1_736_000_000_000
    order = encode_event(Event("order-1", "buyer", EventType.PURCHASE, t0, price=100.0, order_id="o-1"))
    retries = [(b"buyer", order, "valid")] * 5
    fresh = encode_event(Event("order-2", "buyer", EventType.PURCHASE, t0 + 60_000, price=40.0, order_id="o-2"))
    hot = [
        (b"hot", encode_event(Event(f"h{i}", "hot", EventType.VIEW, t0 + i * 1000, item_id=f"sku-{i}")), "valid")
        for i in range(5000)
    ]
    others = list(encode_stream(simulate(SimConfig(users=30, days=10, seed=4))))
    with running_worker(settings, tmp_path / "worker.log"):
        produce_records(settings, [*retries, (b"buyer", fresh, "valid"), *hot, *others])
        total = len(retries) + 1 + len(hot) + len(others)
        wait_for_metric(settings, "retention_events_total", total)
        samples = settled_metrics(settings)
        with urllib.request.urlopen(f"http://{settings.web_host}:{settings.web_port}/users/buyer/", timeout=10) as page:
            shown = json.loads(page.read())
    assert metric_sum(samples, "retention_events_total", outcome="duplicate_event") == 4
    changelog = read_topic(broker, settings.changelog_topics[0], settings.partitions)
    latest = {key: value for key, value, _ in changelog if key and value}
    buyer = load_state(latest[b"buyer"])
    assert buyer.totals[5] == 2  # purchases: the five copies count once, the new order counts
    assert shown["features"]["purchases_count_total"] == 2
    assert shown["features"]["spend_sum_total"] == 140.0
    assert len(latest[b"hot"]) <= 1024  # 5,000 events of one user: the state stays bounded
    scored_others = {key for key, _, _ in read_topic(broker, settings.scores_topic, settings.partitions)}
    assert {key for key, *_ in others} <= scored_others  # everyone else was scored too


def test_a_replayed_log_in_a_live_worker_trips_the_circuit_breaker(broker: str, tmp_path: Path) -> None:
    """120 days of history at full speed without RETENTION_REPLAY: the breaker stops the surge,
    scores keep flowing, and an operator closes it with `retention circuit close`."""
    settings = fresh_settings(
        broker, tmp_path, replay="false", circuit_min_per_minute=40, circuit_surge_factor=5.0, circuit_cooldown_s=0.0
    )
    events = list(encode_stream(simulate(SimConfig(users=300, days=120, seed=5))))
    with running_worker(settings, tmp_path / "worker.log"):
        produce_records(settings, events)
        wait_for_metric(settings, "retention_events_total", len(events))
        wait_for_metric(settings, "retention_circuit_open", 1)
        samples = settled_metrics(settings)
        status = subprocess.run(
            [sys.executable, "-m", "streams.cli", "circuit", "status", "--web-port", str(settings.web_port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        closed = subprocess.run(
            [sys.executable, "-m", "streams.cli", "circuit", "close", "--web-port", str(settings.web_port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        reopened = metric_sum(scrape_metrics(metrics_url(settings)), "retention_circuit_open")
    assert "circuit breaker: OPEN" in status and "would pass 40" in status
    assert "circuit breaker: closed" in closed and reopened == 0
    assert metric_sum(samples, "retention_circuit_trips_total") == 1
    acted = metric_sum(samples, "retention_decisions_total", action="sent") + metric_sum(
        samples, "retention_decisions_total", action="held_out"
    )
    assert acted <= 40  # the replay started within one minute: at most the floor got through
    assert metric_sum(samples, "retention_decision_rules_total", rule="circuit_open") > 0
    decisions = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.decisions_topic, settings.partitions)]
    assert any(d["rule"] == "circuit_open" and "circuit breaker open" in d["reason"] for d in decisions)
    scores = read_topic(broker, settings.scores_topic, settings.partitions)
    assert len({key for key, _, _ in scores}) == 300  # scores keep flowing for everyone
