"""Core benchmarks, no Kafka: feature updates, the whole core pipeline, state size."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from retention_model.events import encode_event
from retention_model.features.derive import feature_matrix
from retention_model.features.state import DAY_MS, UserState, apply_event, dump_state
from retention_model.model.scorer import ChurnModel
from retention_model.pipeline import (
    BatchPipeline,
    DecodeLimits,
    Inference,
    MemoryStore,
    MemoryStores,
    ModelCall,
    PipelineConfig,
    Record,
    decide_many,
    decode_records,
    fold_events,
)
from retention_model.pipeline.state_cache import StateCache
from retention_model.policy.recommend import Recommender
from streams.settings import BUNDLED_MODEL, Settings
from training.simulator import SimConfig, simulate

EVENTS = list(simulate(SimConfig(users=2000, days=120, seed=21)))
PAYLOADS = [encode_event(e) for e in EVENTS]


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def test_feature_updates(bench: Any) -> None:
    """apply_event on one core; reference: json parsing of the same events (orjson)."""
    started = time.perf_counter()
    for payload in PAYLOADS:
        orjson.loads(payload)
    parse = time.perf_counter() - started

    states: dict[str, UserState] = {}
    started = time.perf_counter()
    for offset, event in enumerate(EVENTS):
        state = states.get(event.user_id)
        if state is None:
            state = states[event.user_id] = UserState()
        apply_event(state, event, offset)
    updates = time.perf_counter() - started
    bench("core.json_parse_per_s", _rate(len(PAYLOADS), parse), unit="events/s (reference)")
    bench("core.feature_updates_per_s", _rate(len(EVENTS), updates), unit="events/s", reference="core.json_parse_per_s")


LIMITS = DecodeLimits(lateness_ms=300_000, future_skew_ms=300_000, watermark_jump_ms=DAY_MS)
BATCH_SIZE = 2000


def _records(events: list[Any], payloads: list[bytes]) -> list[Record]:
    return [Record(e.user_id.encode(), p, offset, e.ts_ms) for offset, (e, p) in enumerate(zip(events, payloads))]


def _stages(records: list[Record], model: ChurnModel, wall_ms: int) -> float:
    """Seconds for the pipeline's stages one by one over ``records`` in batches of 2,000:
    decode, fold, features, infer, decide, write the states (no timers, no output records)."""
    policy = Settings.load({}).policy
    store = MemoryStore()
    cache = StateCache(PipelineConfig.state_cache_users)  # as the pipeline keeps them
    started = time.perf_counter()
    watermark = 0
    for start in range(0, len(records), BATCH_SIZE):
        batch = records[start : start + BATCH_SIZE]
        decoded = decode_records(batch, watermark=watermark, wall_ms=wall_ms, limits=LIMITS)
        watermark = decoded.watermark
        folded = fold_events(decoded.events, store, cache)
        keys = [key for key, _ in folded.changed]
        states = [state for _, state in folded.changed]
        now = [state.last_seen_ms for state in states]
        features = feature_matrix(states, now)
        risks = model.score_many(features)
        user_ids = [k.decode() for k in keys]
        decide_many(user_ids, states, now, features, risks, model_version=model.version, config=policy)
        blobs = [dump_state(state) for state in states]
        store.put_many(list(zip(keys, blobs)))
        cache.keep(zip(keys, blobs, states))
    return time.perf_counter() - started


def test_core_pipeline(bench: Any) -> None:
    """Decode + state + micro-batched scoring + policy, batches of 2,000 events, no Kafka.

    The pipeline's stages one by one (as before the pipeline existed, so the figure stays
    comparable), then the whole :class:`BatchPipeline` with its silence timers and output
    records over in-memory stores.
    """
    model = ChurnModel(BUNDLED_MODEL, device="cpu").load()
    policy = Settings.load({}).policy
    records = _records(EVENTS, PAYLOADS)
    wall_ms = max(e.ts_ms for e in EVENTS) + DAY_MS
    elapsed = _stages(records, model, wall_ms)
    bench(
        "core.events_per_s",
        _rate(len(PAYLOADS), elapsed),
        unit="events/s (2,000 users, 120 days)",
        reference="core.json_parse_per_s",
    )

    async def infer(features: Any) -> Inference:
        return Inference(model.score_many(features), model.uplift_many(features))

    config = PipelineConfig(policy, partitions=1, limits=LIMITS, replay=True)
    pipeline = BatchPipeline(config, MemoryStores(), clock=lambda: wall_ms)
    recommender = TimedRecommender.from_dict(model.recommendations_)
    call = ModelCall(infer, model.version, recommender)
    started = time.perf_counter()
    for start in range(0, len(records), BATCH_SIZE):
        asyncio.run(pipeline.process({0: records[start : start + BATCH_SIZE]}, call))
    elapsed = time.perf_counter() - started
    bench(
        "core.batch_pipeline_events_per_s",
        _rate(len(PAYLOADS), elapsed),
        unit="events/s (silence timers and output records included)",
        reference="core.json_parse_per_s",
    )
    bench(
        "core.recommendation_share_of_batch",
        recommender.seconds / elapsed,
        unit=f"of the batch pipeline's time spent building {recommender.calls:,} recommendation payloads"
        " (target <= 0.10)",
    )
    assert recommender.calls > 0


class TimedRecommender(Recommender):
    """The shipped recommender, with the time spent building payloads added up (issue 21's serving budget)."""

    seconds = 0.0
    calls = 0

    def recommend(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().recommend(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def test_core_pipeline_many_users(bench: Any) -> None:
    """The same stages with 20,000 users (4 simulated days, ~209k events): fewer events per
    user in a batch, so the per-user costs (state read and write, features, policy) count."""
    events = list(simulate(SimConfig(users=20_000, days=4, seed=22)))
    records = _records(events, [encode_event(e) for e in events])
    model = ChurnModel(BUNDLED_MODEL, device="cpu").load()
    elapsed = _stages(records, model, max(e.ts_ms for e in events) + DAY_MS)
    bench(
        "core.events_per_s_many_users",
        _rate(len(records), elapsed),
        unit=f"events/s ({len(records):,} events of 20,000 users, 4 days)",
        reference="core.events_per_s",
    )


def test_recommendation_payloads_against_catalogue_size(bench: Any) -> None:
    """A buyer's payload with the shipped table, and with 200,000 more items in its catalogue (a real
    shop's bundle names every item ever carted or bought): the work must follow the terms, not the catalogue."""
    model = ChurnModel(BUNDLED_MODEL, device="cpu").load()
    table = model.recommendations_
    states: dict[str, UserState] = {}
    for offset, event in enumerate(EVENTS[:120_000]):
        apply_event(states.setdefault(event.user_id, UserState()), event, offset)
    buyers = [state for state in states.values() if state.bought][:400]
    padded = {**table, "category_of": {**table["category_of"], **{f"zz{n:07d}": "c01" for n in range(200_000)}}}
    figures = {}
    tables = {"core.recommendation_payload_us": table, "core.recommendation_payload_us_200k_items": padded}
    for name, data in tables.items():
        recommender = Recommender.from_dict(data)
        recommender.recommend(buyers[0], [], 10, buyers[0].last_seen_ms)  # the index, built once
        passes = []
        for _ in range(3):
            started = time.perf_counter()
            for state in buyers:
                recommender.recommend(state, list(state.categories)[:3], 10, state.last_seen_ms + DAY_MS)
            passes.append((time.perf_counter() - started) / len(buyers) * 1e6)
        figures[name] = min(passes)
    catalogue = len(Recommender.from_dict(table).index().items)
    bench(
        "core.recommendation_payload_us",
        figures["core.recommendation_payload_us"],
        unit=f"µs a buyer's payload, {catalogue:,} items in the bundle (fastest of 3 passes over {len(buyers)} buyers)",
    )
    bench(
        "core.recommendation_payload_us_200k_items",
        figures["core.recommendation_payload_us_200k_items"],
        unit=f"µs a buyer's payload, {catalogue + 200_000:,} items in the bundle",
        reference="core.recommendation_payload_us",
    )
