"""Erasure requests and state expiry in the batch pipeline, in process over memory stores."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention_model.events import Event, EventType, encode_event
from retention_model.features.state import DAY_MS, HOUR_MS, load_state
from retention_model.pipeline import (
    BatchPipeline,
    DecodeLimits,
    Inference,
    MemoryStore,
    MemoryStores,
    ModelCall,
    PipelineConfig,
    Record,
    decode_records,
)
from retention_model.pipeline.erase import erase_request, forwarded_request, parse_erasure
from retention_model.pipeline.records import Erasure
from retention_model.policy.config import PolicyConfig

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
WALL = T0 + 900 * DAY_MS  # the wall clock, after every event below
LIMITS = DecodeLimits(lateness_ms=300_000, future_skew_ms=300_000, watermark_jump_ms=3650 * DAY_MS)
POLICY = PolicyConfig(holdout_share=0.0, suppression_purchased_within_days=0.0)


def ev(user: str, kind: EventType, ts_ms: int, **fields: Any) -> Record:
    return Event(f"{user}-{kind.value}-{ts_ms}", user, kind, ts_ms, **fields)  # type: ignore[return-value]


def rec(event: Any, offset: int) -> Record:
    return Record(event.user_id.encode(), encode_event(event), offset, None)


def erase(user: str, offset: int, request_id: str = "req-1", key: bytes | None = None) -> Record:
    value = erase_request(user, request_id=request_id, requested_ms=T0 + 1)
    return Record(user.encode() if key is None else key, value, offset, None)


def pipeline_over(stores: MemoryStores, ttl_days: float | None = None) -> BatchPipeline:
    ttl_ms = None if ttl_days is None else int(ttl_days * DAY_MS)
    config = PipelineConfig(POLICY, partitions=2, limits=LIMITS, replay=True, state_ttl_ms=ttl_ms)
    return BatchPipeline(config, stores, clock=lambda: WALL)


def run(pipeline: BatchPipeline, batch: dict[int, list[Record]]) -> Any:
    async def infer(features: np.ndarray) -> Inference:
        return Inference(np.full(len(features), 0.9))

    return asyncio.run(pipeline.process(batch, ModelCall(infer, "m-test")))


def held(stores: MemoryStores, partition: int, user: bytes) -> tuple[bytes | None, int]:
    """A user's stored state, and how many timer-bucket entries name them."""
    timers = stores(partition).timers
    assert isinstance(timers, MemoryStore)
    entries = sum(raw.split(b"\n").count(user) for raw in timers.data.values())
    return stores(partition).states.get_many([user])[0], entries


def test_decode_drops_events_before_a_request_and_keeps_those_after() -> None:
    records = [
        rec(ev("a", EventType.VIEW, T0), 0),
        rec(ev("b", EventType.VIEW, T0), 1),
        erase("a", 2, "req-7"),
        rec(ev("a", EventType.SEARCH, T0 + 5), 3),
        erase("c", 4, key=b"not-c"),  # keyed by someone else: refused
    ]
    decoded = decode_records(records, watermark=0, wall_ms=WALL, limits=LIMITS)
    assert [(e.key, e.offset, e.request_id, e.requested_ms) for e in decoded.erasures] == [(b"a", 2, "req-7", T0 + 1)]
    assert [event.type for event, _ in decoded.events[b"a"]] == [EventType.SEARCH]
    assert list(decoded.events) == [b"b", b"a"]
    assert [r.error.reason for r in decoded.rejects] == ["key_mismatch"]
    assert decoded.unknown == 0


def test_an_erased_user_loses_state_and_timers_and_a_later_event_starts_afresh() -> None:
    stores = MemoryStores()
    pipeline = pipeline_over(stores)
    purchase = ev("a", EventType.PURCHASE, T0, price=50.0, order_id="o1")
    run(pipeline, {0: [rec(purchase, 0), rec(ev("b", EventType.VIEW, T0), 1)]})
    # a's silence marks pass (7 and 14 days): it is filed under later hours too.
    run(pipeline, {0: [rec(ev("b", EventType.VIEW, T0 + 15 * DAY_MS), 2)]})
    state_before, timers_before = held(stores, 0, b"a")
    assert state_before is not None and timers_before >= 1
    b_before = held(stores, 0, b"b")

    result = run(pipeline, {0: [erase("a", 3, "req-9")]})

    assert held(stores, 0, b"a") == (None, 0)
    assert held(stores, 0, b"b") == b_before  # others untouched
    assert result.counts.erased == 1 and result.scores == []
    ((key, value),) = result.erasures
    confirmation = orjson.loads(value)
    assert key == b"a"
    assert confirmation == {
        "user_id": "a",
        "request_id": "req-9",
        "requested_at": T0 + 1,
        "erased_at": WALL,
        "source": {"partition": 0, "offset": 3},
        "removed": {"state_bytes": len(state_before), "silence_timer_entries": timers_before},
    }
    # The same user comes back: a new, empty history (no purchase, first seen now).
    later = T0 + 20 * DAY_MS
    again = run(pipeline, {0: [rec(ev("a", EventType.VIEW, later), 4)]})
    assert again.counts.new_users == 1
    fresh = load_state(held(stores, 0, b"a")[0])  # type: ignore[arg-type]
    assert fresh.first_seen_ms == later and fresh.totals[5] == 0 and fresh.last_coupon_ms == 0


