"""A whole simulated log through the batch pipeline in process, against the offline replay.

The worker and training must agree on every user's state: here the stream's own
path (decode, fold, silence rounds, policy, state blobs through a store) runs over
in-memory stores, with a stand-in model, and every user's final state must equal
what :func:`replay_states` makes of the same events.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from retention_model.events import Event, EventType, encode_event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.derive import feature_matrix
from retention_model.features.offline import replay_states
from retention_model.features.state import DAY_MS, UserState, load_state
from retention_model.pipeline import (
    BatchPipeline,
    BatchResult,
    DecodeLimits,
    Inference,
    MemoryStores,
    ModelCall,
    PipelineConfig,
    Record,
)
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import iso_ms
from training.simulator import SimConfig, encode_stream, simulate

PARTITIONS = 4
LIMITS = DecodeLimits(lateness_ms=300_000, future_skew_ms=300_000, watermark_jump_ms=DAY_MS)
#: What the events alone decide in a state (the rest is the policy's memory and the last score).
EVENT_FIELDS = (
    "anchor_ms",
    "first_seen_ms",
    "last_seen_ms",
    "first_purchase_ms",
    "last_purchase_ms",
    "totals",
    "decayed",
    "recent_purchases_ms",
    "categories",
    "category_bits",
    "recent_items",
    "recent_event_ids",
    "recent_order_ids",
    "opted_out",
)
_RECENCY = FEATURE_NAMES.index("recency_days")


def recency_model() -> ModelCall:
    """A stand-in for the network: risk grows with days since the last event (every tier occurs)."""

    async def infer(features: np.ndarray) -> Inference:
        risks = 1.0 - np.exp(-features[:, _RECENCY] / 20.0)
        return Inference(risks, None, risks / 2)

    return ModelCall(infer, "recency-test", shadow_version="half-recency")


def partition_of(key: bytes) -> int:
    return zlib.crc32(key) % PARTITIONS


def run_log(
    records: Iterable[tuple[bytes, bytes, int]], batch_size: int, wall_ms: int, stores: MemoryStores
) -> list[BatchResult]:
    """(key, value, record timestamp) in log order, cut into batches, each split by partition."""
    pipeline = BatchPipeline(
        PipelineConfig(PolicyConfig(), partitions=PARTITIONS, limits=LIMITS, replay=True),
        stores,
        clock=lambda: wall_ms,
    )
    model = recency_model()
    offsets = Counter[int]()
    results: list[BatchResult] = []
    batch: dict[int, list[Record]] = {}
    size = 0

    def flush() -> None:
        results.append(asyncio.run(pipeline.process(batch, model)))

    for key, value, timestamp in records:
        partition = partition_of(key)
        batch.setdefault(partition, []).append(Record(key, value, offsets[partition], timestamp))
        offsets[partition] += 1
        size += 1
        if size == batch_size:
            flush()
            batch, size = {}, 0
    if batch:
        flush()
    return results


def event_fields(state: UserState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in EVENT_FIELDS}


def test_a_simulated_log_gives_every_user_the_offline_replays_state() -> None:
    events = list(simulate(SimConfig(users=300, days=120, seed=5)))
    encoded = list(encode_stream(iter(events), seed=3, malformed_rate=0.01, unknown_rate=0.01))
    kinds = Counter(kind for _, _, kind in encoded)
    assert kinds["malformed"] and kinds["unknown"]
    wall_ms = events[-1].ts_ms + DAY_MS
    stores = MemoryStores()
    log = [(key, value, event.ts_ms) for (key, value, _), event in zip(encoded, events)]
    results = run_log(log, 997, wall_ms, stores)

    valid = [event for event, (_, _, kind) in zip(events, encoded) if kind == "valid"]
    offline = replay_states(valid)
    streamed = {key.decode(): load_state(blob) for key, blob in stores.state_blobs().items()}
    assert set(streamed) == set(offline)
    mismatched = [u for u, state in offline.items() if event_fields(streamed[u]) != event_fields(state)]
    assert not mismatched, f"{len(mismatched)} users differ from the offline replay, e.g. {mismatched[:3]}"
    users = sorted(offline)
    at = [wall_ms] * len(users)
    np.testing.assert_array_equal(
        feature_matrix([streamed[u] for u in users], at), feature_matrix([offline[u] for u in users], at)
    )

    # Every record is accounted for: applied or a duplicate, dead-lettered, or an unknown type.
    outcomes = Counter[str]()
    for result in results:
        for (_, outcome), n in result.counts.outcomes.items():
            outcomes[outcome] += n
    assert sum(len(r.rejects) for r in results) == kinds["malformed"]
    assert sum(r.counts.unknown for r in results) == kinds["unknown"]
    assert sum(outcomes.values()) == kinds["valid"]
    assert sum(r.counts.new_users for r in results) == len(offline)

    # Scores for events and for silences, decisions and interventions, complete on the wire.
    scores = [orjson.loads(v) for r in results for _, v in r.scores]
    triggers = Counter(s["trigger"] for s in scores)
    assert triggers["event"] and triggers["silence"]
    assert all(s["shadow"]["model_version"] == "half-recency" for s in scores)
    assert {s["tier"] for s in scores} == {"low", "medium", "high"}
    decisions = [orjson.loads(v) for r in results for _, v in r.decisions]
    assert {d["action"] for d in decisions} >= {"sent", "held_out", "suppressed"}
    assert sum(len(v) for r in results for v in r.interventions.values()) == sum(
        d["action"] == "sent" for d in decisions
    )
    # Each user's state remembers the last score published for them.
    last_scored: dict[str, str] = {}
    for score in scores:
        last_scored[score["user_id"]] = score["event_time"]
    assert all(iso_ms(streamed[u].last_scored_ms) == t for u, t in last_scored.items())


T0 = 1_735_689_600_000
_KINDS = (
    EventType.SESSION_START,
    EventType.VIEW,
    EventType.ADD_TO_CART,
    EventType.PURCHASE,
    EventType.REVIEW,
    EventType.OPT_OUT,
    EventType.OPT_IN,
)


@st.composite
def logs(draw: st.DrawFn) -> list[Event]:
    """Short logs of a few users, times out of order, event and order ids that repeat (retries)."""
    out = []
    for _ in range(draw(st.integers(1, 60))):
        user = draw(st.sampled_from(["a", "b", "c", "d"]))
        kind = draw(st.sampled_from(_KINDS))
        ts = T0 + draw(st.integers(0, 60 * DAY_MS))
        fields: dict[str, Any] = {"category": draw(st.sampled_from([None, "books", "shoes"]))}
        if kind in (EventType.PURCHASE, EventType.ADD_TO_CART):
            fields["price"] = float(draw(st.integers(1, 200)))
        if kind is EventType.PURCHASE:
            fields["order_id"] = f"o{draw(st.integers(0, 8))}"
        if kind is EventType.REVIEW:
            fields["rating"] = float(draw(st.integers(1, 5)))
        out.append(Event(f"e{draw(st.integers(0, 40))}", user, kind, ts, **fields))
    return out


@hypothesis_settings(max_examples=60)
@given(events=logs(), batch_size=st.integers(1, 25), replayed=st.integers(0, 30))
def test_batches_and_replayed_prefixes_fold_like_one_event_at_a_time(
    events: list[Event], batch_size: int, replayed: int
) -> None:
    """However a log is cut into batches, and after a crash re-read from an earlier offset,
    every user's state is the one-event-at-a-time replay's."""
    log = [(e.user_id.encode(), encode_event(e), e.ts_ms) for e in events]
    wall_ms = T0 + 61 * DAY_MS
    stores = MemoryStores()
    # A first worker gets through a prefix, then the log is read again from the start
    # (its commits never landed): the re-read records keep their offsets.
    crashed_at = min(replayed, len(log))
    run_log(log[:crashed_at], batch_size, wall_ms, stores)
    run_log(log, batch_size, wall_ms, stores)
    offline = replay_states(events)
    streamed = {key.decode(): load_state(blob) for key, blob in stores.state_blobs().items()}
    assert {u: event_fields(s) for u, s in streamed.items()} == {u: event_fields(s) for u, s in offline.items()}
