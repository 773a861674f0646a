"""The Faust adapter in process, no broker: tables as pipeline stores, one batch end to end."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

import faust
import numpy as np
import orjson
import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from retention_model.events import Event, EventType, encode_event
from retention_model.features.state import load_state
from streams import metrics as metrics_module
from streams.processor import BatchProcessor
from streams.publish import DLQ_MAX_VALUE_BYTES
from streams.settings import Settings

T0 = 1_735_689_600_000


class ConsumerRecord(NamedTuple):
    """The fields of aiokafka's ConsumerRecord the worker reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None


class RiskyModel:
    """Stands in for ChurnModel: everyone is high risk."""

    version = "m-test"
    recommendations_ = None
    device = "cpu"
    meta_ = None
    device_name_ = None

    def score_many(self, features: np.ndarray) -> np.ndarray:
        return np.full(len(features), 0.9)

    def uplift_many(self, features: np.ndarray) -> None:
        return None


@pytest.fixture
def processor() -> Iterator[tuple[BatchProcessor, list[tuple[str, Any, Any, dict[str, Any]]]]]:
    settings = Settings.load({}, {"broker": "127.0.0.1:1", "replay": "true", "partitions": 2, "app_id": "t-proc"})
    app = faust.App(settings.app_id, broker="kafka://127.0.0.1:1", store="memory://")
    made = BatchProcessor(app, settings, RiskyModel(), metrics_module.create(CollectorRegistry()))  # type: ignore[arg-type]
    produced: list[tuple[str, Any, Any, dict[str, Any]]] = []

    def produce(topic: str, key: Any, value: Any, **kwargs: Any) -> None:
        produced.append((topic, key, value, kwargs))

    def produce_many(topic: str, records: list[tuple[bytes, bytes]]) -> None:
        produced.extend((topic, key, value, {}) for key, value in records)

    made.output.produce = produce  # type: ignore[method-assign]
    made.output.produce_many = produce_many  # type: ignore[method-assign]
    try:
        yield made, produced
    finally:
        made.output.close(timeout_s=0.1)
        made.models.executor.shutdown()


def run_batch(made: BatchProcessor, batch: dict[TP, list[ConsumerRecord]]) -> None:
    async def main() -> None:
        made.output.begin()
        await made.process(batch)  # type: ignore[arg-type]

    asyncio.run(main())


def test_one_batch_goes_through_the_pipeline_to_tables_changelogs_and_topics(processor: Any) -> None:
    made, produced = processor
    topic = made.settings.events_topic
    tp = TP(topic, 1)
    buy = Event("e1", "u1", EventType.PURCHASE, T0, price=10.0)
    huge = b"x" * (DLQ_MAX_VALUE_BYTES + 10)
    batch = {
        tp: [
            ConsumerRecord(topic, 1, 0, T0, b"u1", encode_event(buy)),
            ConsumerRecord(topic, 1, 1, T0, b"u2", huge),
        ]
    }
    run_batch(made, batch)
    by_topic = Counter(t for t, *_ in produced)
    settings = made.settings
    assert by_topic[settings.scores_topic] == 1 and by_topic[settings.decisions_topic] >= 1
    assert by_topic[f"{settings.app_id}-user-state-changelog"] == 1
    assert by_topic[f"{settings.app_id}-silence-timers-changelog"] == 1
    # The state is in the table (the partition's store) and its changelog goes to the source partition.
    assert load_state(made.tables.table.data.data[b"u1"]).last_risk == 0.9
    changelog = next(p for p in produced if p[0].endswith("user-state-changelog"))
    assert changelog[3]["partition"] == 1
    (timer_key,) = made.tables.timers.table.data.data
    assert timer_key.startswith(b"1:")
    # The oversized record is dead-lettered, cut, with why and where from.
    (letter,) = [p for p in produced if p[0] == settings.dlq_topic]
    headers = dict(letter[3]["headers"])
    assert headers["retention.dlq.reason"] == b"too_large"
    assert headers["retention.dlq.partition"] == b"1" and headers["retention.dlq.offset"] == b"1"
    assert headers["retention.dlq.truncated_from"] == str(len(huge)).encode()
    assert len(letter[2]) == DLQ_MAX_VALUE_BYTES
    score = orjson.loads(next(p[2] for p in produced if p[0] == settings.scores_topic))
    assert score["trigger"] == "event" and score["model_version"] == "m-test"


def test_a_faust_table_partition_keeps_the_store_contract(processor: Any) -> None:
    made, produced = processor
    made.tables.source(TP(made.settings.events_topic, 0))
    made.tables.source(TP(made.settings.events_topic, 1))
    timers, other = made.tables.stores(0).timers, made.tables.stores(1).timers
    assert timers.get_many([b"0:1", b"0:2"]) == [None, None]
    timers.put_many([(b"0:1", b"a"), (b"0:2", b"b")])
    other.put_many([(b"1:1", b"c")])
    assert timers.get_many([b"0:2", b"0:1", b"0:3"]) == [b"b", b"a", None]
    timers.put_many([(b"0:1", None), (b"0:9", None)])  # deleting a missing key writes nothing
    assert timers.get_many([b"0:1"]) == [None]
    assert sorted(timers.all_keys()) == [b"0:2"] and sorted(other.all_keys()) == [b"1:1"]
    writes = [(topic, key, value, kw["partition"]) for topic, key, value, kw in produced]
    changelog = f"{made.settings.app_id}-silence-timers-changelog"
    assert writes == [
        (changelog, b"0:1", b"a", 0),
        (changelog, b"0:2", b"b", 0),
        (changelog, b"1:1", b"c", 1),
        (changelog, b"0:1", None, 0),
    ]
