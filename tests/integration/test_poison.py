"""Poison input: every bad record lands in the dead-letter topic with its reason, the worker
keeps going, the counts match, and a fixed record can be re-published."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from retention_model.events import MAX_TS_MS, Event, EventType, encode_event
from streams.cli import main as cli
from streams.demo import metric_sum
from streams.producer import produce_records
from training.simulator import SimConfig, encode_stream, simulate

from .helpers import fresh_settings, read_topic, running_worker, settled_metrics, wait_for_metric

pytestmark = pytest.mark.integration

GOOD = {"event_id": "p1", "user_id": "poison-user", "type": "purchase", "ts": 1_736_000_000_000, "price": 10.0}


def bad(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


CORPUS: list[tuple[str, bytes, str]] = [
    ("truncated JSON", bad()[:-7], "invalid_json"),
    ("user id of the wrong type", bad(user_id=12.5), "wrong_type"),
    ("price as a string", bad(price="10"), "wrong_type"),
    ("NaN", bad()[:-1] + b', "rating": NaN}', "invalid_json"),
    ("Infinity", bad()[:-1] + b', "price2": Infinity}', "invalid_json"),
    ("negative price", bad(price=-5.0), "invalid_value"),
    ("absurd quantity", bad(quantity=10**9), "invalid_value"),
    ("timestamp far in the future", bad(ts=7_000_000_000_000), "timestamp_out_of_range"),
    ("timestamp far in the past", bad(ts=1_000), "timestamp_out_of_range"),
    # Valid under the schema, but far ahead of the record's timestamp: a wrong clock or an attack.
    ("timestamp in 2099", bad(ts=4_070_908_800_000), "timestamp_in_future"),
    ("timestamp at the schema's upper bound", bad(ts=MAX_TS_MS - 1), "timestamp_in_future"),
    ("timestamp at the schema's upper bound, exclusive", bad(ts=MAX_TS_MS), "timestamp_out_of_range"),
    ("timestamp without a zone", bad(ts="2025-01-01T00:00:00"), "invalid_timestamp"),
    ("missing user id", bad(user_id=None), "missing_field"),
    ("1 MB payload", bad(padding="x" * 1_000_000), "too_large"),
    ("invalid UTF-8", b'{"user_id": "\xff\xfe"}', "invalid_utf8"),
    ("a JSON array", b"[1, 2, 3]", "not_an_object"),
    ("empty value", b"", "invalid_json"),
]


def test_poison_corpus_goes_to_the_dlq_with_reasons(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path)
    valid = list(encode_stream(simulate(SimConfig(users=40, days=20, seed=8))))
    mismatched = Event("km1", "someone-else", EventType.VIEW, 1_736_000_000_000)
    records = list(valid)
    for i, (_, payload, _) in enumerate(CORPUS):  # spread through the valid traffic
        records.insert(i * (len(valid) // len(CORPUS)), (b"poison-user", payload, "malformed"))
    records.append((b"poison-user", encode_event(mismatched), "malformed"))
    expected = Counter(reason for *_, reason in CORPUS) + Counter({"key_mismatch": 1})

    with running_worker(settings, tmp_path / "worker.log") as worker:
        produce_records(settings, records)
        wait_for_metric(settings, "retention_events_total", len(records))
        samples = settled_metrics(settings)
        dead = read_topic(broker, settings.dlq_topic, settings.partitions)
        assert worker.poll() is None  # still running

        env_flags = [
            "--broker",
            settings.broker,
            "--dlq-topic",
            settings.dlq_topic,
            "--events-topic",
            settings.events_topic,
        ]
        export = tmp_path / "dead.jsonl"
        assert cli(["dlq", "export", "--reason", "invalid_value", "--file", str(export), *env_flags]) == 0
        letters = [json.loads(line) for line in export.read_text().splitlines()]
        fixed = [letter for letter in letters if json.loads(letter["value"])["price"] == -5.0]
        assert len(fixed) == 1
        body = json.loads(fixed[0]["value"])
        body["price"] = 5.0
        fixed[0]["value"] = json.dumps(body)
        repaired = tmp_path / "fixed.jsonl"
        repaired.write_text(json.dumps(fixed[0]) + "\n")
        applied_before = metric_sum(samples, "retention_events_total", outcome="applied")
        assert cli(["dlq", "republish", "--file", str(repaired), *env_flags]) == 0
        wait_for_metric(settings, "retention_events_total", applied_before + 1, outcome="applied")

    reasons = Counter(headers["retention.dlq.reason"].decode() for _, _, headers in dead)
    assert reasons == expected
    for reason, count in expected.items():
        assert metric_sum(samples, "retention_dead_letters_total", reason=reason) == count
    assert metric_sum(samples, "retention_events_total", outcome="applied") == len(valid)
    big = [(value, headers) for _, value, headers in dead if headers["retention.dlq.reason"] == b"too_large"]
    assert int(big[0][1]["retention.dlq.truncated_from"]) > 1_000_000
    assert len(big[0][0]) == 256 * 1024
    originals = {payload for _, payload, _ in CORPUS}
    kept = [value for _, value, headers in dead if "retention.dlq.truncated_from" not in headers]
    assert len(kept) == len(dead) - 1
    assert all(value in originals or value == encode_event(mismatched) for value in kept)  # byte for byte


def test_dlq_list_counts_by_reason(broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = fresh_settings(broker, tmp_path)
    with running_worker(settings, tmp_path / "worker.log"):
        produce_records(settings, [(b"k", payload, "malformed") for _, payload, _ in CORPUS[:3]])
        wait_for_metric(settings, "retention_dead_letters_total", 3)
    assert cli(["dlq", "list", "--broker", settings.broker, "--dlq-topic", settings.dlq_topic]) == 0
    out = capsys.readouterr().out
    assert "3 dead letters" in out
    assert "invalid_json" in out and "wrong_type" in out
