"""One batch's result on the wire and in the metrics: outputs, dead letters, counts.

The pipeline returns its records complete; here they are queued on the batch
producer (one call per topic), rejects become dead letters with why and where
from in their headers, and the batch's counts go to Prometheus once per batch (a
labelled counter update takes a lock: per event it would show).
"""

from __future__ import annotations

import logging
from typing import Any

from retention_model.pipeline.records import BatchCounts, BatchResult, Reject
from streams.metrics import Metrics
from streams.output import OutputProducer
from streams.settings import Settings

__all__ = ["DLQ_MAX_VALUE_BYTES", "Publisher", "dead_letter", "dead_letter_headers"]

log = logging.getLogger(__name__)

#: Dead letters keep at most this much of the original value (Kafka's default
#: request limit is 1 MB; the decoder refuses anything over 64 KiB anyway).
DLQ_MAX_VALUE_BYTES = 256 * 1024


def dead_letter(reject: Reject) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of a dead letter: the original bytes, and why and where from in headers."""
    record: Any = reject.record  # a consumer record: it names its topic and partition too
    error = reject.error
    value = record.value or b""
    headers = dead_letter_headers(error.reason, error.detail, record.topic, record.partition, record.offset)
    if len(value) > DLQ_MAX_VALUE_BYTES:
        # A record too big to re-publish in full would fail the send and stop the
        # worker: keep its head, and say how long it was.
        headers.append(("retention.dlq.truncated_from", str(len(value)).encode()))
        value = value[:DLQ_MAX_VALUE_BYTES]
    return record.key, value, headers


def dead_letter_headers(reason: str, detail: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Why a record was dead-lettered and where it came from, as the DLQ's readers expect them."""
    return [
        ("retention.dlq.reason", reason.encode()),
        ("retention.dlq.detail", detail.encode(errors="replace")),
        ("retention.dlq.topic", topic.encode()),
        ("retention.dlq.partition", str(partition).encode()),
        ("retention.dlq.offset", str(offset).encode()),
    ]


class Publisher:
    """Queues a batch's records on the output producer and records its counts."""

    def __init__(self, settings: Settings, output: OutputProducer, metrics: Metrics) -> None:
        self.settings = settings
        self.output = output
        self.metrics = metrics
        self.kind_topics = {"coupon": settings.coupon_topic, "recommendation": settings.recommendation_topic}

    def publish(self, result: BatchResult) -> None:
        """Dead letters, scores, decisions and interventions of one batch, then its metrics."""
        settings, output = self.settings, self.output
        for reject in result.rejects:
            key, value, headers = dead_letter(reject)
            output.produce(settings.dlq_topic, key, value, headers=headers)
            self._dead_lettered(reject)
        output.produce_many(settings.scores_topic, result.scores)
        output.produce_many(settings.decisions_topic, result.decisions)
        for kind, records in result.interventions.items():
            output.produce_many(self.kind_topics[kind], records)
        if result.outcomes:
            output.produce_many(settings.outcomes_topic, result.outcomes)
        if result.erasures:
            output.produce_many(settings.erasures_topic, result.erasures)
            log.info("erased %d user(s) on request; confirmations to %s", len(result.erasures), settings.erasures_topic)
        self._count(result.counts)

    def _dead_lettered(self, reject: Reject) -> None:
        record: Any = reject.record
        error = reject.error
        self.metrics.dead_letters.labels(error.reason).inc()
        self.metrics.events.labels("invalid", "dead_lettered").inc()
        log.warning(
            "dead-lettered %s[%d]@%d: %s (%s)",
            record.topic,
            record.partition,
            record.offset,
            error.reason,
            error.detail,
        )

    def _count(self, counts: BatchCounts) -> None:
        metrics = self.metrics
        for partition, jump_ms in counts.watermark_jumps.items():
            jump_s = jump_ms / 1000
            metrics.watermark_jump_seconds.labels(str(partition)).set(jump_s)
            metrics.watermark_jumps.labels(str(partition)).inc()
            log.warning(
                "watermark of partition %d jumped %.0f s (%.1f days) in one batch; silence timers up to it fire",
                partition,
                jump_s,
                jump_s / 86_400,
            )
        if counts.late:
            metrics.late_events.inc(counts.late)
        metrics.batch_events.observe(counts.events_in)
        for (event_type, outcome), count in counts.outcomes.items():
            metrics.events.labels(event_type.wire_name, outcome).inc(count)
        if counts.unknown:
            metrics.events.labels("unknown", "ignored").inc(counts.unknown)
        for event_type, count in counts.attributed.items():
            metrics.attributed_events.labels(event_type.wire_name).inc(count)
        for tier, count in counts.tiers.items():
            metrics.scores.labels(tier).inc(count)
        for (kind, action, rule), count in counts.decided.items():
            metrics.decisions.labels(kind, action).inc(count)
            metrics.decision_rules.labels(kind, rule).inc(count)
        for (kind, tier), count in counts.interventions.items():
            metrics.interventions.labels(kind, tier).inc(count)
        if counts.silence_rescored:
            metrics.silence_rescored.inc(counts.silence_rescored)
        if counts.erased:
            metrics.users_erased.inc(counts.erased)
        if counts.expired:
            metrics.users_expired.inc(counts.expired)
        for difference in counts.shadow_differences:
            metrics.shadow_risk_difference.observe(difference)
        for agreed, count in counts.shadow_agreement.items():
            metrics.shadow_tier_agreement.labels(agreed).inc(count)
