"""The worker end to end on a real broker: state, dead letters, scores, interventions, metrics."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from retention_model.events import DecodeError, Event, decode_event
from retention_model.features.derive import feature_vector
from retention_model.features.offline import replay_states
from retention_model.features.state import load_state
from retention_model.policy.policy import INTERVENTION_SCHEMA, SCORE_SCHEMA
from streams.demo import metric_sum
from streams.producer import produce_records
from training.simulator import BAD_PAYLOADS, SimConfig, encode_stream, simulate

from .helpers import (
    REPO,
    fresh_settings,
    read_topic,
    running_worker,
    settled_metrics,
    wait_for_metric,
    worker_env,
)

pytestmark = pytest.mark.integration


def test_worker_end_to_end(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path)
    records = list(
        encode_stream(simulate(SimConfig(users=120, days=75, seed=5)), seed=9, malformed_rate=0.01, unknown_rate=0.005)
    )
    kinds = Counter(kind for *_, kind in records)
    assert kinds["malformed"] > 10 and kinds["unknown"] > 5 and kinds["valid"] > 2000

    with running_worker(settings, tmp_path / "worker.log"):
        produced = produce_records(settings, records)
        assert produced == kinds
        wait_for_metric(settings, "retention_events_total", len(records))
        samples = settled_metrics(settings)
        scores = read_topic(broker, settings.scores_topic, settings.partitions)
        coupons = read_topic(broker, settings.coupon_topic, settings.partitions)
        recommendations = read_topic(broker, settings.recommendation_topic, settings.partitions)
        dead = read_topic(broker, settings.dlq_topic, settings.partitions)
        decisions = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.decisions_topic, settings.partitions)]
        changelog = read_topic(broker, settings.changelog_topics[0], settings.partitions)

    # Metrics count every record exactly once, by outcome.
    assert metric_sum(samples, "retention_events_total", outcome="applied") == kinds["valid"]
    assert metric_sum(samples, "retention_events_total", outcome="dead_lettered") == kinds["malformed"]
    assert metric_sum(samples, "retention_events_total", outcome="ignored") == kinds["unknown"]
    assert metric_sum(samples, "retention_dead_letters_total") == kinds["malformed"]
    lags = samples["retention_consumer_lag_records"]
    assert len(lags) == settings.partitions and all(value == 0 for _, value in lags)  # drained
    assert metric_sum(samples, "retention_scores_total") == len(scores)
    assert metric_sum(samples, "retention_interventions_total", kind="coupon") == len(coupons)
    assert metric_sum(samples, "retention_interventions_total", kind="recommendation") == len(recommendations)

    # Every malformed record is in the DLQ, byte for byte, with its reason and origin.
    assert len(dead) == kinds["malformed"]
    for _key, value, headers in dead:
        assert value in BAD_PAYLOADS
        decoded = decode_event(value)
        assert isinstance(decoded, DecodeError)
        assert headers["retention.dlq.reason"].decode() == decoded.reason
        assert headers["retention.dlq.topic"].decode() == settings.events_topic
        assert int(headers["retention.dlq.offset"]) >= 0

    # Every valid event is reflected in the user's state: identical to the offline path.
    valid = [decode_event(value) for _, value, kind in records if kind == "valid"]
    offline = replay_states(e for e in valid if isinstance(e, Event))
    latest: dict[bytes, bytes] = {}
    for key, value, _ in changelog:
        assert key is not None and value is not None
        latest[key] = value
    assert {k.decode() for k in latest} == set(offline)
    for user_id, expected in offline.items():
        streamed = load_state(latest[user_id.encode()])
        at = expected.last_seen_ms
        assert streamed.totals == expected.totals
        assert feature_vector(streamed, at) == pytest.approx(feature_vector(expected, at), rel=1e-9, abs=1e-9)

    # Scores and interventions arrive in the documented schemas.
    assert len(scores) >= len(offline)
    score = orjson.loads(scores[0][1])
    assert score["schema"] == SCORE_SCHEMA
    assert {"user_id", "risk", "tier", "model_version", "event_time", "reasons", "profile", "trigger"} <= set(score)
    assert {orjson.loads(v)["trigger"] for _, v, _ in scores} == {"event", "silence"}
    assert coupons and recommendations
    for key, value, _ in coupons + recommendations:
        body = orjson.loads(value)
        assert body["schema"] == INTERVENTION_SCHEMA
        assert key == body["user_id"].encode()
        assert body["model_version"] == score["model_version"]
        assert ("offer" in body) == (body["kind"] == "coupon")
        assert ("recommendation" in body) == (body["kind"] == "recommendation")
    ids = [orjson.loads(v)["intervention_id"] for _, v, _ in coupons + recommendations]
    assert len(set(ids)) == len(ids)

    # Every decision is logged once, with its action and reason; exactly the sent ones went out.
    assert metric_sum(samples, "retention_decisions_total") == len(decisions)
    assert len({d["decision_id"] for d in decisions}) == len(decisions)
    assert {d["decision_id"] for d in decisions if d["action"] == "sent"} == set(ids)
    assert {d["action"] for d in decisions} == {"sent", "held_out", "suppressed"}
    assert all(d["reason"] for d in decisions)
    held_users = {d["user_id"] for d in decisions if d["action"] == "held_out"}
    sent_users = {d["user_id"] for d in decisions if d["action"] == "sent"}
    assert not held_users & sent_users  # a control-group user never receives anything


def test_worker_refuses_a_missing_bundle(tmp_path: Path, broker: str) -> None:
    settings = fresh_settings(broker, tmp_path, model_path=str(tmp_path / "no-such-bundle"))
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=worker_env(settings),
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert b"no-such-bundle" in result.stderr and b"retention train" in result.stderr


def test_worker_without_a_broker_exits_with_an_actionable_message(tmp_path: Path) -> None:
    from streams.kafka import free_port

    settings = fresh_settings(f"127.0.0.1:{free_port()}", tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", "--broker-wait-s", "2"],
        env=worker_env(settings),
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert b"no Kafka broker answered" in result.stderr and b"RETENTION_BROKER" in result.stderr
