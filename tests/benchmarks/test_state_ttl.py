"""Expiry: a million one-time visitors through the batch pipeline, with the TTL and without.

Why: without ``RETENTION_STATE_TTL_DAYS`` every visitor who never comes back keeps a
state and timer entries for ever. The figures are the users still held when the last
visitor has passed, and the pipeline's rate with expiry on beside the rate without it
(the reference, same run), so the cost of the expiry timers is visible.
Named to sort after ``test_state.py``: both build million-user stores.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any

import numpy as np

from retention_model.events import Event, EventType, encode_event
from retention_model.features.state import DAY_MS
from retention_model.pipeline import (
    BatchPipeline,
    DecodeLimits,
    Inference,
    MemoryStore,
    MemoryStores,
    ModelCall,
    PipelineConfig,
    Record,
)
from retention_model.policy.config import PolicyConfig

VISITORS = int(os.environ.get("BENCH_TTL_VISITORS", 1_000_000))
DAYS = 1_000  # visitors arrive evenly over this many days of event time
TTL_DAYS = 400
BATCH = 5_000
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
LIMITS = DecodeLimits(lateness_ms=300_000, future_skew_ms=300_000, watermark_jump_ms=3650 * DAY_MS)
POLICY = PolicyConfig(holdout_share=0.0)


def _records() -> list[Record]:
    step_ms = DAYS * DAY_MS // VISITORS
    return [
        Record(f"v{i:07d}".encode(), encode_event(Event(f"e{i}", f"v{i:07d}", EventType.VIEW, T0 + i * step_ms)), i)
        for i in range(VISITORS)
    ]


def _run(records: list[Record], ttl_days: float | None) -> tuple[float, list[int], int, float]:
    """(events/s, users held after each quarter of the stream, timer entries and MB stored at the end)."""
    gc.collect()
    stores = MemoryStores()
    ttl_ms = None if ttl_days is None else int(ttl_days * DAY_MS)
    config = PipelineConfig(POLICY, partitions=1, limits=LIMITS, replay=True, state_ttl_ms=ttl_ms)
    wall = T0 + (DAYS + 1) * DAY_MS
    pipeline = BatchPipeline(config, stores, clock=lambda: wall)
    states, timers = stores(0).states, stores(0).timers
    assert isinstance(states, MemoryStore) and isinstance(timers, MemoryStore)
    quarter = max(1, len(records) // 4)
    held: list[int] = []

    async def infer(features: np.ndarray) -> Inference:
        return Inference(np.full(len(features), 0.05))  # low risk: the cost measured is state, not sending

    async def feed() -> None:
        call = ModelCall(infer, "bench")
        for start in range(0, len(records), BATCH):
            await pipeline.process({0: records[start : start + BATCH]}, call)
            if (start + BATCH) // quarter > start // quarter:
                held.append(len(states.data))

    started = time.perf_counter()
    asyncio.run(feed())
    seconds = time.perf_counter() - started
    entries = sum(raw.count(b"\n") + 1 for raw in timers.data.values() if raw)
    stored = sum(len(k) + len(v) for store in (states, timers) for k, v in store.data.items())
    return len(records) / seconds, held, entries, stored / 1e6


def test_one_time_visitors_expire(bench: Any) -> None:
    """1M one-time visitors over 1,000 days, TTL 400 days: the users held level off instead of growing.

    Reference: the same visitors without a TTL over the first 400 days, where neither run
    expires anyone (the whole no-TTL run would double this benchmark's ten minutes and its
    users held is known: every visitor).
    """
    records = _records()
    rate_ttl, held_ttl, timers_ttl, mb_ttl = _run(records, TTL_DAYS)
    rate_all, held_all, _, mb_all = _run(records[: len(records) * TTL_DAYS // DAYS], None)
    bench(
        "state.ttl_events_per_s",
        rate_ttl,
        unit=f"events/s, {VISITORS:,} one-time visitors over {DAYS} days, TTL {TTL_DAYS} days",
        reference="state.no_ttl_events_per_s",
    )
    bench("state.no_ttl_events_per_s", rate_all, unit=f"events/s, no TTL, first {TTL_DAYS} days (reference)")
    bench("state.ttl_users_held_half", held_ttl[1], unit=f"users held at day {DAYS // 2}, TTL {TTL_DAYS} days")
    bench(
        "state.ttl_users_held",
        held_ttl[-1],
        unit=f"users held at day {DAYS} (bounded: about the last {TTL_DAYS} days' visitors)",
        reference="state.ttl_users_held_half",
    )
    bench("state.ttl_timer_entries", timers_ttl, unit="silence/expiry timer entries left at the end")
    bench(
        "state.ttl_stored_mb",
        mb_ttl,
        unit=f"MB in the state and timer stores at day {DAYS}, TTL {TTL_DAYS} days (what the changelogs restore)",
        reference="state.no_ttl_stored_mb",
    )
    bench("state.no_ttl_stored_mb", mb_all, unit=f"MB stored at day {TTL_DAYS}, no TTL (reference)")
    # Bounded: at most the visitors of the last TTL days (plus a day of timer granularity),
    # and no more at the end than halfway; without the TTL everyone stays.
    assert held_ttl[-1] <= VISITORS * (TTL_DAYS + 1) / DAYS
    assert held_ttl[-1] <= held_ttl[1] * 1.01
    assert held_all[-1] == len(records) * TTL_DAYS // DAYS
