"""Batched produce for everything the worker writes: outputs, dead letters and changelogs.

Faust's own ``topic.send`` is a coroutine and a future per record (tens of
microseconds each in Python); a worker that publishes a score per event spends
more time there than scoring. Here every record of a micro-batch is queued with
one C call, and the batch's deliveries are awaited once, in a thread, before its
source offsets are acknowledged to Faust. A committed offset therefore covers
only records the broker has accepted: at least once, as before.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Producer

from streams.kafka import client_config
from streams.settings import Settings

__all__ = ["DeliveryFailed", "OutputProducer"]

log = logging.getLogger(__name__)

#: Longest one batch's flush may take before the worker gives up and restarts
#: from its last commit (records sent so far are re-sent with the same ids).
FLUSH_TIMEOUT_S = 60.0


class DeliveryFailed(RuntimeError):
    """The broker refused or never acknowledged records of a batch."""


class OutputProducer:
    """One confluent-kafka producer, flushed per micro-batch.

    ``changelog_offsets`` collects, per (topic, partition), the highest offset the
    broker gave a changelog record, so a RocksDB store can remember how far its
    local copy is persisted (what Faust's own changelog callback does).
    """

    def __init__(self, settings: Settings, *, on_error: Any = None, **overrides: Any) -> None:
        config = {
            **client_config(settings),
            "partitioner": "murmur2_random",  # the Java/Faust partitioner: a user's records share a partition
            "linger.ms": 2,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "enable.idempotence": True,
            "message.max.bytes": 2_000_000,
            **overrides,
        }
        self._producer = Producer(config)
        self._lock = threading.Lock()
        self._failures: list[str] = []
        self._on_error = on_error
        self.changelog_offsets: dict[tuple[str, int], int] = {}
        self._deliver = self._on_delivery
        self._deliver_changelog = self._on_changelog_delivery

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._fail(err, msg)

    def _on_changelog_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._fail(err, msg)
            return
        key = (msg.topic(), msg.partition())
        offset = msg.offset()
        with self._lock:
            if offset > self.changelog_offsets.get(key, -1):
                self.changelog_offsets[key] = offset

    def _fail(self, err: KafkaError, msg: Any) -> None:
        with self._lock:
            self._failures.append(f"{msg.topic()}: {err.str()}")
        if self._on_error is not None:
            self._on_error(msg.topic())

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        changelog: bool = False,
    ) -> None:
        """Queue one record; blocks only while librdkafka's queue is full."""
        kwargs: dict[str, Any] = {"on_delivery": self._deliver_changelog if changelog else self._deliver}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = list(headers)
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # the queue is full: let deliveries drain it

    def produce_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Queue many keyed records to one topic (the hot path: one call per record, no kwargs built)."""
        produce = self._producer.produce
        deliver = self._deliver
        for key, value in records:
            try:
                produce(topic, value, key, on_delivery=deliver)
            except BufferError:
                self.produce(topic, key, value)

    async def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Wait, off the event loop, until every queued record is delivered; raise if any failed."""
        loop = asyncio.get_running_loop()
        left = await loop.run_in_executor(None, self._producer.flush, timeout_s)
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DeliveryFailed(f"{len(failures)} record(s) not delivered, first: {failures[0]}")
        if left:
            raise DeliveryFailed(f"{left} record(s) still undelivered after {timeout_s:.0f} s")

    def take_changelog_offsets(self) -> dict[tuple[str, int], int]:
        with self._lock:
            offsets, self.changelog_offsets = self.changelog_offsets, {}
        return offsets

    def close(self, timeout_s: float = 10.0) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            log.warning("closing the output producer with %d record(s) undelivered", left)
