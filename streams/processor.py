"""One micro-batch through the core pipeline, and its delivery.

Per batch the processor names each partition's stores, calls the pipeline once
(decode, fold, silence rounds, model, policy, records), queues what it returns on
one producer, and hands back a coroutine function that waits until all of it is
delivered. Offsets are acknowledged only after that, so a crash replays the batch,
and the per-user offset in the state makes the replay a no-op for state
(at-least-once delivery, effectively-once state).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from retention_model.features.state import DAY_MS
from retention_model.model.scorer import ChurnModel
from retention_model.pipeline.batch import BatchPipeline, PipelineConfig
from retention_model.pipeline.decode import DecodeLimits
from retention_model.policy.circuit import CircuitBreaker, CircuitConfig
from streams.batching import Records
from streams.budgets import report_budgets
from streams.drift import DriftMonitor
from streams.health import BreakerReport, CommitWatchdog, UserCount, record_lag
from streams.metrics import Metrics
from streams.models import Models
from streams.output import OutputProducer
from streams.publish import Publisher
from streams.quality import QualityMonitor
from streams.settings import Settings
from streams.tables import WorkerTables

__all__ = ["BatchProcessor"]


def _wall_ms() -> int:
    return int(time.time() * 1000)


class BatchProcessor:
    """Runs each micro-batch through the pipeline and publishes it; owns the worker's parts."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        model: ChurnModel,
        metrics: Metrics,
        shadow: ChurnModel | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.output = OutputProducer(settings, on_error=lambda topic: metrics.publish_errors.labels(topic).inc())
        self.tables = WorkerTables(app, settings, self.output)
        self.models = Models(settings.model_path, model, metrics, shadow)
        self.publisher = Publisher(settings, self.output, metrics)
        self.drift = DriftMonitor(metrics, settings.drift_window)
        self.quality = QualityMonitor(metrics, settings.quality_window_days)
        #: A replay runs the policy's limits on event time alone, with no breaker.
        self.replay = settings.replay == "true"
        self.breaker = CircuitBreaker(
            CircuitConfig(
                surge_factor=settings.circuit_surge_factor,
                min_per_minute=settings.circuit_min_per_minute,
                max_per_minute=settings.circuit_max_per_minute,
                cooldown_s=settings.circuit_cooldown_s,
            )
        )
        self.report_breaker = BreakerReport(self.breaker, metrics)
        self.watchdog = CommitWatchdog(metrics.uncommitted_records)
        self.users = UserCount(metrics.users_tracked, self.tables.users, exact=not self.tables.rocksdb)
        limits = DecodeLimits(
            lateness_ms=int(settings.allowed_lateness_s * 1000),
            future_skew_ms=int(settings.max_future_skew_s * 1000),
            watermark_jump_ms=int(settings.watermark_jump_s * 1000),
        )
        ttl_ms = int(settings.state_ttl_days * DAY_MS) or None
        config = PipelineConfig(
            settings.policy,
            settings.partitions,
            limits,
            replay=self.replay,
            state_ttl_ms=ttl_ms,
            state_cache_users=settings.state_cache_users,
            outcome_sample=settings.outcome_sample,
        )
        self.pipeline = BatchPipeline(config, self.tables.stores, clock=_wall_ms, breaker=self.breaker)
        #: Bumped when partitions are revoked; a batch that spans it records nothing.
        self.generation = 0
        self.consumer: Any = None  # set once the app's consumer exists

    def revoked(self) -> None:
        """Partitions are being taken away: batches still settling record no progress."""
        self.generation += 1
        self.watchdog.reset()

    def rebalanced(self) -> None:
        """A new assignment: what was kept per partition is rebuilt from the tables."""
        self.pipeline.forget()
        self.watchdog.reset()
        self.users.rebalanced()

    async def process(self, batch: Records) -> Callable[[], Awaitable[None]]:
        """Run one micro-batch; return, once all it writes is queued, a wait for its delivery.

        Only after that wait may the batch's offsets be acknowledged.
        """
        delivery = self.output.begin()
        generation = self.generation
        by_partition = {}
        for tp, records in batch.items():
            self.tables.source(tp)
            by_partition[tp.partition] = records
        call = self.drift.with_reference(self.models.call(), self.models.model)
        result = await self.pipeline.process(by_partition, call)
        self.publisher.publish(result)
        counts = result.counts
        self.drift.record(counts)
        self.quality.model(self.models.model)
        self.quality.record(counts)
        record_lag(self.consumer, batch, self.metrics.consumer_lag)
        if counts.scored_per_call:
            self.report_breaker()
        if counts.budget_now_ms is not None:
            ledgers = self.pipeline.ledgers()
            policy, partitions = self.settings.policy, self.settings.partitions
            report_budgets(self.metrics, ledgers, policy, partitions, counts.budget_now_ms, counts.budget_wall_ms)
        delivery.seal()
        # After the batch's state writes, so a new user counts in this batch already.
        self.users.refresh(counts.new_users - counts.erased - counts.expired)
        seen_ms = counts.seen_ms

        async def settle() -> None:
            await delivery.wait()
            # Event to decision: from the event's producer timestamp to its score and
            # decisions delivered to the broker (when the broker acknowledged them,
            # not when this loop got round to noticing).
            delivered = delivery.delivered_at or time.time()
            observe = self.metrics.decision_latency_seconds.observe
            for seen in seen_ms:
                observe(max(0.0, delivered - seen / 1000))
            if delivery.changelog_offsets:
                self.tables.persisted(delivery.changelog_offsets)
            if generation == self.generation:  # no rebalance while this batch ran
                self.watchdog.record(batch)

        return settle
