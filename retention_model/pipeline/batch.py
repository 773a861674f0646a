"""The batch pipeline: one call per micro-batch, from raw records to complete outputs.

Per batch: decode each partition's records (rejects with reasons, watermarks);
fold the events into the touched users' states; gather them, and the silent
users whose timers fell due under the watermark, for one model call; derive the
feature matrix; infer; decide; write states, timers and budget slices to the
partition stores and build the output records; sample scores for the outcome
join at cutoffs and publish the outcomes whose horizon the watermark passed
(:mod:`.outcomes`, :mod:`.outcome_join`). A re-score files the user's next
check, which may already be due under this batch's watermark (a replay covers
days in one batch), so rounds of silent users follow until none is due.

Nothing here touches Kafka, Faust, metrics or a thread: the stores, the model
call and the wall clock are handed in, so a test runs whole logs through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from retention_model.features.derive import feature_matrix
from retention_model.pipeline.decide import ScoredUser, decide_many
from retention_model.pipeline.decode import DecodeLimits, decode_records
from retention_model.pipeline.drift import count_bins
from retention_model.pipeline.erase import confirmations, erase_users
from retention_model.pipeline.fold import fold_events
from retention_model.pipeline.outcome_join import score_snapshots, snapshots_at_watermark, snapshots_before_fold
from retention_model.pipeline.outcomes import Snapshot
from retention_model.pipeline.outputs import add_records, next_checks, state_blobs
from retention_model.pipeline.partition import PartitionContext
from retention_model.pipeline.records import BatchCounts, BatchResult, Candidates, ModelCall, RawRecord
from retention_model.pipeline.state_cache import StateCache
from retention_model.pipeline.stores import PartitionStores
from retention_model.pipeline.timers import collect_due
from retention_model.policy.budget import BudgetLedger
from retention_model.policy.circuit import CircuitBreaker
from retention_model.policy.config import PolicyConfig

__all__ = ["MAX_SILENCE_ROUNDS", "BatchPipeline", "PipelineConfig"]

#: Bound on silence re-scoring rounds per batch (each round moves every due user
#: to a later threshold; there are at most seven thresholds per user).
MAX_SILENCE_ROUNDS = 16


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline needs to know besides the stores and the model."""

    policy: PolicyConfig
    #: Source partitions in all (each owns that share of every budget cap).
    partitions: int
    limits: DecodeLimits
    #: A replay runs the policy's limits on event time alone, with no circuit breaker.
    replay: bool = False
    max_silence_rounds: int = MAX_SILENCE_ROUNDS
    #: Users silent this long (event time, ms) are dropped from the stores; None: never.
    state_ttl_ms: int | None = None
    #: Decoded states kept between batches (about 5 KB each; 0: none): see :mod:`.state_cache`.
    state_cache_users: int = 20_000
    #: Users sampled for the outcome join per partition, at most (0: no outcome join).
    outcome_sample: int = 0


