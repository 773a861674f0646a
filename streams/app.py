"""The Faust worker: a thin layer over the pure core.

Faust owns the consumer group, partition assignment, rebalances, the
changelog-backed tables, commits and the web server. Beneath its per-event
stream, the batch drain (``streams.batching``) hands over whole fetched batches,
sized against a latency target. Per micro-batch the processor:

1. decodes every record (bad ones to the dead-letter topic with the reason);
2. folds each user's events into their state, skipping already-applied offsets;
3. scores every touched user in one model call, off the event loop;
4. runs the policy, writes each user's state once (store and changelog), and
   queues scores, decisions and interventions on one producer;
5. waits for all of it to be delivered.

Offsets are acknowledged only after that, so a crash replays the batch, and the
per-user offset in the state makes the replay a no-op for state (at-least-once
delivery, effectively-once state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP

from retention_model.batching import AdaptiveBatchSize
from retention_model.errors import BundleError
from retention_model.events import DecodeError, Event, EventType, decode_event, parse_timestamp_ms
from retention_model.features.derive import feature_matrix
from retention_model.features.silence import next_check_ms
from retention_model.features.state import APPLIED, UserState, apply_event, dump_state, load_state
from retention_model.model.bundle import resolve_bundle
from retention_model.model.scorer import ChurnModel
from retention_model.pipeline.decide import decide_many
from retention_model.policy.budget import BudgetLedger, Spend, day_period, wall_day_period
from retention_model.policy.circuit import CircuitBreaker, CircuitConfig
from retention_model.policy.policy import tier_for
from retention_model.scoring import describe_user
from streams import batching, compat
from streams.batching import Records
from streams.commits import DeliveredOffsets
from streams.kafka import faust_credentials
from streams.metrics import Metrics
from streams.output import OutputProducer
from streams.settings import Settings

__all__ = ["BatchProcessor", "create_app"]

log = logging.getLogger(__name__)

STATE_TABLE = "user-state"
TIMER_TABLE = "silence-timers"
BUDGET_TABLE = "policy-budget"
#: Bound on silence re-scoring rounds per batch (each round moves every due user
#: to a later threshold; there are at most seven thresholds per user).
MAX_SILENCE_ROUNDS = 16
#: Dead letters keep at most this much of the original value (Kafka's default
#: request limit is 1 MB; the decoder refuses anything over 64 KiB anyway).
DLQ_MAX_VALUE_BYTES = 256 * 1024


HOUR_MS = 3_600_000
#: How often the commit watchdog looks at how far commits trail processing.
COMMIT_WATCH_S = 10.0


class _Source:
    """Stands in for Faust's current event during table access: names the source partition.

    Faust's RocksDB store picks the partition database from the current event,
    and there is none beneath the stream; this object is all it reads.
    """

    __slots__ = ("__weakref__", "message")

    def __init__(self, tp: TP) -> None:
        self.message = _SourceMessage(tp)


class _SourceMessage:
    __slots__ = ("partition", "topic", "tp")

    def __init__(self, tp: TP) -> None:
        self.tp = tp
        self.topic = tp.topic
        self.partition = tp.partition


class _Scoring:
    """Users gathered for one model call, with why and as of when each is scored."""

    __slots__ = ("keys", "keys_set", "now_ms", "partitions", "seen_s", "states", "triggers", "user_ids")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.keys_set: set[bytes] = set()
        self.user_ids: list[str] = []
        self.states: list[UserState] = []
        self.now_ms: list[int] = []
        self.partitions: list[int] = []
        self.triggers: list[str] = []
        self.seen_s: list[float | None] = []

    def add(
        self, key: bytes, state: UserState, now_ms: int, partition: int, trigger: str, seen_s: float | None
    ) -> None:
        self.keys.append(key)
        self.keys_set.add(key)
        self.user_ids.append(key.decode())
        self.states.append(state)
        self.now_ms.append(now_ms)
        self.partitions.append(partition)
        self.triggers.append(trigger)
        self.seen_s.append(seen_s)


class _TableAccess:
    """Reads and writes one Faust table beneath the stream, changelog included.

    Faust's ``table[key] = value`` costs a stream context lookup, sensors and a
    producer future per key. Here the store is written directly (the memory
    store's dict, or RocksDB under the partition's context) and the changelog
    record is queued on the batch producer to the same partition Faust would
    pick, so recovery, standby and rebalance behave as with Faust's own writes.
    """

    def __init__(self, table: Any, output: OutputProducer, rocksdb: bool) -> None:
        self.table = table
        self.output = output
        self.rocksdb = rocksdb
        self.changelog = table.changelog_topic.get_topic_name()

    def _store(self) -> Any:
        store = self.table.data
        return store if self.rocksdb else store.data

    def get(self, key: bytes, source: _Source) -> bytes | None:
        if self.rocksdb:
            with _as_current(source):
                return self.table.data.get(key)
        return self.table.data.data.get(key)

    def get_many(self, keys: Iterable[bytes], source: _Source) -> list[bytes | None]:
        if self.rocksdb:
            with _as_current(source):
                get = self.table.data.get
                return [get(key) for key in keys]
        get = self.table.data.data.get
        return [get(key) for key in keys]

    def put_many(self, items: Iterable[tuple[bytes, bytes | None]], source: _Source) -> None:
        """Write (or, for ``None``, delete) keys of one source partition, with their changelog."""
        partition = source.message.partition
        produce = self.output.produce
        changelog = self.changelog
        rocksdb = self.rocksdb
        with _as_current(source):
            store = self._store()
            for key, value in items:
                if value is None:
                    if key not in store:
                        continue
                    del store[key]
                else:
                    store[key] = value
                produce(changelog, key, value, partition=partition, changelog=rocksdb)

    def all_keys(self) -> list[bytes]:
        return list(self.table.keys())

    def __len__(self) -> int:
        return len(self.table.data.data) if not self.rocksdb else len(self.table)

    def persisted(self, offsets: dict[tuple[str, int], int]) -> None:
        """Record delivered changelog offsets in RocksDB (where recovery resumes)."""
        if not self.rocksdb:
            return
        for (topic, partition), offset in offsets.items():
            if topic == self.changelog:
                self.table.data.set_persisted_offset(TP(topic, partition), offset)


class BatchProcessor:
    """Processes one micro-batch of records; Kafka access goes through Faust and the output producer."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        model: ChurnModel,
        metrics: Metrics,
        shadow: ChurnModel | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        #: Scored beside the live model; its scores are published, never acted on.
        self.shadow = shadow
        self.metrics = metrics
        self.policy = settings.policy
        raw_schema = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

        def raw_table(name: str, help: str) -> Any:
            return app.Table(
                name,
                default=None,
                partitions=settings.partitions,
                key_type=bytes,  # bytes types make Faust's changelog (and recovery) use the raw codec
                value_type=bytes,
                schema=raw_schema,
                help=help,
            )

        self.table = raw_table(STATE_TABLE, "Per-user feature state (retention_model.features.state, binary)")
        # Silence timers: key b"<partition>:<hour>" -> newline-separated user keys due
        # in that event-time hour. Stale entries are fine: the due time is
        # recomputed from the state before anyone is re-scored.
        self.timers = raw_table(
            TIMER_TABLE, "Silence timers: users due for re-scoring, by partition and event-time hour"
        )
        # Coupon spend per budget slice: key b"<partition>:<period>" -> JSON [money, count].
        self.budget_table = raw_table(BUDGET_TABLE, "Coupon budget spent, by partition slice and period")
        self.output = OutputProducer(settings, on_error=lambda topic: metrics.publish_errors.labels(topic).inc())
        rocksdb = settings.store.startswith("rocksdb")
        self.states = _TableAccess(self.table, self.output, rocksdb)
        self.timer_access = _TableAccess(self.timers, self.output, rocksdb)
        self.budget_access = _TableAccess(self.budget_table, self.output, rocksdb)
        self.ledgers: dict[int, BudgetLedger] = {}
        #: Per events partition, the first and the highest source offset fully processed
        #: in this assignment generation (for the commit watchdog).
        self.processed: dict[Any, tuple[int, int]] = {}
        self._commit_seen: dict[Any, int | None] = {}
        #: Bumped when partitions are revoked; a batch that spans it records nothing.
        self.generation = 0
        self.lateness_ms = int(settings.allowed_lateness_s * 1000)
        self.future_skew_ms = int(settings.max_future_skew_s * 1000)
        self.watermark_jump_ms = int(settings.watermark_jump_s * 1000)
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
        self._breaker_trips = 0
        self.watermarks: dict[int, int] = {}
        self.count_users_exactly = not rocksdb
        self._count_users_after_rebalance = rocksdb
        self.consumer: Any = None  # set once the app's consumer exists
        self._failed_bundles: set[Path] = set()
        self._buckets: dict[int, set[int]] | None = None
        self._sources: dict[TP, _Source] = {}
        self._by_partition: dict[int, _Source] = {}
        self._awaiting_delivery: list[float] = []

        def raw_topic(name: str) -> Any:
            return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

        self.events_topic = raw_topic(settings.events_topic)
        self.kind_topics = {"coupon": settings.coupon_topic, "recommendation": settings.recommendation_topic}
        # One thread: the model call releases the GIL, and a single thread keeps
        # TensorFlow's own thread pools from being oversubscribed.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")

    async def maybe_reload_model(self) -> None:
        """Load the newest bundle under the model path if it is not the one in use.

        The new model is loaded and warmed in the scoring thread, then swapped in
        between two batches, so no event waits or is lost. A bundle that fails to
        load is logged and counted, and the running model stays.
        """
        current = self.model.meta_.path if self.model.meta_ is not None else None
        try:
            newest = resolve_bundle(self.settings.model_path)
        except BundleError as exc:
            log.error("model reload: %s; keeping model %s", exc, self.model.version)
            self.metrics.model_reloads.labels("failed").inc()
            return
        if newest == current or newest in self._failed_bundles:
            return
        candidate = ChurnModel(newest, device=self.model.device)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, candidate.load)
        except BundleError as exc:
            self._failed_bundles.add(newest)
            log.error("model reload: %s; keeping model %s", exc, self.model.version)
            self.metrics.model_reloads.labels("failed").inc()
            return
        old = self.model
        self.model = candidate
        self.metrics.model_info.labels(old.version, old.device_name_ or "cpu").set(0)
        self.metrics.model_info.labels(candidate.version, candidate.device_name_ or "cpu").set(1)
        self.metrics.model_reloads.labels("loaded").inc()
        log.info("model reloaded: %s -> %s (%s)", old.version, candidate.version, newest)

    def _source(self, tp: TP) -> _Source:
        source = self._sources.get(tp)
        if source is None:
            source = self._sources[tp] = _Source(tp)
        self._by_partition[tp.partition] = source
        return source

    def _record_lag(self, batch: Records) -> None:
        """Lag per partition from the high watermark of the last fetch (correct on Tansu too)."""
        consumer = self.consumer
        if consumer is None:
            return
        for tp, records in batch.items():
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # no fetch answer yet for this partition
                continue
            if highwater is not None:
                self.metrics.consumer_lag.labels(str(tp.partition)).set(max(0, highwater - records[-1].offset - 1))

    def forget_timer_index(self) -> None:
        """Rebuild the in-memory bucket index on next use (after a rebalance)."""
        self._buckets = None

    def _timer_buckets(self) -> dict[int, set[int]]:
        if self._buckets is None:
            buckets: dict[int, set[int]] = {}
            for key in self.timer_access.all_keys():
                partition, _, hour = key.partition(b":")
                buckets.setdefault(int(partition), set()).add(int(hour))
            self._buckets = buckets
        return self._buckets

    async def process(self, batch: Records) -> Callable[[], Awaitable[None]]:
        """Decode, update state, re-score silent users, score and publish one micro-batch.

        Returns once everything the batch writes (outputs, dead letters, changelog)
        is queued, with a coroutine function that waits until all of it is
        delivered: only after that may the batch's offsets be acknowledged.
        """
        metrics = self.metrics
        delivery = self.output.begin()
        generation = self.generation
        events_in = 0
        attributed: Counter[EventType] = Counter()
        # Keyed by the enum, named once per batch: a wire name per event costs a lookup each.
        outcomes: Counter[tuple[EventType, str]] = Counter()
        unknown = 0
        scoring = _Scoring()
        new_users = 0
        lateness = self.lateness_ms
        # Event time may not run ahead of the record's timestamp, or of the wall clock
        # where the record's own timestamp is missing or ahead of it: one record's clock
        # must not fire every silence timer and open fresh cooldowns and budgets.
        skew = self.future_skew_ms
        wall_ms = int(time.time() * 1000)
        horizon = wall_ms + skew
        for tp, records in batch.items():
            events_in += len(records)
            partition = tp.partition
            source = self._source(tp)
            watermark = self.watermarks.get(partition, 0)
            late = 0
            # user key -> [(event, offset)], first-seen order; and the earliest producer time per user
            by_user: dict[bytes, list[tuple[Event, int]]] = {}
            first_seen: dict[bytes, int] = {}
            for record in records:
                value = record.value if record.value is not None else b""
                decoded = decode_event(value)
                key = record.key
                if isinstance(decoded, Event):
                    if key is None or key != decoded.user_id.encode():
                        decoded = DecodeError(
                            "key_mismatch",
                            f"record key {key!r} is not the event's user_id; producers key events by user_id",
                        )
                    elif decoded.ts_ms - skew > min(record.timestamp or 0, wall_ms) and (
                        ahead := _ahead_of_time(decoded.ts_ms, record.timestamp, wall_ms, skew)
                    ):
                        decoded = ahead  # (the cheap test above is false for nearly every event)
                    else:
                        items = by_user.get(key)
                        if items is None:
                            by_user[key] = [(decoded, record.offset)]
                            first_seen[key] = record.timestamp
                        else:
                            items.append((decoded, record.offset))
                        if decoded.intervention_id is not None:
                            attributed[decoded.type] += 1
                        ts = decoded.ts_ms
                        if ts < watermark:
                            late += 1
                        elif ts - lateness > watermark:
                            watermark = ts - lateness
                        continue
                if isinstance(decoded, DecodeError):
                    self._dead_letter(record, decoded)
                else:  # UnknownEventType: a newer producer's event, counted, not an error
                    unknown += 1
            if watermark > horizon:  # never ahead of the wall clock, whatever the events say
                watermark = horizon
            previous = self.watermarks.get(partition, 0)
            if previous and watermark - previous > self.watermark_jump_ms:
                jump_s = (watermark - previous) / 1000
                metrics.watermark_jump_seconds.labels(str(partition)).set(jump_s)
                metrics.watermark_jumps.labels(str(partition)).inc()
                log.warning(
                    "watermark of partition %d jumped %.0f s (%.1f days) in one batch; silence timers up to it fire",
                    partition,
                    jump_s,
                    jump_s / 86_400,
                )
            self.watermarks[partition] = watermark
            if late:
                metrics.late_events.inc(late)
            keys = list(by_user)
            for key, raw in zip(keys, self.states.get_many(keys, source)):
                if raw is None:
                    state = UserState()
                    new_users += 1
                else:
                    state = load_state(raw)
                applied = 0
                for event, offset in by_user[key]:
                    outcome = apply_event(state, event, offset)
                    outcomes[event.type, outcome] += 1
                    if outcome is APPLIED:
                        applied += 1
                if applied:
                    seen = first_seen[key]
                    scoring.add(key, state, state.last_seen_ms, partition, "event", seen / 1000 if seen else None)
        metrics.batch_events.observe(events_in)
        # Counted per batch, not per event: a labelled counter update takes a lock.
        for (event_type, outcome), count in outcomes.items():
            metrics.events.labels(event_type.wire_name, outcome).inc(count)
        if unknown:
            metrics.events.labels("unknown", "ignored").inc(unknown)
        for event_type, count in attributed.items():
            metrics.attributed_events.labels(event_type.wire_name).inc(count)

        self._record_lag(batch)
        partitions = [tp.partition for tp in batch]
        self._collect_silent(scoring, partitions)
        if scoring.states:
            await self._score_and_publish(scoring)
        # A re-score files the user's next check, which may already be due under
        # this batch's watermark (a replay covers days in one batch): keep going
        # until no timer below the watermark is left.
        for _ in range(MAX_SILENCE_ROUNDS):
            silent = _Scoring()
            self._collect_silent(silent, partitions)
            if not silent.states:
                break
            await self._score_and_publish(silent)
        delivery.seal()
        seen_times, self._awaiting_delivery = self._awaiting_delivery, []
        # After the batch's state writes, so a new user counts in this batch already.
        if self.count_users_exactly:
            metrics.users_tracked.set(len(self.states))  # a dict's length: O(1)
        elif self._count_users_after_rebalance:
            self._count_users_after_rebalance = False
            metrics.users_tracked.set(len(self.table))  # one scan of the store per assignment
        elif new_users:
            metrics.users_tracked.inc(new_users)  # counting a RocksDB store every batch would scan it

        async def settle() -> None:
            await delivery.wait()
            # Event to decision: from the event's producer timestamp to its score and
            # decisions delivered to the broker (when the broker acknowledged them,
            # not when this loop got round to noticing).
            delivered = delivery.delivered_at or time.time()
            observe = metrics.decision_latency_seconds.observe
            for seen in seen_times:
                observe(max(0.0, delivered - seen))
            if delivery.changelog_offsets:
                for access in (self.states, self.timer_access, self.budget_access):
                    access.persisted(delivery.changelog_offsets)
            if generation == self.generation:  # no rebalance while this batch ran
                for tp, records in batch.items():
                    first, _ = self.processed.get(tp, (records[0].offset, -1))
                    self.processed[tp] = (first, records[-1].offset)

        return settle

    def _collect_silent(self, scoring: _Scoring, partitions: list[int]) -> None:
        """Add users whose silence timer fell due below their partition's watermark.

        Each due bucket is deleted as it is read, before anyone is re-registered, so
        a timer filed during this batch into an hour being emptied is never lost.
        """
        buckets = self._timer_buckets()
        for partition in partitions:
            watermark = self.watermarks.get(partition)
            hours = buckets.get(partition)
            if watermark is None or not hours:
                continue
            source = self._by_partition[partition]
            due_hours = sorted(h for h in hours if (h + 1) * HOUR_MS <= watermark)
            for hour in due_hours:
                bucket_key = f"{partition}:{hour}".encode()
                raw_users = self.timer_access.get(bucket_key, source)
                hours.discard(hour)
                self.timer_access.put_many([(bucket_key, None)], source)
                if not raw_users:
                    continue
                candidates = [key for key in set(raw_users.split(b"\n")) if key not in scoring.keys_set]
                # (a user scored in this round already has its new timer come next round)
                for key, raw in zip(candidates, self.states.get_many(candidates, source)):
                    if raw is None:
                        continue
                    state = load_state(raw)
                    due = next_check_ms(state)
                    if due is None or due > watermark:
                        continue  # stale entry: the user was active since, or already re-scored
                    scoring.add(key, state, due, partition, "silence", None)

    async def _score_and_publish(self, scoring: _Scoring) -> None:
        metrics = self.metrics
        features = feature_matrix(scoring.states, scoring.now_ms)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        model = self.model  # a hot reload may swap self.model while this batch scores
        shadow = self.shadow
        risks, uplifts, shadow_risks = await loop.run_in_executor(self.executor, _score, model, shadow, features)
        metrics.scoring_seconds.observe(time.perf_counter() - started)
        metrics.batch_users.observe(len(scoring.states))
        version = model.version
        budgets = [self._ledger(p) for p in scoring.partitions] if self.policy.has_budget else None
        scored = decide_many(
            scoring.user_ids,
            scoring.states,
            scoring.now_ms,
            features,
            risks,
            model_version=version,
            config=self.policy,
            uplifts=uplifts,
            budgets=budgets,
            recommender=model.recommender_,
            wall_ms=None if self.replay else int(time.time() * 1000),
            breaker=None if self.replay else self.breaker,
        )
        self.report_breaker()
        touched = sorted(set(scoring.partitions))
        if budgets is not None:
            self._save_budgets(touched, max(scoring.now_ms), None if self.replay else int(time.time() * 1000))

        by_partition: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in touched}
        new_timers: dict[tuple[int, int], list[bytes]] = {}
        for key, state, partition in zip(scoring.keys, scoring.states, scoring.partitions):
            by_partition[partition].append((key, dump_state(state)))
            due = next_check_ms(state)
            if due is not None:
                new_timers.setdefault((partition, due // HOUR_MS), []).append(key)
        for partition, items in by_partition.items():
            self.states.put_many(items, self._by_partition[partition])
        self._add_timers(new_timers)

        settings = self.settings
        score_records: list[tuple[bytes, bytes]] = []
        decision_records: list[tuple[bytes, bytes]] = []
        sent: dict[str, list[tuple[bytes, bytes]]] = {kind: [] for kind in self.kind_topics}
        tiers: Counter[str] = Counter()
        decided: Counter[tuple[str, str, str]] = Counter()
        interventions: Counter[tuple[str, str]] = Counter()
        for index, (key, result, trigger) in enumerate(zip(scoring.keys, scored, scoring.triggers)):
            record = result.score_record(version)
            record["trigger"] = trigger
            if shadow_risks is not None:
                assert shadow is not None
                shadow_risk = float(shadow_risks[index])
                shadow_tier = tier_for(shadow_risk, self.policy)
                record["shadow"] = {"model_version": shadow.version, "risk": round(shadow_risk, 6), "tier": shadow_tier}
                metrics.shadow_risk_difference.observe(shadow_risk - result.risk)
                metrics.shadow_tier_agreement.labels("yes" if shadow_tier == result.tier else "no").inc()
            score_records.append((key, orjson.dumps(record)))
            tiers[result.tier] += 1
            for decision in result.decisions:
                intervention = decision.intervention
                decision_records.append((key, orjson.dumps(decision.as_dict())))
                decided[intervention.kind, decision.action, decision.rule] += 1
                if decision.action == "sent":
                    sent[intervention.kind].append((key, orjson.dumps(intervention.as_dict())))
                    interventions[intervention.kind, intervention.tier] += 1
        output = self.output
        output.produce_many(settings.scores_topic, score_records)
        output.produce_many(settings.decisions_topic, decision_records)
        for kind, records in sent.items():
            output.produce_many(self.kind_topics[kind], records)
        for tier, count in tiers.items():
            metrics.scores.labels(tier).inc(count)
        for (kind, action, rule), count in decided.items():
            metrics.decisions.labels(kind, action).inc(count)
            metrics.decision_rules.labels(kind, rule).inc(count)
        for (kind, tier), count in interventions.items():
            metrics.interventions.labels(kind, tier).inc(count)
        silenced = scoring.triggers.count("silence")
        if silenced:
            metrics.silence_rescored.inc(silenced)
        self._awaiting_delivery.extend(seen for seen in scoring.seen_s if seen is not None)

    def watch_commits(self, consumer: Any, commits: DeliveredOffsets) -> None:
        """Export how far each partition's commit trails what was processed; warn when stuck.

        Commits come from the delivered-up-to offsets (``streams.commits``) and count as
        made when the broker confirms them. Should a partition's commit still stop
        moving (a broker refusing commits, a bug), every restart would re-read more.
        State stays exact (per-user offsets) and re-sent outputs keep their ids, but
        the growing re-read must not be silent: ``retention_uncommitted_records`` shows
        it and the ``RetentionCommitsStuck`` alert fires on it.
        """
        assignment = consumer.assignment()
        for tp, (first, offset) in list(self.processed.items()):
            if tp not in assignment:
                self.processed.pop(tp, None)
                self._commit_seen.pop(tp, None)
                continue
            committed = commits.committed(tp)
            behind = offset + 1 - (first if committed is None else committed)
            self.metrics.uncommitted_records.labels(str(tp.partition)).set(max(0, behind))
            if behind <= 0:
                self._commit_seen.pop(tp, None)
            elif self._commit_seen.get(tp, -1) == committed:
                log.warning(
                    "commit of %s[%d] has not moved from %s while %d is processed: a restart would re-read %d records",
                    tp.topic,
                    tp.partition,
                    committed,
                    offset,
                    behind,
                )
            else:
                self._commit_seen[tp] = committed

    def forget_budgets(self) -> None:
        """Drop cached budget slices (after a rebalance another worker may have spent)."""
        self.ledgers.clear()

    def _ledger(self, partition: int) -> BudgetLedger:
        ledger = self.ledgers.get(partition)
        if ledger is None:
            source = self._by_partition[partition]

            def lookup(period: str) -> Spend | None:
                raw = self.budget_access.get(f"{partition}:{period}".encode(), source)
                if raw is None:
                    return None
                money, count = orjson.loads(raw)
                return float(money), int(count)

            ledger = BudgetLedger(self.policy, share=1.0 / self.settings.partitions, lookup=lookup)
            self.ledgers[partition] = ledger
        return ledger

    def report_breaker(self) -> None:
        """Export the circuit breaker's state (an expired cooldown closes it here too)."""
        breaker = self.breaker
        self.metrics.circuit_open.set(1 if breaker.is_open else 0)
        if breaker.trips > self._breaker_trips:
            self.metrics.circuit_trips.inc(breaker.trips - self._breaker_trips)
            self._breaker_trips = breaker.trips
            log.error(
                "circuit breaker open: %s; interventions are suppressed (rule circuit_open), scores go on. "
                "It closes after %g s, or with `retention circuit close`",
                breaker.reason,
                breaker.config.cooldown_s,
            )

    def _save_budgets(self, partitions: list[int], now_ms: int, wall_ms: int | None = None) -> None:
        """Write each touched slice's spend to the changelog-backed table; update the gauges."""
        for partition in partitions:
            ledger = self.ledgers.get(partition)
            if ledger is None or not ledger.dirty:
                continue
            self.budget_access.put_many(
                [
                    (f"{partition}:{period}".encode(), orjson.dumps(list(ledger.spent[period])))
                    for period in sorted(ledger.dirty)
                ],
                self._by_partition[partition],
            )
            ledger.dirty.clear()
        config = self.policy
        today = day_period(now_ms) if wall_ms is None else wall_day_period(wall_ms)
        for scope, period in (("daily", today), ("total", "total")):
            spent = [ledger.spent.get(period, (0.0, 0)) for ledger in self.ledgers.values()]
            share = len(self.ledgers) / self.settings.partitions
            for unit, index, cap in (
                ("money", 0, config.budget_daily_money if scope == "daily" else config.budget_total_money),
                ("count", 1, config.budget_daily_count if scope == "daily" else config.budget_total_count),
            ):
                self.metrics.budget_spent.labels(scope, unit).set(sum(s[index] for s in spent))
                self.metrics.budget_cap.labels(scope, unit).set(cap * share)

    def _add_timers(self, new_timers: dict[tuple[int, int], list[bytes]]) -> None:
        buckets = self._timer_buckets()
        for (partition, hour), keys in new_timers.items():
            source = self._by_partition[partition]
            bucket_key = f"{partition}:{hour}".encode()
            existing = self.timer_access.get(bucket_key, source)
            joined = b"\n".join(keys)
            self.timer_access.put_many([(bucket_key, existing + b"\n" + joined if existing else joined)], source)
            buckets.setdefault(partition, set()).add(hour)

    def _dead_letter(self, record: Any, error: DecodeError) -> None:
        """Original bytes as the value; why and where from in headers."""
        value = record.value or b""
        headers = [
            ("retention.dlq.reason", error.reason.encode()),
            ("retention.dlq.detail", error.detail.encode(errors="replace")),
            ("retention.dlq.topic", record.topic.encode()),
            ("retention.dlq.partition", str(record.partition).encode()),
            ("retention.dlq.offset", str(record.offset).encode()),
        ]
        if len(value) > DLQ_MAX_VALUE_BYTES:
            # A record too big to re-publish in full would fail the send and stop the
            # worker: keep its head, and say how long it was.
            headers.append(("retention.dlq.truncated_from", str(len(value)).encode()))
            value = value[:DLQ_MAX_VALUE_BYTES]
        self.output.produce(self.settings.dlq_topic, record.key, value, headers=headers)
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


def _ahead_of_time(ts_ms: int, record_ms: int | None, wall_ms: int, skew_ms: int) -> DecodeError | None:
    """Why an event's time is too far ahead, or None: compared with its record's timestamp, or
    with the wall clock where the record has none or carries a future one itself."""
    use_record = record_ms is not None and 0 < record_ms <= wall_ms + skew_ms
    reference = record_ms if use_record else wall_ms
    assert reference is not None
    if ts_ms <= reference + skew_ms:
        return None
    against = "record timestamp" if use_record else "wall clock"
    return DecodeError(
        "timestamp_in_future",
        f"ts {ts_ms} is {(ts_ms - reference) / 1000:.0f} s ahead of the {against}"
        f"; at most {skew_ms / 1000:g} s allowed (RETENTION_MAX_FUTURE_SKEW_S)",
    )


def _score(model: ChurnModel, shadow: ChurnModel | None, features: Any) -> tuple[Any, Any, Any]:
    """Churn risk, coupon uplift and shadow risk of a batch (in the scoring thread)."""
    shadow_risks = shadow.score_many(features) if shadow is not None else None
    return model.score_many(features), model.uplift_many(features), shadow_risks


def _as_current(source: _Source) -> contextlib.AbstractContextManager[None]:
    """Run store access as if an event of ``source``'s partition were being processed."""
    return compat.as_current_event(source)


def create_app(
    settings: Settings, model: ChurnModel, metrics: Metrics, *, shadow: ChurnModel | None = None
) -> tuple[faust.App, BatchProcessor]:
    """Build the Faust app and its agent for ``settings``; the model is already loaded."""
    session = settings.session_timeout_s
    compat.check_faust_version()
    compat.cap_fetch_wait(settings.fetch_max_wait_ms)
    if settings.broker_kind == "tansu":
        compat.use_fetched_highwaters(",".join(settings.broker_list))
    compat.hold_seek_for_tests()
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{b}" for b in settings.broker_list],
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.1, session / 4),
        broker_rebalance_timeout=max(session, 2.0),
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
        stream_buffer_maxsize=max(4096, settings.batch_max_size * 2),
        # One drain iteration may take a whole batch from the fetched buffer: gathering
        # 8,192 records 1,024 at a time cost ~8% of backlog throughput (NOTES entry 23).
        broker_max_poll_records=settings.batch_max_size,
        table_standby_replicas=0,
        broker_credentials=faust_credentials(settings),
    )
    processor = BatchProcessor(app, settings, model, metrics, shadow)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        processor.generation += 1
        processor.processed.clear()
        processor._commit_seen.clear()

    @app.on_rebalance_complete.connect
    async def on_rebalance(sender: Any, **kwargs: Any) -> None:
        processor.forget_timer_index()
        processor.forget_budgets()
        processor.processed.clear()
        processor._commit_seen.clear()
        processor.watermarks.clear()
        processor._count_users_after_rebalance = not processor.count_users_exactly
        assigned = [tp for tp in app.assignor.assigned_actives() if tp.topic == settings.events_topic]
        metrics.assigned_partitions.set(len(assigned))

    if settings.state_api == "on":

        @app.page("/users/{user_id}/")
        @app.table_route(table=processor.table, match_info="user_id")
        async def user_view(web: Any, request: Any, user_id: str) -> Any:
            raw = processor.table.get(user_id.encode())
            if raw is None:
                return web.json({"user_id": user_id, "error": "no state for this user on this cluster"}, status=404)
            as_of = request.query.get("as_of")
            as_of_ms = None
            if as_of is not None:
                parsed = parse_timestamp_ms(int(as_of) if as_of.isdigit() else as_of)
                if isinstance(parsed, DecodeError):
                    return web.json({"error": f"as_of: {parsed.detail}"}, status=400)
                as_of_ms = parsed
            return web.json(describe_user(user_id, load_state(raw), as_of_ms))

    @app.timer(1.0)
    async def report_recovery() -> None:
        processor.consumer = app.consumer
        recovery = app.tables.recovery
        metrics.recovering.set(1 if recovery.in_recovery else 0)
        metrics.recovery_remaining.set(recovery.active_remaining_total() if recovery.in_recovery else 0)
        processor.report_breaker()
        if not recovery.in_recovery:
            # Recovered users count before their next event arrives (a restart read 0 until then).
            if processor.count_users_exactly:
                metrics.users_tracked.set(len(processor.states))
            elif processor._count_users_after_rebalance:
                processor._count_users_after_rebalance = False
                metrics.users_tracked.set(len(processor.table))

    @app.page("/circuit/")
    class CircuitView(faust.web.View):
        """The intervention circuit breaker: GET its state, POST to close it (``retention circuit close``)."""

        async def get(self, request: Any) -> Any:
            return self.json({"replay": processor.replay, **processor.breaker.status()})

        async def post(self, request: Any) -> Any:
            was_open = processor.breaker.is_open
            processor.breaker.close()
            processor.report_breaker()
            if was_open:
                log.warning("circuit breaker closed by an operator")
            return self.json({"replay": processor.replay, **processor.breaker.status()})

    @app.timer(COMMIT_WATCH_S)
    async def watch_commits() -> None:
        if not app.rebalancing:
            processor.watch_commits(app.consumer, drain.offsets)

    if settings.model_reload_s > 0:

        @app.timer(settings.model_reload_s)
        async def reload_model() -> None:
            await processor.maybe_reload_model()

    # No agent: the batch drain feeds the processor whole fetched batches, and
    # the conductor only has to know the topic so that Faust subscribes to it.
    app.topics.add(processor.events_topic)
    sizer = AdaptiveBatchSize(
        latency_target_s=settings.latency_target_ms / 1000.0,
        max_size=settings.batch_max_size,
        max_wait_s=settings.batch_max_wait_ms / 1000.0,
    )

    async def handle(batch: Records) -> Callable[[], Awaitable[None]]:
        processor.consumer = app.consumer
        return await processor.process(batch)

    drain = batching.BatchDrain(settings.events_topic, handle, sizer)
    batching.install(app, drain)  # the events topic commits from drain.offsets from now on

    @app.timer(5.0)
    async def report_batch_size() -> None:
        metrics.batch_size_target.set(sizer.size)

    return app, processor