def test_a_request_in_the_middle_of_a_batch_erases_what_came_before_it() -> None:
    stores = MemoryStores()
    pipeline = pipeline_over(stores)
    run(pipeline, {1: [rec(ev("a", EventType.PURCHASE, T0, price=9.0, order_id="o1"), 0)]})
    result = run(
        pipeline,
        {
            1: [
                rec(ev("a", EventType.PURCHASE, T0 + 10, price=5.0, order_id="o2"), 1),
                erase("a", 2),
                rec(ev("a", EventType.VIEW, T0 + 20), 3),
            ]
        },
    )
    state = load_state(held(stores, 1, b"a")[0])  # type: ignore[arg-type]
    assert state.totals[5] == 0 and state.first_seen_ms == T0 + 20 and state.offset == 3
    assert [orjson.loads(v)["trigger"] for _, v in result.scores] == ["event"]


def test_erasing_a_user_the_worker_never_saw_is_still_confirmed() -> None:
    result = run(pipeline_over(MemoryStores()), {0: [erase("ghost", 0)]})
    ((key, value),) = result.erasures
    assert key == b"ghost"
    assert orjson.loads(value)["removed"] == {"state_bytes": 0, "silence_timer_entries": 0}


def test_users_silent_past_the_ttl_are_dropped_in_the_silence_round() -> None:
    stores = MemoryStores()
    pipeline = pipeline_over(stores, ttl_days=120)
    run(pipeline, {0: [rec(ev("once", EventType.VIEW, T0), 0), rec(ev("keeps", EventType.VIEW, T0), 1)]})
    # After the last silence mark (90 days) only the expiry timer is left for "once".
    run(pipeline, {0: [rec(ev("keeps", EventType.VIEW, T0 + 100 * DAY_MS), 2)]})
    assert held(stores, 0, b"once")[0] is not None
    timers = stores(0).timers
    assert isinstance(timers, MemoryStore)
    expiry_hour = (T0 + 120 * DAY_MS) // HOUR_MS
    assert b"once" in timers.data[f"0:{expiry_hour}".encode()].split(b"\n")

    just_before = run(pipeline, {0: [rec(ev("keeps", EventType.VIEW, T0 + 120 * DAY_MS - HOUR_MS), 3)]})
    assert just_before.counts.expired == 0 and held(stores, 0, b"once")[0] is not None
    passed = run(pipeline, {0: [rec(ev("keeps", EventType.VIEW, T0 + 121 * DAY_MS), 4)]})
    assert passed.counts.expired == 1
    assert held(stores, 0, b"once") == (None, 0)
    assert held(stores, 0, b"keeps")[0] is not None  # active: kept
    # A returning user starts a new history.
    back = run(pipeline, {0: [rec(ev("once", EventType.VIEW, T0 + 130 * DAY_MS), 5)]})
    assert back.counts.new_users == 1


def test_a_ttl_shorter_than_the_silence_marks_expires_before_them() -> None:
    stores = MemoryStores()
    pipeline = pipeline_over(stores, ttl_days=10)
    run(pipeline, {0: [rec(ev("once", EventType.VIEW, T0), 0)]})
    week = run(pipeline, {0: [rec(ev("other", EventType.VIEW, T0 + 8 * DAY_MS), 1)]})
    assert [orjson.loads(v)["trigger"] for k, v in week.scores if k == b"once"] == ["silence"]  # the 7-day mark
    result = run(pipeline, {0: [rec(ev("other", EventType.VIEW, T0 + 30 * DAY_MS), 2)]})
    # Dropped at 10 days, never scored at 14 or 30.
    assert [k for k, _ in result.scores] == [b"other"]
    assert result.counts.expired == 1 and held(stores, 0, b"once") == (None, 0)


def test_without_a_ttl_nobody_expires() -> None:
    stores = MemoryStores()
    pipeline = pipeline_over(stores)
    run(pipeline, {0: [rec(ev("once", EventType.VIEW, T0), 0)]})
    result = run(pipeline, {0: [rec(ev("other", EventType.VIEW, T0 + 800 * DAY_MS), 1)]})
    assert result.counts.expired == 0 and held(stores, 0, b"once")[0] is not None


@given(
    user=st.text(min_size=1, max_size=64),
    request_id=st.one_of(st.none(), st.text(max_size=64)),
    ts=st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
    fallback=st.integers(min_value=0, max_value=2**62),
)
def test_a_forwarded_request_is_keyed_by_its_user_and_decodes_as_an_erasure(
    user: str, request_id: str | None, ts: int | None, fallback: int
) -> None:
    body: dict[str, Any] = {"user_id": user}
    if request_id is not None:
        body["request_id"] = request_id
    if ts is not None:
        body["ts"] = ts
    forwarded = forwarded_request(orjson.dumps(body), fallback)
    assert not isinstance(forwarded, str)
    key, value = forwarded
    assert key == user.encode()
    erasure = parse_erasure(Record(key, value, 7, None), user)
    assert erasure == Erasure(key, 7, request_id, ts if ts is not None else fallback)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (None, "not JSON"),
        (b'{"request_id": "r"}', "user_id missing"),
        (b'{"user_id": ""}', "user_id missing"),
        (b'{"user_id": 42}', "user_id missing"),
        (b'{"user_id": "u", "type": "purchase"}', "type is not 'erase'"),
    ],
)
def test_an_unreadable_request_is_refused_with_the_reason(value: bytes | None, why: str) -> None:
    refused = forwarded_request(value, 0)
    assert isinstance(refused, str) and refused.startswith(why)
