"""Helpers for tests against a real broker: worker processes and topic readers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streams import kafka
from streams.demo import metric_sum, scrape_metrics
from streams.kafka import ensure_topics, free_port
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def fresh_settings(broker: str, tmp_path: Path, **changes: object) -> Settings:
    """Settings with unique topic and group names, free ports and a private data dir."""
    tag = uuid.uuid4().hex[:8]
    base = dict(
        broker=broker,
        broker_kind="kafka" if os.environ.get("RETENTION_TEST_BROKER") else "tansu",
        app_id=f"retention-test-{tag}",
        events_topic=f"events-{tag}",
        dlq_topic=f"events-{tag}.dlq",
        scores_topic=f"scores-{tag}",
        decisions_topic=f"decisions-{tag}",
        coupon_topic=f"coupon-{tag}",
        recommendation_topic=f"recommendation-{tag}",
        erasures_topic=f"erasures-{tag}",
        outcomes_topic=f"outcomes-{tag}",
        erasure_requests_topic=f"erasure-requests-{tag}",
        partitions=3,
        metrics_port=free_port(),
        web_port=free_port(),
        session_timeout_s=2.0,
        data_dir=str(tmp_path / f"data-{tag}"),
        log_level="info",
        # The tests feed simulated months in seconds: a replay, whose limits run on event
        # time (the tests of real-time limits and the circuit breaker set it to "false").
        replay="true",
    )
    base.update(changes)
    return Settings.load({}, base)


def clean_env() -> dict[str, str]:
    """This process's environment without what would make a child not the one a user starts: its
    RETENTION_* settings, and TensorFlow's log level (set here by any test that loaded a model
    in process; the worker chooses its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_") and k != "TF_CPP_MIN_LOG_LEVEL"}


def worker_env(settings: Settings) -> dict[str, str]:
    env = clean_env()
    for name in Settings.__dataclass_fields__:
        env[f"RETENTION_{name.upper()}"] = str(getattr(settings, name))
    return env


def metrics_url(settings: Settings) -> str:
    return f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"


@contextmanager
def running_worker(
    settings: Settings, log_path: Path, timeout_s: float = 90.0, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``retention worker`` and yield once it has partitions assigned.

    ``extra_env`` adds variables the settings do not carry (test-only hooks).
    """
    ensure_topics(settings)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**worker_env(settings), **(extra_env or {})},
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise AssertionError(f"worker exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if metric_sum(scrape_metrics(metrics_url(settings)), "retention_assigned_partitions") > 0:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready in {timeout_s}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_metric(settings: Settings, name: str, at_least: float, timeout_s: float = 60.0, **labels: str) -> float:
    deadline = time.monotonic() + timeout_s
    value = 0.0
    while time.monotonic() < deadline:
        value = metric_sum(scrape_metrics(metrics_url(settings)), name, **labels)
        if value >= at_least:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{name}{labels} reached {value}, wanted {at_least}")


def settled_metrics(
    settings: Settings, quiet_s: float = 1.0, timeout_s: float = 30.0
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Metrics once nothing has changed for ``quiet_s``: the last batch is fully published.

    ``retention_events_total`` counts a record when it is decoded, before its user is
    scored and published, so reading counts right after it reaches a total races the
    last batch.
    """
    deadline = time.monotonic() + timeout_s
    last = scrape_metrics(metrics_url(settings))
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = scrape_metrics(metrics_url(settings))
        counters = {k: v for k, v in now.items() if k.endswith("_total")}
        if counters != {k: v for k, v in last.items() if k.endswith("_total")}:
            stable_since = time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            return now
        last = now
    raise AssertionError("metrics did not settle")


def committed(broker: str, group: str, topic: str, partitions: int, consumer: Any = None) -> dict[int, int]:
    """The group's committed offset of each partition of ``topic`` (negative where none is).

    ``consumer``: one of the group's to ask through (a poll loop keeps one open); else one for this call.
    """
    from confluent_kafka import Consumer, TopicPartition

    asker = consumer or Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False})
    try:
        found = asker.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        if consumer is None:
            asker.close()


def wait_committed(settings: Settings, records: int, timeout_s: float = 60.0) -> None:
    """Until the worker's group has committed ``records`` events in all (offsets start at 0 per partition).

    The worker commits a batch once every record it wrote (changelog, scores, interventions)
    is acknowledged, so this, unlike the counters, which move when records are queued, says
    that what the worker wrote for those events can be read back.
    """
    from confluent_kafka import Consumer

    group = settings.app_id
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": group, "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            offsets = committed(settings.broker, group, settings.events_topic, settings.partitions, consumer)
            done = sum(max(offset, 0) for offset in offsets.values())
            if done >= records:
                return
            assert time.monotonic() < deadline, f"committed {done} of {records}"
            time.sleep(0.3)
    finally:
        consumer.close()


def read_topic(
    broker: str, topic: str, partitions: int, idle_s: float = 2.0
) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    """Every record of a topic from the beginning: (key, value, headers)."""
    messages = kafka.read_topic({"bootstrap.servers": broker}, topic, idle_s=idle_s, partitions=partitions)
    return [(m.key(), m.value(), dict(m.headers() or [])) for m in messages]


def assert_state_matches_offline(
    changelog: list[tuple[bytes | None, bytes | None, dict[str, bytes]]], events: list[Any]
) -> None:
    """The latest changelog value of every user equals the offline replay of ``events``:
    the same users, the same exact totals, and the same features to 1e-9."""
    import pytest

    from retention_model.features.derive import feature_vector
    from retention_model.features.offline import replay_states
    from retention_model.features.state import DAY_MS, load_state

    offline = replay_states(events)
    latest = {k.decode(): v for k, v, _ in changelog if k is not None and v is not None}
    missing, extra = sorted(set(offline) - set(latest)), sorted(set(latest) - set(offline))
    assert not missing and not extra, (
        f"{len(missing)} users of the offline replay have no changelog record: {missing[:10]}; "
        f"{len(extra)} changelog users are not in the replay: {extra[:10]}"
    )
    for user_id, expected in offline.items():
        streamed = load_state(latest[user_id])
        assert streamed.totals == expected.totals, (user_id, streamed.totals, expected.totals, streamed.offset)
        at = expected.last_seen_ms + DAY_MS
        assert feature_vector(streamed, at) == pytest.approx(feature_vector(expected, at), rel=1e-9, abs=1e-9)
