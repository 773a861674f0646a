"""The core benchmark's stages timed one by one, and under cProfile: where each event's µs go.

    python -m tests.benchmarks.profile_core [--many-users] [--cprofile N]

Runs the loop of ``test_core._stages`` (batches of 2,000 records, in-memory store) with a
clock around each stage: decode (records -> events), fold (state read + apply_event),
features (feature_matrix), infer (score_many), decide (decide_many), output (dump_state
and the store write). Prints µs per event for each stage and in all, then, with
``--cprofile N``, the N functions with the most own time over a second, profiled pass.
Not a benchmark (``make bench`` does not run it): the figures in NOTES.md come from it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections.abc import Callable
from typing import Any

from retention_model.events import encode_event
from retention_model.features.derive import feature_matrix
from retention_model.features.state import DAY_MS, dump_state
from retention_model.model.scorer import ChurnModel
from retention_model.pipeline import MemoryStore, PipelineConfig, Record, decide_many, decode_records, fold_events
from retention_model.pipeline.state_cache import StateCache
from streams.settings import BUNDLED_MODEL, Settings
from tests.benchmarks.test_core import BATCH_SIZE, EVENTS, LIMITS, PAYLOADS, _records
from training.simulator import SimConfig, simulate

__all__ = ["STAGES", "stage_seconds"]

STAGES = ("decode", "fold", "features", "infer", "decide", "output")


def stage_seconds(
    records: list[Record], model: ChurnModel, wall_ms: int, cache_users: int = PipelineConfig.state_cache_users
) -> dict[str, float]:
    """Seconds spent in each stage over ``records`` (the loop of ``test_core._stages``)."""
    policy = Settings.load({}).policy
    store = MemoryStore()
    cache = StateCache(cache_users)  # as the pipeline keeps them
    spent = dict.fromkeys(STAGES, 0.0)
    clock: Callable[[], float] = time.perf_counter
    watermark = 0
    for start in range(0, len(records), BATCH_SIZE):
        batch = records[start : start + BATCH_SIZE]
        t0 = clock()
        decoded = decode_records(batch, watermark=watermark, wall_ms=wall_ms, limits=LIMITS)
        watermark = decoded.watermark
        t1 = clock()
        folded = fold_events(decoded.events, store, cache)
        keys = [key for key, _ in folded.changed]
        states = [state for _, state in folded.changed]
        now = [state.last_seen_ms for state in states]
        t2 = clock()
        features = feature_matrix(states, now)
        t3 = clock()
        risks = model.score_many(features)
        t4 = clock()
        user_ids = [k.decode() for k in keys]
        decide_many(user_ids, states, now, features, risks, model_version=model.version, config=policy)
        t5 = clock()
        blobs = [dump_state(state) for state in states]
        store.put_many(list(zip(keys, blobs)))
        cache.keep(zip(keys, blobs, states))
        t6 = clock()
        for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            spent[stage] += seconds
    return spent


def _dataset(many_users: bool) -> tuple[list[Record], int, str]:
    if many_users:
        events: list[Any] = list(simulate(SimConfig(users=20_000, days=4, seed=22)))
        payloads = [encode_event(e) for e in events]
        label = "20,000 users, 4 days"
    else:
        events, payloads, label = EVENTS, PAYLOADS, "2,000 users, 120 days"
    return _records(events, payloads), max(e.ts_ms for e in events) + DAY_MS, label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--many-users", action="store_true", help="20,000 users over 4 days")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="top N functions by own time")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the fastest is shown")
    parser.add_argument(
        "--cache-users",
        type=int,
        default=PipelineConfig.state_cache_users,
        help="decoded states kept between batches (0: decode every state, as before the cache)",
    )
    args = parser.parse_args()
    records, wall_ms, label = _dataset(args.many_users)
    model = ChurnModel(BUNDLED_MODEL, device="cpu").load()
    passes = [stage_seconds(records, model, wall_ms, args.cache_users) for _ in range(args.repeat)]
    best = min(passes, key=lambda spent: sum(spent.values()))
    total = sum(best.values())
    print(f"{len(records):,} events ({label}), fastest of {args.repeat} passes: {len(records) / total:,.0f} events/s")
    for stage in STAGES:
        print(f"  {stage:9s} {1e6 * best[stage] / len(records):6.2f} µs/event  {100 * best[stage] / total:4.1f}%")
    print(f"  {'total':9s} {1e6 * total / len(records):6.2f} µs/event")
    if args.cprofile:
        profile = cProfile.Profile()
        profile.runcall(stage_seconds, records, model, wall_ms)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.cprofile)
        print(out.getvalue())


if __name__ == "__main__":
    main()
