"""The erasure-requests topic, forwarded to the events topic by every worker.

A shop's privacy system writes ``{"user_id": ..., "request_id": ..., "ts": ...}`` to
``RETENTION_ERASURE_REQUESTS_TOPIC``, keyed as it likes. The worker does not erase
from that topic directly: read beside the events topic at its own pace, a request
would have no fixed place among the user's events, and after a crash the events
re-read from the last commit could include some the user sent before the erasure,
rebuilding part of the user (their state, with its per-user replay guard, is gone).
Instead a small consumer (its own group, ``<app_id>-erasure-requests``) re-keys each
request by its user and produces it to the events topic, where it becomes an
ordinary ``{"type": "erase"}`` record with a fixed offset in the user's partition
(:mod:`retention_model.pipeline.erase`). A request it cannot read goes to the
dead-letter topic with the reason (``invalid_erasure_request``), never dropped. It
commits a request only once the broker has taken the forwarded record (or dead
letter): at least once, so a crash in between may forward a request twice, and the
second copy also erases what the user sent in between.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

from retention_model.errors import RetentionError
from retention_model.pipeline.erase import forwarded_request
from streams.kafka import client_config
from streams.metrics import Metrics
from streams.producer import make_producer
from streams.publish import DLQ_MAX_VALUE_BYTES, dead_letter_headers
from streams.settings import Settings

__all__ = ["REFUSED_REASON", "ErasureForwarder"]

log = logging.getLogger(__name__)

#: The dead-letter reason of an erasure request the forwarder cannot read.
REFUSED_REASON = "invalid_erasure_request"


class _NotDeliveredError(RetentionError, RuntimeError):
    """The events topic did not take forwarded requests: re-read them from the last commit."""


class ErasureForwarder:
    """Moves erasure requests to the events topic on a thread of its own, committing after delivery."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.group = f"{settings.app_id}-erasure-requests"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start forwarding (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="erasure-forwarder", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop and leave the group, so another worker takes the topic's partitions at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._forward_until_stopped()
            except Exception:  # a broker outage or a failed delivery: start over from the last commit
                log.exception("erasure forwarder: restarting from the last committed request in 1 s")
                self._stop.wait(1.0)

    def _forward_until_stopped(self) -> None:
        settings = self.settings
        security = {k: v for k, v in client_config(settings).items() if k != "bootstrap.servers"}
        session_ms = int(settings.session_timeout_s * 1000)
        consumer = Consumer(
            {
                **client_config(settings),
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, session_ms // 4),
                "log_level": 3,
            }
        )
        producer = make_producer(",".join(settings.broker_list), **{**security, "log_level": 3})
        try:
            consumer.subscribe([settings.erasure_requests_topic])
            while not self._stop.is_set():
                messages = consumer.consume(num_messages=500, timeout=0.5)
                if messages:
                    self._forward(messages, consumer, producer)
        finally:
            consumer.close()

    def _forward(self, messages: list[Any], consumer: Consumer, producer: Any) -> None:
        """Produce each valid request keyed by its user, wait for delivery, then commit the batch."""
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(err.str())

        ends: dict[tuple[str, int], int] = {}
        outcomes = {"forwarded": 0, "refused": 0}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("erasure forwarder: %s", error.str())
                continue
            ends[(message.topic(), message.partition())] = message.offset() + 1
            kind, stamp = message.timestamp()
            fallback_ms = stamp if kind != TIMESTAMP_NOT_AVAILABLE else int(time.time() * 1000)
            request = forwarded_request(message.value(), fallback_ms)
            if isinstance(request, str):  # logged by position, never by content: it may name a person
                log.warning(
                    "erasure request %s[%d]@%d refused, dead-lettered: %s",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    request,
                )
                headers = dead_letter_headers(
                    REFUSED_REASON, request, message.topic(), message.partition(), message.offset()
                )
                value = (message.value() or b"")[:DLQ_MAX_VALUE_BYTES]
                producer.produce(
                    self.settings.dlq_topic, value=value, key=message.key(), headers=headers, on_delivery=delivered
                )
                outcomes["refused"] += 1
                continue
            key, value = request
            producer.produce(self.settings.events_topic, value=value, key=key, on_delivery=delivered)
            outcomes["forwarded"] += 1
        remaining = producer.flush(30)
        if remaining or failures:
            msg = f"{remaining} forwarded requests undelivered, {len(failures)} failed: {failures[:3]}"
            raise _NotDeliveredError(msg)
        if ends:
            offsets = [TopicPartition(topic, partition, end) for (topic, partition), end in ends.items()]
            consumer.commit(offsets=offsets, asynchronous=False)
        if self.metrics is not None:
            for outcome, n in outcomes.items():
                if n:
                    self.metrics.erasure_requests.labels(outcome).inc(n)
            if outcomes["refused"]:
                self.metrics.dead_letters.labels(REFUSED_REASON).inc(outcomes["refused"])
        if outcomes["forwarded"]:
            log.info(
                "erasure forwarder: %d requests forwarded to %s", outcomes["forwarded"], self.settings.events_topic
            )
