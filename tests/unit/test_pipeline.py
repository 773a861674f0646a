"""The batch pipeline's stages, each alone, and the whole pipeline in process over memory stores."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention_model.events import Event, EventType, encode_event
from retention_model.features.derive import feature_matrix
from retention_model.features.describe import FeatureRow, describe_many
from retention_model.features.silence import next_check_ms
from retention_model.features.state import DAY_MS, HOUR_MS, UserState, apply_event, dump_state, load_state
from retention_model.pipeline import (
    BatchPipeline,
    Candidates,
    DecodeLimits,
    Inference,
    KeyValueStore,
    MemoryStore,
    MemoryStores,
    ModelCall,
    PipelineConfig,
    Record,
    SilenceTimers,
    collect_due,
    decide_many,
    decode_records,
    fold_events,
)
from retention_model.pipeline.outputs import add_records, next_checks, state_blobs
from retention_model.pipeline.records import BatchResult
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import decide, tier_for

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
WALL = T0 + 400 * DAY_MS  # the wall clock, well after every event below
LIMITS = DecodeLimits(lateness_ms=300_000, future_skew_ms=300_000, watermark_jump_ms=DAY_MS)
POLICY = PolicyConfig(holdout_share=0.0, suppression_purchased_within_days=0.0)


def ev(user: str, kind: EventType, ts_ms: int, n: int = 0, **fields: Any) -> Event:
    return Event(f"{user}-{kind.value}-{ts_ms}-{n}", user, kind, ts_ms, **fields)


def rec(event: Event, offset: int, *, key: bytes | None = None, timestamp: int | None = None) -> Record:
    return Record(event.user_id.encode() if key is None else key, encode_event(event), offset, timestamp)


def decode(records: list[Record], watermark: int = 0, wall_ms: int = WALL) -> Any:
    return decode_records(records, watermark=watermark, wall_ms=wall_ms, limits=LIMITS)


# --- decode --------------------------------------------------------------------------


def test_decode_groups_each_users_events_in_offset_order() -> None:
    records = [
        rec(ev("a", EventType.VIEW, T0), 10, timestamp=T0),
        rec(ev("b", EventType.VIEW, T0 + 1), 11, timestamp=T0 + 5),
        rec(ev("a", EventType.SEARCH, T0 + 2), 12),
    ]
    decoded = decode(records)
    assert list(decoded.events) == [b"a", b"b"]
    assert [offset for _, offset in decoded.events[b"a"]] == [10, 12]
    assert decoded.first_seen_ms == {b"a": T0, b"b": T0 + 5}
    assert decoded.rejects == [] and decoded.unknown == 0


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (Record(b"a", b'{"user_id": "a"', 0), "invalid_json"),
        (rec(ev("a", EventType.VIEW, T0), 0, key=b"b"), "key_mismatch"),
        (Record(None, encode_event(ev("a", EventType.VIEW, T0)), 0), "key_mismatch"),
        # Ahead of the record's own timestamp by more than the skew.
        (rec(ev("a", EventType.VIEW, T0 + 301_000), 0, timestamp=T0), "timestamp_in_future"),
        # No record timestamp: compared with the wall clock.
        (rec(ev("a", EventType.VIEW, WALL + 301_000), 0), "timestamp_in_future"),
        # A record timestamp in the future itself is not trusted: the wall clock decides.
        (rec(ev("a", EventType.VIEW, WALL + DAY_MS), 0, timestamp=WALL + 2 * DAY_MS), "timestamp_in_future"),
    ],
)
def test_decode_rejects_with_reasons(record: Record, reason: str) -> None:
    decoded = decode([record])
    assert [r.error.reason for r in decoded.rejects] == [reason]
    assert decoded.rejects[0].record is record
    assert decoded.events == {}


def test_decode_future_rule_allows_the_skew_exactly() -> None:
    decoded = decode([rec(ev("a", EventType.VIEW, T0 + 300_000), 0, timestamp=T0)])
    assert decoded.rejects == [] and list(decoded.events) == [b"a"]


def test_decode_counts_unknown_types_and_attributed_events() -> None:
    unknown = orjson.dumps({"event_id": "x", "user_id": "a", "type": "wishlist_add", "ts": T0})
    attributed = ev("a", EventType.COUPON_REDEEM, T0, intervention_id="i1")
    decoded = decode([Record(b"a", unknown, 0), rec(attributed, 1)])
    assert decoded.unknown == 1 and decoded.rejects == []
    assert decoded.attributed == {EventType.COUPON_REDEEM: 1}


def test_watermark_trails_by_the_lateness_counts_late_events_and_reports_jumps() -> None:
    first = decode([rec(ev("a", EventType.VIEW, T0 + DAY_MS), 0)], watermark=0)
    assert first.watermark == T0 + DAY_MS - LIMITS.lateness_ms
    assert first.jump_ms == 0  # from nothing: not a jump
    late = decode([rec(ev("a", EventType.VIEW, T0), 1)], watermark=first.watermark)
    assert late.late == 1 and late.watermark == first.watermark
    jumped = decode([rec(ev("a", EventType.VIEW, T0 + 3 * DAY_MS), 2)], watermark=first.watermark)
    assert jumped.jump_ms == 2 * DAY_MS


def test_watermark_never_passes_the_wall_clock() -> None:
    limits = DecodeLimits(lateness_ms=0, future_skew_ms=300_000, watermark_jump_ms=DAY_MS)
    # A record stamped at the edge of the skew, an event at the skew beyond it: both allowed...
    record = rec(ev("a", EventType.VIEW, T0 + 600_000), 0, timestamp=T0 + 300_000)
    decoded = decode_records([record], watermark=0, wall_ms=T0, limits=limits)
    assert decoded.rejects == []
    # ...but the watermark stops at the wall clock plus the skew.
    assert decoded.watermark == T0 + 300_000


# --- fold ----------------------------------------------------------------------------


def test_fold_reads_each_state_once_and_skips_replayed_offsets() -> None:
    store = MemoryStore()
    known = UserState()
    apply_event(known, ev("a", EventType.VIEW, T0), 5)
    store.put_many([(b"a", dump_state(known))])
    events = {
        b"a": [(ev("a", EventType.VIEW, T0), 5), (ev("a", EventType.SEARCH, T0 + 1), 6)],
        b"b": [(ev("b", EventType.VIEW, T0), 7)],
        b"c": [],
    }
    folded = fold_events(events, store)
    assert [key for key, _ in folded.changed] == [b"a", b"b"]
    assert folded.new_users == 2  # b and c had no state
    assert folded.outcomes[EventType.VIEW, "duplicate"] == 1
    assert folded.outcomes[EventType.SEARCH, "applied"] == 1
    assert dict(folded.changed)[b"a"].offset == 6
    assert store.get_many([b"b"]) == [None]  # the fold writes nothing


# --- silence timers ------------------------------------------------------------------


def test_timers_file_pop_due_and_rebuild_their_index() -> None:
    store = MemoryStore()
    timers = SilenceTimers(store, 3)
    timers.file({10: [b"a"], 12: [b"b"]})
    timers.file({10: [b"c"]})
    assert store.data[b"3:10"] == b"a\nc"
    assert SilenceTimers(store, 3).hours() == {10, 12}  # rebuilt from the keys
    assert SilenceTimers(store, 4).hours() == set()  # another partition's prefix
    assert timers.pop_due(11 * HOUR_MS - 1) == []  # hour 10 is not over yet
    assert timers.pop_due(11 * HOUR_MS) == [[b"a", b"c"]]
    assert b"3:10" not in store.data and timers.hours() == {12}


def silent_user(key: str, last_seen_ms: int) -> UserState:
    state = UserState()
    apply_event(state, ev(key, EventType.VIEW, last_seen_ms), 0)
    return state


def test_collect_due_skips_stale_entries_excluded_and_repeated_users() -> None:
    states, timers_store = MemoryStore(), MemoryStore()
    timers = SilenceTimers(timers_store, 0)
    quiet, active, busy = silent_user("q", T0), silent_user("a", T0 + 20 * DAY_MS), silent_user("b", T0)
    states.put_many([(b"q", dump_state(quiet)), (b"a", dump_state(active)), (b"b", dump_state(busy))])
    due_hour = next_check_ms(quiet) // HOUR_MS  # 7 days after T0
    timers.file({due_hour: [b"q", b"a", b"b", b"gone"], due_hour + 1: [b"q"]})
    watermark = next_check_ms(quiet) + 2 * HOUR_MS
    collected = collect_due(timers, states, watermark, exclude={b"b"})
    assert [(key, due) for key, _, due in collected] == [(b"q", next_check_ms(quiet))]
    assert timers.hours() == set()


# --- decide and outputs -------------------------------------------------------------


def test_decide_records_the_score_and_outputs_are_complete() -> None:
    buyer = UserState()
    apply_event(buyer, ev("u1", EventType.PURCHASE, T0, price=30.0), 0)
    candidates = Candidates()
    candidates.add(b"u1", buyer, T0, 2, "event", T0)
    features = feature_matrix(candidates.states, candidates.now_ms)
    scored = decide_many(["u1"], candidates.states, [T0], features, np.array([0.9]), model_version="m1", config=POLICY)
    assert buyer.last_risk == 0.9 and buyer.last_scored_ms == T0
    result = BatchResult()
    inference = Inference(np.array([0.9]), None, np.array([0.2]))
    add_records(result, candidates, scored, inference, model_version="m1", shadow_version="m0", config=POLICY)
    score = orjson.loads(result.scores[0][1])
    assert score["trigger"] == "event" and score["tier"] == "high"
    assert score["shadow"] == {"model_version": "m0", "risk": 0.2, "tier": "low"}
    assert {orjson.loads(v)["kind"] for _, v in result.decisions} == {"coupon", "recommendation"}
    assert [k for k, records in result.interventions.items() if records] == ["coupon", "recommendation"]
    assert result.counts.shadow_agreement == {"no": 1} and result.counts.seen_ms == [T0]
    assert load_state(state_blobs(candidates)[2][0][1]) == buyer
    assert next_checks(candidates) == {2: {next_check_ms(buyer) // HOUR_MS: [b"u1"]}}


@settings(max_examples=60)
@given(
    risks=st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=12),
    thresholds=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(sorted),
    coupon_tiers=st.sets(st.sampled_from(["low", "medium", "high"])),
    recommendation_tiers=st.sets(st.sampled_from(["low", "medium", "high"])),
)
def test_a_batch_is_decided_as_each_user_alone(
    risks: list[float], thresholds: list[float], coupon_tiers: set[str], recommendation_tiers: set[str]
) -> None:
    """decide_many (tiers over the batch in one pass, the policy skipped for tiers that want
    nothing) gives each user the tier and decisions tier_for and decide give them one at a time,
    for float32 risks at any thresholds (a float32 comparison would round a threshold)."""
    config = replace(
        POLICY,
        risk_medium=thresholds[0],
        risk_high=thresholds[1],
        coupon_tiers=tuple(sorted(coupon_tiers)),
        recommendation_tiers=tuple(sorted(recommendation_tiers)),
    )
    users = [f"u{i}" for i in range(len(risks))]

    def states() -> list[UserState]:
        made = []
        for i, user in enumerate(users):
            state = UserState()
            apply_event(state, ev(user, EventType.PURCHASE if i % 2 else EventType.VIEW, T0, price=20.0), 0)
            made.append(state)
        return made

    batch, alone = states(), states()
    now = [T0] * len(users)
    features = feature_matrix(batch, now)
    risk_array = np.array(risks, dtype=np.float32)
    scored = decide_many(users, batch, now, features, risk_array, model_version="m1", config=config)
    profiles, reasons = describe_many(features, alone)
    for i, user in enumerate(users):
        risk = float(risk_array[i])
        assert scored[i].tier == tier_for(risk, config)
        expected = decide(
            user_id=user,
            risk=risk,
            state=alone[i],
            now_ms=T0,
            model_version="m1",
            reasons=reasons[i],
            profile=profiles[i],
            config=config,
            features=FeatureRow(features[i]),
        )
        assert scored[i].decisions == expected
    assert [dump_state(s) for s in batch] == [dump_state(replace_score(s, float(r))) for s, r in zip(alone, risk_array)]


def replace_score(state: UserState, risk: float) -> UserState:
    state.last_risk, state.last_scored_ms = risk, T0
    return state


# --- the store contract --------------------------------------------------------------


@pytest.fixture(params=["memory"])
def store_factory(request: pytest.FixtureRequest) -> Any:
    return MemoryStore


def test_store_contract(store_factory: Any) -> None:
    store: KeyValueStore = store_factory()
    assert store.get_many([b"a", b"b"]) == [None, None]
    store.put_many([(b"a", b"1"), (b"b", b"2")])
    assert store.get_many([b"b", b"a", b"c"]) == [b"2", b"1", None]
    store.put_many([(b"a", None), (b"missing", None), (b"b", b"3")])
    assert store.get_many([b"a", b"b"]) == [None, b"3"]
    assert sorted(store.all_keys()) == [b"b"]


# --- the whole pipeline --------------------------------------------------------------


def constant_model(risk: float) -> ModelCall:
    async def infer(features: np.ndarray) -> Inference:
        return Inference(np.full(len(features), risk))

    return ModelCall(infer, "m-test")


def pipeline_over(stores: MemoryStores, policy: PolicyConfig = POLICY, wall_ms: int = WALL) -> BatchPipeline:
    config = PipelineConfig(policy, partitions=2, limits=LIMITS, replay=True)
    return BatchPipeline(config, stores, clock=lambda: wall_ms)


def run(pipeline: BatchPipeline, batch: dict[int, list[Record]], risk: float = 0.9) -> Any:
    return asyncio.run(pipeline.process(batch, constant_model(risk)))


def test_silent_users_are_rescored_in_the_batch_that_passes_their_timer() -> None:
    stores = MemoryStores()
    pipeline = pipeline_over(stores)
    first = run(pipeline, {0: [rec(ev("q", EventType.VIEW, T0), 0), rec(ev("a", EventType.VIEW, T0), 1)]})
    assert [key for key, _ in first.scores] == [b"q", b"a"]
    assert first.counts.silence_rescored == 0
    # "a" comes back 20 days later: its own event scores it; "q" stayed silent past 7 and 14 days.
    second = run(pipeline, {0: [rec(ev("a", EventType.VIEW, T0 + 20 * DAY_MS), 2)]})
    triggers = [(key, orjson.loads(value)["trigger"]) for key, value in second.scores]
    assert triggers[0] == (b"a", "event")
    assert triggers.count((b"q", "silence")) == 2  # the 7-day and the 14-day marks, round after round
    assert second.counts.silence_rescored == 2
    assert second.counts.scored_per_call == [2, 1]  # "a" with "q" at 7 days, then "q" at 14 days
    assert load_state(stores(0).states.get_many([b"q"])[0]).last_scored_ms == T0 + 14 * DAY_MS


def test_a_replayed_batch_changes_nothing() -> None:
    stores = MemoryStores()
    pipeline = pipeline_over(stores)
    batch = {1: [rec(ev("a", EventType.VIEW, T0), 0), rec(ev("a", EventType.SEARCH, T0 + 1), 1)]}
    run(pipeline, batch)
    before = dict(stores(1).states.data)  # type: ignore[attr-defined]
    again = run(pipeline, batch)
    assert again.scores == [] and again.counts.outcomes[EventType.VIEW, "duplicate"] == 1
    assert stores(1).states.data == before  # type: ignore[attr-defined]


def test_budget_slices_are_written_to_their_partition_and_read_back_after_forget() -> None:
    stores = MemoryStores()
    policy = PolicyConfig(
        holdout_share=0.0, suppression_purchased_within_days=0.0, budget_total_count=2, recommendation_tiers=()
    )
    pipeline = pipeline_over(stores, policy)
    buyers = [rec(ev(f"u{i}", EventType.PURCHASE, T0, price=10.0), i) for i in range(3)]
    result = run(pipeline, {0: buyers})
    # Two partitions: this one's slice of a total of 2 coupons is 1.
    assert result.counts.decided[("coupon", "sent", "tier")] == 1
    assert result.counts.decided[("coupon", "suppressed", "budget")] == 2
    assert orjson.loads(stores(0).budgets.get_many([b"0:total"])[0]) == [policy.coupon_value, 1]
    pipeline.forget()
    later = run(pipeline, {0: [rec(ev("u9", EventType.PURCHASE, T0, price=10.0), 3)]})
    assert later.counts.decided[("coupon", "suppressed", "budget")] == 1  # the spend came back from the store
    assert result.counts.budget_now_ms == T0


def test_rejects_and_counts_come_back_with_the_result() -> None:
    pipeline = pipeline_over(MemoryStores())
    result = run(pipeline, {0: [Record(b"a", b"{", 0), rec(ev("a", EventType.VIEW, T0), 1)]})
    assert [r.error.reason for r in result.rejects] == ["invalid_json"]
    assert result.counts.events_in == 2 and result.counts.new_users == 1
    assert result.counts.outcomes == {(EventType.VIEW, "applied"): 1}
