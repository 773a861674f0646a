"""Batched produce for everything the worker writes: outputs, dead letters and changelogs.

Faust's own ``topic.send`` is a coroutine and a future per record (tens of
microseconds each in Python); a worker that publishes a score per event spends
more time there than scoring. Here every record of a micro-batch is queued with
one C call and counted against the batch; a poller thread serves the delivery
reports, and the batch's source offsets are acknowledged to Faust only once all
its records are delivered, while the next batch is already being processed. A
committed offset therefore covers only records the broker has accepted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Producer

from retention_model.errors import RetentionError
from streams.kafka import client_config
from streams.settings import Settings

__all__ = ["DeliveryFailedError", "OutputProducer"]

log = logging.getLogger(__name__)

#: Longest one batch's flush may take before the worker gives up and restarts
#: from its last commit (records sent so far are re-sent with the same ids).
FLUSH_TIMEOUT_S = 60.0


class DeliveryFailedError(RetentionError, RuntimeError):
    """The broker refused or never acknowledged records of a batch."""


class BatchDelivery:
    """The records one micro-batch wrote: done once the broker has taken every one.

    Delivery reports arrive on the producer's poller thread; the last one of a
    sealed batch resolves :attr:`done` on the event loop. ``changelog_offsets``
    holds the highest offset per changelog partition, for RocksDB's persisted offset.
    ``delivered_at`` is when the broker had taken the last record (epoch seconds), taken
    on the poller thread: the event loop may notice later, while it processes the next
    batch, but readers of the output topics had the records from that moment.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_error: Any = None) -> None:
        self._loop = loop
        self._on_error = on_error
        self._lock = threading.Lock()
        self._pending = 0
        self._sealed = False
        self.failures: list[str] = []
        self.changelog_offsets: dict[tuple[str, int], int] = {}
        self.delivered_at: float | None = None
        self.done: asyncio.Future[None] = loop.create_future()

    def _added(self, n: int = 1) -> None:
        with self._lock:
            self._pending += n

    def on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        with self._lock:
            self._pending -= 1
            if err is not None:
                self.failures.append(f"{msg.topic()}: {err.str()}")
            finished = self._sealed and self._pending == 0
            if finished:
                self.delivered_at = time.time()
        if err is not None and self._on_error is not None:
            self._on_error(msg.topic())
        if finished:
            self._loop.call_soon_threadsafe(self._resolve)

    def on_changelog_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            key = (msg.topic(), msg.partition())
            with self._lock:
                if msg.offset() > self.changelog_offsets.get(key, -1):
                    self.changelog_offsets[key] = msg.offset()
        self.on_delivery(err, msg)

    def seal(self) -> None:
        """No more records will be added (call on the event loop)."""
        with self._lock:
            self._sealed = True
            finished = self._pending == 0
            if finished:
                self.delivered_at = time.time()
        if finished:
            self._resolve()

    def _resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def wait(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Until every record is delivered; raise :class:`DeliveryFailedError` if any was not."""
        try:
            await asyncio.wait_for(asyncio.shield(self.done), timeout_s)
        except TimeoutError:
            with self._lock:
                left = self._pending
            raise DeliveryFailedError(f"{left} record(s) still undelivered after {timeout_s:.0f} s") from None
        if self.failures:
            raise DeliveryFailedError(f"{len(self.failures)} record(s) not delivered, first: {self.failures[0]}")


class OutputProducer:
    """One confluent-kafka producer; the records of each micro-batch are tracked together.

    A poller thread serves delivery reports, so a batch's delivery is awaited
    while the next batch is already being processed.
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
        self._on_error = on_error
        self._batch: BatchDelivery | None = None
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="output-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def begin(self) -> BatchDelivery:
        """Start tracking a new micro-batch's records (call on the event loop)."""
        self._batch = BatchDelivery(asyncio.get_running_loop(), self._on_error)
        return self._batch

    def _current(self) -> BatchDelivery:
        if self._batch is None:
            raise RuntimeError("OutputProducer.begin() must be called before producing")
        return self._batch

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
        """Queue one record of the current batch; blocks only while librdkafka's queue is full."""
        batch = self._current()
        kwargs: dict[str, Any] = {"on_delivery": batch.on_changelog_delivery if changelog else batch.on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = list(headers)
        batch._added()
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # the queue is full: let deliveries drain it

    def produce_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Queue many keyed records to one topic (the hot path: one call per record, no kwargs built)."""
        batch = self._current()
        produce = self._producer.produce
        deliver = batch.on_delivery
        batch._added(len(records))
        for index, (key, value) in enumerate(records):
            try:
                produce(topic, value, key, on_delivery=deliver)
            except BufferError:
                batch._added(-(len(records) - index))  # produce() below counts the rest again
                for rest_key, rest_value in records[index:]:
                    self.produce(topic, rest_key, rest_value)
                return

    def close(self, timeout_s: float = 10.0) -> None:
        left = self._producer.flush(timeout_s)
        self._closed.set()
        if left:
            log.warning("closing the output producer with %d record(s) undelivered", left)
