"""Erasure on a real broker: `retention forget` mid-stream, a SIGKILL, recovery from the changelogs."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from retention_model.events import Event, EventType, encode_event
from retention_model.features.offline import replay_states
from retention_model.features.state import DAY_MS, load_state
from streams import kafka
from streams.demo import metric_sum
from streams.producer import produce_records

from .helpers import (
    REPO,
    fresh_settings,
    read_topic,
    running_worker,
    settled_metrics,
    wait_committed,
    wait_for_metric,
    worker_env,
)
from .test_silence import T0, buyer_events

pytestmark = pytest.mark.integration

TOKEN = "erasure-test-token"


def latest(records: list[tuple[bytes | None, bytes | None, dict[str, bytes]]]) -> dict[bytes, bytes]:
    """A changelog read the way recovery reads it: the last value per key, a tombstone deleting it."""
    out: dict[bytes, bytes] = {}
    for key, value, _ in records:
        if key is None:
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def user_page(port: int, user: str, token: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/users/{user}/", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as page:
            return page.status, json.loads(page.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_an_erased_user_stays_erased_after_a_kill_and_recovery(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path, api_token=TOKEN, erasures_topic=f"erasures-{tmp_path.name[-20:]}")
    victims = ["gone-1", "back-2"]
    others = [f"u{i:02d}" for i in range(24)]
    events = [e for u in victims + others for e in buyer_events(u, 40)]
    events.sort(key=lambda e: e.ts_ms)
    first = [(e.user_id.encode(), encode_event(e), "valid") for e in events]
    return_ms = T0 + 50 * DAY_MS
    comeback = Event("back-2-new", "back-2", EventType.VIEW, return_ms, category="games")
    later = [e for u in others for e in buyer_events(u, 80) if e.ts_ms > T0 + 41 * DAY_MS]
    later.sort(key=lambda e: e.ts_ms)

    with running_worker(settings, tmp_path / "worker-1.log") as worker:
        produce_records(settings, first)
        wait_for_metric(settings, "retention_events_total", len(first))
        forget = subprocess.run(
            [sys.executable, "-m", "streams.cli", "forget", *victims, "--request-id", "dsr-1", "--wait-s", "60"],
            cwd=REPO,
            env=worker_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert forget.returncode == 0, forget.stdout + forget.stderr
        assert "erased: user gone-1, request dsr-1-0" in forget.stdout
        produce_records(settings, [(b"back-2", encode_event(comeback), "valid")])
        wait_for_metric(settings, "retention_events_total", len(first) + 1)
        # The requests are committed: after the kill only the changelogs' tombstones keep the users erased.
        wait_committed(settings, len(first) + len(victims) + 1)
        worker.kill()  # SIGKILL: recovery must replay the tombstones, not resurrect the users
        worker.wait()

    with running_worker(settings, tmp_path / "worker-2.log"):
        produce_records(settings, [(e.user_id.encode(), encode_event(e), "valid") for e in later])
        wait_for_metric(settings, "retention_events_total", len(later), outcome="applied")
        samples = settled_metrics(settings)
        gone = user_page(settings.web_port, "gone-1", TOKEN)
        back = user_page(settings.web_port, "back-2", TOKEN)
        without_token = user_page(settings.web_port, "u00", None)
        wrong_token = user_page(settings.web_port, "u00", "not-it")
        other = user_page(settings.web_port, "u00", TOKEN)
        circuit = [sys.executable, "-m", "streams.cli", "circuit", "status"]
        env = worker_env(settings)
        with_token = subprocess.run(circuit, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        env.pop("RETENTION_API_TOKEN")
        no_token = subprocess.run(circuit, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    assert gone[0] == 404
    assert back[0] == 200 and back[1]["features"]["purchases_count_total"] == 0  # a new, empty history
    assert without_token[0] == 401 and wrong_token[0] == 401 and "features" not in without_token[1]
    assert other[0] == 200
    assert with_token.returncode == 0 and "circuit breaker: closed" in with_token.stdout  # the CLI sends the token
    assert no_token.returncode == 2 and "wants its API token" in no_token.stderr

    confirmations = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.erasures_topic, settings.partitions)]
    assert {c["user_id"] for c in confirmations} == set(victims)
    # At least once: a request read again after the kill is confirmed again, under the same id.
    first_seen = {c["request_id"]: c for c in reversed(confirmations)}
    assert sorted(first_seen) == ["dsr-1-0", "dsr-1-1"]
    assert all(
        c["removed"]["state_bytes"] > 0 and c["removed"]["silence_timer_entries"] >= 1 for c in first_seen.values()
    )

    states = latest(read_topic(broker, settings.changelog_topics[0], settings.partitions))
    timers = latest(read_topic(broker, settings.changelog_topics[1], settings.partitions))
    assert b"gone-1" not in states
    assert not any(b"gone-1" in bucket.split(b"\n") for bucket in timers.values())
    assert load_state(states[b"back-2"]).first_seen_ms == return_ms
    # Everyone else is untouched: their state equals the offline replay of their own events.
    offline = replay_states([e for e in events + later if e.user_id in others] + [comeback])
    assert set(states) == {u.encode() for u in offline}
    for user, expected in offline.items():
        assert load_state(states[user.encode()]).totals == expected.totals, user
    assert metric_sum(samples, "retention_users_tracked") == len(others) + 1


def test_a_request_on_the_erasure_requests_topic_is_forwarded_and_honoured(broker: str, tmp_path: Path) -> None:
    from confluent_kafka import Producer

    from streams.commands.forget import wait_for_confirmations

    settings = fresh_settings(broker, tmp_path)
    users = ["dsr-user", "kept-1", "kept-2"]
    events = sorted((e for u in users for e in buyer_events(u, 20)), key=lambda e: e.ts_ms)
    with running_worker(settings, tmp_path / "worker.log"):
        produce_records(settings, [(e.user_id.encode(), encode_event(e), "valid") for e in events])
        wait_for_metric(settings, "retention_events_total", len(events))
        # The privacy system keys its requests as it likes (here by ticket, default partitioner).
        privacy = Producer({"bootstrap.servers": broker})
        request = {"user_id": "dsr-user", "request_id": "ticket-7"}
        privacy.produce(settings.erasure_requests_topic, key=b"ticket-7", value=orjson.dumps(request))
        privacy.produce(settings.erasure_requests_topic, key=b"ticket-8", value=b"not json")
        assert privacy.flush(10) == 0
        found = wait_for_confirmations(settings, {"ticket-7"}, timeout_s=60)
        wait_for_metric(settings, "retention_erasure_requests_total", 1, outcome="refused")
        samples = settled_metrics(settings)
        gone = user_page(settings.web_port, "dsr-user", None)
        kept = user_page(settings.web_port, "kept-1", None)

    assert found["ticket-7"]["user_id"] == "dsr-user"
    assert found["ticket-7"]["removed"]["state_bytes"] > 0
    assert gone[0] == 404 and kept[0] == 200
    assert metric_sum(samples, "retention_erasure_requests_total", outcome="forwarded") == 1
    assert metric_sum(samples, "retention_users_erased_total") == 1
    # Forwarded into the user's own partition of the events topic, after their events.
    records = list(kafka.read_topic({"bootstrap.servers": broker}, settings.events_topic, partitions=3))
    erase = [(m.partition(), m.key(), orjson.loads(m.value())) for m in records if b'"erase"' in m.value()]
    user_partitions = {m.partition() for m in records if m.key() == b"dsr-user"}
    assert len(erase) == 1 and len(user_partitions) == 1
    partition, key, body = erase[0]
    assert (partition, key) == (user_partitions.pop(), b"dsr-user")
    assert body == {"type": "erase", "user_id": "dsr-user", "request_id": "ticket-7", "ts": body["ts"]}
    assert body["ts"] > 0  # the request's record timestamp stands in for a missing ts
    # The unreadable request is dead-lettered with the reason, not dropped.
    letters = list(kafka.read_topic({"bootstrap.servers": broker}, settings.dlq_topic, partitions=3))
    refused = [m for m in letters if m.key() == b"ticket-8"]
    assert len(refused) == 1 and refused[0].value() == b"not json"
    headers = dict(refused[0].headers())
    assert headers["retention.dlq.reason"] == b"invalid_erasure_request"
    assert headers["retention.dlq.topic"] == settings.erasure_requests_topic.encode()
