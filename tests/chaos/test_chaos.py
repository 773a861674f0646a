"""`make chaos`: kill -9 the worker at random points mid-stream, again and again, then check
that nothing was lost, nothing counted twice, and no intervention id ever carried two
contents. Writes the figures to $CHAOS_JSON (default chaos-results.json)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from retention_model.events import Event, EventType, decode_event
from retention_model.features.definitions import SIGNALS
from retention_model.features.offline import replay_states
from retention_model.features.state import load_state
from streams.demo import metric_sum, scrape_metrics
from streams.kafka import EmbeddedBroker, ensure_topics, fetched_high_watermarks
from streams.producer import produce_records
from tests.integration.helpers import REPO, fresh_settings, metrics_url, read_topic, settled_metrics, worker_env
from tests.integration.test_poison import CORPUS
from training.simulator import SimConfig, encode_stream, simulate

KILLS = int(os.environ.get("CHAOS_KILLS", "5"))
#: Events per second offered during the kills: the worker drains far faster, so this
#: (about 30 s for the log) is what keeps the stream running across all of them.
PRODUCE_RATE = 2_000
# One count signal per event type: their totals add up to the events a state has applied.
COUNTED = [i for i, s in enumerate(SIGNALS) if s.how == "count" and s.on != "coupon_purchases"]


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


def start_worker(settings: object, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=worker_env(settings),  # type: ignore[arg-type]
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until_assigned(settings: object, worker: subprocess.Popen[bytes], log: Path) -> None:
    """Until the worker serves metrics and owns partitions: the log may be drained already."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert worker.poll() is None, log.read_text()[-3000:]
        try:
            if metric_sum(scrape_metrics(metrics_url(settings)), "retention_assigned_partitions") > 0:  # type: ignore[arg-type]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the final worker never got partitions:\n{log.read_text()[-3000:]}")


def drained(broker: str, settings: object, ends: dict[tuple[str, int], int]) -> bool:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker, "group.id": settings.app_id, "enable.auto.commit": False})  # type: ignore[attr-defined]
    try:
        found = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
        return all(tp.offset == ends[(tp.topic, tp.partition)] for tp in found)
    finally:
        consumer.close()


def test_repeated_kills_lose_nothing_and_count_nothing_twice(broker: str, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "7")))
    settings = fresh_settings(broker, tmp_path, partitions=4)
    ensure_topics(settings)
    records = list(encode_stream(simulate(SimConfig(users=400, days=100, seed=13))))
    for _, payload, _ in CORPUS:
        records.insert(rng.randrange(len(records)), (b"poison-user", payload, "malformed"))
    # Produced while the worker is killed and restarted, so that every kill lands mid-stream:
    # pre-produced, the whole log drained before the later kills.
    producing = ThreadPoolExecutor(1).submit(produce_records, settings, records, rate=PRODUCE_RATE)

    faults = 0
    log = tmp_path / "worker.log"
    while faults < KILLS:
        worker = start_worker(settings, log)
        ready = time.monotonic()
        while time.monotonic() - ready < 120:
            try:
                if metric_sum(scrape_metrics(metrics_url(settings)), "retention_events_total") > 0:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        time.sleep(rng.uniform(0.2, 2.5))  # mid-stream
        worker.kill()
        worker.wait()
        faults += 1
    producing.result()
    ends = fetched_high_watermarks(broker, [(settings.events_topic, p) for p in range(settings.partitions)])
    assert sum(ends.values()) == len(records)
    worker = start_worker(settings, log)
    try:
        wait_until_assigned(settings, worker, log)
        deadline = time.monotonic() + 300
        while not drained(broker, settings, ends):
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the stream never drained"
            time.sleep(1)
        settled_metrics(settings)
        changelog = read_topic(broker, settings.changelog_topics[0], settings.partitions)
        dead = read_topic(broker, settings.dlq_topic, settings.partitions)
        interventions = read_topic(broker, settings.coupon_topic, settings.partitions) + read_topic(
            broker, settings.recommendation_topic, settings.partitions
        )
    finally:
        worker.terminate()
        worker.wait(30)

    valid = [event for _, value, kind in records if kind == "valid" for event in [decode_event(value)]]
    valid_events = [e for e in valid if isinstance(e, Event)]
    assert len(valid_events) == len(valid)
    offline = replay_states(valid_events)
    latest = {k.decode(): v for k, v, _ in changelog if k is not None and v is not None}
    lost = doubled = 0
    for user_id, expected in offline.items():
        want = sum(expected.totals[i] for i in COUNTED)
        got = sum(load_state(latest[user_id]).totals[i] for i in COUNTED) if user_id in latest else 0.0
        lost += max(0, int(want - got))
        doubled += max(0, int(got - want))
    contents: dict[str, set[bytes]] = defaultdict(set)
    for _, value, _ in interventions:
        contents[json.loads(value)["intervention_id"]].add(value)
    conflicting = sum(1 for bodies in contents.values() if len(bodies) > 1)
    resent = len(interventions) - len(contents)
    unique_dead = {(h["retention.dlq.partition"], h["retention.dlq.offset"]): h for _, _, h in dead}
    reasons = Counter(h["retention.dlq.reason"].decode() for h in unique_dead.values())
    coupon_times: dict[str, list[float]] = defaultdict(list)
    for bodies in contents.values():
        body = json.loads(next(iter(bodies)))
        if body["kind"] == "coupon":
            coupon_times[body["user_id"]].append(datetime.fromisoformat(body["event_time"]).timestamp())
    cooldown_s = settings.policy.coupon_cooldown_days * 86_400
    within_cooldown = sum(
        1 for times in coupon_times.values() for a, b in pairwise(sorted(times)) if b - a < cooldown_s
    )
    figures = {
        "faults_injected": faults,
        "events_checked": len(valid_events),
        "events_lost": lost,
        "double_counts": doubled,
        "conflicting_interventions": conflicting,
        "interventions_resent_identically": resent,
        "bad_inputs_tried": len(CORPUS),
        "bad_inputs_dead_lettered": len(unique_dead),
        "dead_letters_written": len(dead),
        "coupons_within_cooldown_of_another": within_cooldown,
        "dead_letter_reasons": dict(reasons),
    }
    Path(os.environ.get("CHAOS_JSON", "chaos-results.json")).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    assert figures["events_lost"] == 0
    assert figures["double_counts"] == 0
    assert figures["conflicting_interventions"] == 0
    assert figures["bad_inputs_dead_lettered"] == len(CORPUS)
    assert any(e.type is EventType.PURCHASE for e in valid_events)
