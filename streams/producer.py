"""Producing records to the events topic at a steady rate (simulator, demo, tests)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException, Producer

from streams.settings import Settings

__all__ = ["LINGER_MS", "make_producer", "produce_records"]


#: How long a produced record may wait for batch-mates. The embedded broker's every fetch
#: costs in proportion to the batches a partition holds (NOTES entry 45): at 5 ms a
#: minute's load at 2,000-10,000 events/s slowed it enough to double the p99. The wait
#: itself counts in event-to-decision latency (it runs from the record's timestamp).
LINGER_MS = 20


def make_producer(bootstrap: str, **config: Any) -> Producer:
    """A confluent-kafka producer that partitions keys like the Java client.

    ``murmur2_random`` is the Java (and Faust/aiokafka) default partitioner, so a
    user's events land in the same partition whichever client produced them.
    """
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "enable.idempotence": False,
            "message.max.bytes": 2_000_000,
            **config,
        }
    )


def produce_records(
    settings: Settings,
    records: Iterable[tuple[bytes, bytes, str]],
    *,
    rate: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Counter[str]], None] | None = None,
    linger_ms: int = LINGER_MS,
) -> Counter[str]:
    """Produce (key, value, kind) records; return how many of each kind were acknowledged.

    ``rate`` caps records per second (0: unthrottled). Delivery failures raise: a
    record the broker did not take is never silently counted as produced.
    ``linger_ms`` is how long a record may wait for others to share its batch.
    """
    from streams.kafka import client_config

    security = {k: v for k, v in client_config(settings).items() if k != "bootstrap.servers"}
    producer = make_producer(",".join(settings.broker_list), **security, **{"linger.ms": linger_ms})
    delivered: Counter[str] = Counter()
    failures: list[str] = []

    def report(kind: str) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))
            else:
                delivered[kind] += 1

        return on_delivery

    callbacks = {kind: report(kind) for kind in ("valid", "malformed", "unknown")}
    started = time.monotonic()
    last_progress = started
    for sent, (key, value, kind) in enumerate(records, start=1):
        if should_stop():
            break
        while True:
            try:
                producer.produce(settings.events_topic, value=value, key=key, on_delivery=callbacks[kind])
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        now = time.monotonic()
        if on_progress is not None and now - last_progress >= 1.0:
            last_progress = now
            on_progress(delivered)
    remaining = producer.flush(30)
    if remaining or failures:
        msg = f"{remaining} records undelivered after 30s, {len(failures)} failed: {failures[:3]}"
        raise KafkaException(msg)
    return delivered
