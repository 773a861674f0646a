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


def test_core_pipeline(bench: Any) -> None:
    """Decode + state + micro-batched scoring + policy, batches of 2,000 events, no Kafka.

    The pipeline's stages one by one (as before the pipeline existed, so the figure stays
    comparable), then the whole :class:`BatchPipeline` with its silence timers and output
    records over in-memory stores.
    """
    model = ChurnModel(BUNDLED_MODEL, device="cpu").load()
    policy = Settings.load({}).policy
    limits = DecodeLimits(lateness_ms=300_000, future_skew_ms=300_000, watermark_jump_ms=DAY_MS)
    records = [Record(e.user_id.encode(), p, offset, e.ts_ms) for offset, (e, p) in enumerate(zip(EVENTS, PAYLOADS))]
    wall_ms = max(e.ts_ms for e in EVENTS) + DAY_MS
    store = MemoryStore()
    batch_size = 2000
    started = time.perf_counter()
    watermark = 0
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        decoded = decode_records(batch, watermark=watermark, wall_ms=wall_ms, limits=limits)
        watermark = decoded.watermark
        folded = fold_events(decoded.events, store)
        keys = [key for key, _ in folded.changed]
        states = [state for _, state in folded.changed]
        now = [state.last_seen_ms for state in states]
        features = feature_matrix(states, now)
        risks = model.score_many(features)
        user_ids = [k.decode() for k in keys]
        decide_many(user_ids, states, now, features, risks, model_version=model.version, config=policy)
        store.put_many([(key, dump_state(state)) for key, state in zip(keys, states)])
    elapsed = time.perf_counter() - started
    bench("core.events_per_s", _rate(len(PAYLOADS), elapsed), unit="events/s", reference="core.json_parse_per_s")

    async def infer(features: Any) -> Inference:
        return Inference(model.score_many(features), model.uplift_many(features))

    config = PipelineConfig(policy, partitions=1, limits=limits, replay=True)
    pipeline = BatchPipeline(config, MemoryStores(), clock=lambda: wall_ms)
    call = ModelCall(infer, model.version, model.recommender_)
    started = time.perf_counter()
    for start in range(0, len(records), batch_size):
        asyncio.run(pipeline.process({0: records[start : start + batch_size]}, call))
    elapsed = time.perf_counter() - started
    bench(
        "core.batch_pipeline_events_per_s",
        _rate(len(PAYLOADS), elapsed),
        unit="events/s (silence timers and output records included)",
        reference="core.json_parse_per_s",
    )