class BatchPipeline:
    """Processes micro-batches over per-partition stores; keeps watermarks, timer indexes and budget slices."""

    def __init__(
        self,
        config: PipelineConfig,
        stores: Callable[[int], PartitionStores],
        clock: Callable[[], int],
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """``stores`` gives a partition's stores; ``clock`` is the wall clock in epoch ms."""
        self.config = config
        self.stores = stores
        self.clock = clock
        self.breaker = breaker
        self._partitions: dict[int, PartitionContext] = {}
        self.cache = StateCache(config.state_cache_users)

    def forget(self) -> None:
        """Drop what is kept per partition (after a rebalance); it is rebuilt from the stores."""
        self._partitions.clear()
        self.cache.clear()

    def partition(self, partition: int) -> PartitionContext:
        """The context of ``partition``, made on first use."""
        context = self._partitions.get(partition)
        if context is None:
            context = self._partitions[partition] = PartitionContext(
                partition, self.stores(partition), self.cache, self.config.outcome_sample
            )
        return context

    def ledgers(self) -> dict[int, BudgetLedger]:
        """Budget slices in use since the last rebalance, by partition."""
        return {p: c.ledger for p, c in self._partitions.items() if c.ledger is not None}

    def watermarks(self) -> dict[int, int]:
        """Each known partition's watermark (event time, ms)."""
        return {p: c.watermark for p, c in self._partitions.items()}

    async def process(self, batch: Mapping[int, Sequence[RawRecord]], model: ModelCall) -> BatchResult:
        """Run one micro-batch (partition -> records in offset order) through every stage."""
        result = BatchResult()
        counts = result.counts
        wall_ms = self.clock()
        candidates = Candidates()
        snapshots: list[tuple[PartitionContext, Snapshot]] = []
        for partition, records in batch.items():
            context = self.partition(partition)
            decoded = decode_records(records, watermark=context.watermark, wall_ms=wall_ms, limits=self.config.limits)
            context.watermark = decoded.watermark
            counts.events_in += len(records)
            counts.unknown += decoded.unknown
            counts.attributed.update(decoded.attributed)
            counts.late += decoded.late
            if decoded.jump_ms:
                counts.watermark_jumps[partition] = decoded.jump_ms
            result.rejects.extend(decoded.rejects)
            if decoded.erasures:  # before the fold: events after a request start a new history
                keys = [erasure.key for erasure in decoded.erasures]
                removed = erase_users(context, keys)
                result.erasures.extend(confirmations(decoded.erasures, removed, partition, wall_ms))
                counts.erased += sum(1 for state_bytes, _ in removed if state_bytes)
            if context.outcomes is not None:  # before the fold: the states as of a cutoff the events pass
                snapshots.extend((context, s) for s in snapshots_before_fold(context, decoded.events, model))
            folded = fold_events(decoded.events, context.stores.states, self.cache)
            counts.outcomes.update(folded.outcomes)
            counts.new_users += folded.new_users
            if context.outcomes is not None:
                context.outcomes.observe(decoded.events)
            first_seen = decoded.first_seen_ms
            for key, state in folded.changed:
                candidates.add(key, state, state.last_seen_ms, partition, "event", first_seen[key])
        partitions = list(batch)
        self._collect_silent(candidates, partitions, counts)
        if candidates:
            await self._score(candidates, model, result)
        for _ in range(self.config.max_silence_rounds):
            silent = Candidates()
            self._collect_silent(silent, partitions, counts)
            if not silent:
                break
            await self._score(silent, model, result)
        if self.config.outcome_sample:
            await self._resolve(partitions, snapshots, model, result)
        return result

    async def _resolve(
        self,
        partitions: list[int],
        snapshots: list[tuple[PartitionContext, Snapshot]],
        model: ModelCall,
        result: BatchResult,
    ) -> None:
        """Score the cutoff snapshots; publish the scores whose horizon closed below their partition's watermark."""
        counts = result.counts
        contexts = [self.partition(p) for p in partitions]
        for context in contexts:
            snapshots.extend((context, s) for s in snapshots_at_watermark(context, model))
        await score_snapshots(snapshots, model, self.config.policy)
        for context in contexts:
            sample = context.outcomes
            if sample is None:
                continue
            for outcome in sample.resolve(context.watermark):
                counts.resolved.append(outcome)
                result.outcomes.append((outcome.key, orjson.dumps(outcome.record())))
            counts.outcome_left_silent += sample.take_left_silent()
        samples = [c.outcomes for c in self._partitions.values() if c.outcomes is not None]
        counts.outcomes_pending = sum(len(s) for s in samples)
        counts.outcome_users = sum(len(s.members) for s in samples)

    def _collect_silent(self, candidates: Candidates, partitions: list[int], counts: BatchCounts) -> None:
        """Add the users whose silence timer fell due below their partition's watermark; drop the expired."""
        ttl_ms = self.config.state_ttl_ms
        for partition in partitions:
            context = self.partition(partition)
            expired: list[bytes] = []
            for key, state, due in collect_due(
                context.timers,
                context.stores.states,
                context.watermark,
                candidates.keys_set,
                ttl_ms=ttl_ms,
                expired=expired,
                cache=self.cache,
            ):
                candidates.add(key, state, due, partition, "silence", None)
            if expired:
                context.stores.states.put_many([(key, None) for key in expired])
                if context.outcomes is not None:
                    context.outcomes.drop(expired)
                counts.expired += len(expired)

    async def _score(self, candidates: Candidates, model: ModelCall, result: BatchResult) -> None:
        """One model call: features, inference, decisions; then the writes and the records."""
        config = self.config
        policy = config.policy
        features = feature_matrix(candidates.states, candidates.now_ms)
        inference = await model.infer(features)
        result.counts.scored_per_call.append(len(candidates))
        if model.reference is not None:
            count_bins(result.counts, model.reference, features, candidates.triggers)
        wall_ms = None if config.replay else self.clock()
        budgets = (
            [self.partition(p).budget(policy, config.partitions) for p in candidates.partitions]
            if policy.has_budget
            else None
        )
        scored = decide_many(
            candidates.user_ids,
            candidates.states,
            candidates.now_ms,
            features,
            inference.risks,
            model_version=model.version,
            config=policy,
            uplifts=inference.uplifts,
            budgets=budgets,
            recommender=model.recommender,
            wall_ms=wall_ms,
            breaker=None if config.replay else self.breaker,
        )
        if config.outcome_sample:
            self._enroll(candidates, scored, model)
        if budgets is not None:
            for partition in sorted(set(candidates.partitions)):
                self.partition(partition).save_budget()
            result.counts.budget_now_ms = max(candidates.now_ms)
            result.counts.budget_wall_ms = wall_ms
        for partition, blobs in state_blobs(candidates, self.cache).items():
            self.partition(partition).stores.states.put_many(blobs)
        for partition, due in next_checks(candidates, config.state_ttl_ms).items():
            self.partition(partition).timers.file(due)
        add_records(
            result,
            candidates,
            scored,
            inference,
            model_version=model.version,
            shadow_version=model.shadow_version,
            config=policy,
        )

    def _enroll(self, candidates: Candidates, scored: list[ScoredUser], model: ModelCall) -> None:
        """Offer each scored user to their partition's outcome sample (see :mod:`.outcomes`)."""
        for key, user, partition in zip(candidates.keys, scored, candidates.partitions):
            sample = self.partition(partition).outcomes
            if sample is not None:
                sample.enroll(key, user.user_id, user.now_ms, model.horizon_ms)
