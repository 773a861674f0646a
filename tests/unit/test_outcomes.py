"""The outcome join: sampled users scored as of each cutoff, resolved from the same events a horizon later."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest

from retention_model.events import Event, EventType, encode_event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.state import DAY_MS, UserState, apply_event
from retention_model.monitoring.quality import quality_report
from retention_model.pipeline import (
    BatchPipeline,
    DecodeLimits,
    Inference,
    MemoryStores,
    ModelCall,
    PipelineConfig,
    Record,
)
from retention_model.pipeline.outcomes import (
    Outcome,
    OutcomeSample,
    PendingScore,
    cutoff_after,
    first_purchase_within,
    user_rank,
)
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import in_holdout

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
#: The first cutoff after T0: cutoffs are multiples of the horizon since the epoch (2025-01-12).
C1 = cutoff_after(T0, 30 * DAY_MS)
HORIZON = 30 * DAY_MS
LIMITS = DecodeLimits(lateness_ms=300_000, future_skew_ms=300_000, watermark_jump_ms=400 * DAY_MS)


def ev(user: str, kind: EventType, ts_ms: int, **fields: Any) -> Event:
    return Event(f"{user}-{kind.value}-{ts_ms}", user, kind, ts_ms, **fields)


def pending(user: str, scored_ms: int = T0, risk: float = 0.5) -> PendingScore:
    return PendingScore(user, scored_ms, HORIZON, risk, "medium", "v1", False, "event")


def purchases(*times: int) -> list[tuple[Event, int]]:
    return [(ev("u", EventType.PURCHASE, t, price=10.0), i) for i, t in enumerate(times)]


@pytest.mark.parametrize(
    ("bought", "expected"),
    [
        ((), None),
        ((T0,), None),  # at the score's own time: before it, not within the horizon
        ((T0 + DAY_MS,), T0 + DAY_MS),
        ((T0 + HORIZON,), T0 + HORIZON),  # the horizon's last millisecond counts
        ((T0 + HORIZON + 1,), None),
        ((T0 - DAY_MS, T0 + 3 * DAY_MS, T0 + 40 * DAY_MS), T0 + 3 * DAY_MS),  # the first inside, not the last
    ],
)
def test_a_purchase_counts_only_after_the_score_and_within_the_horizon(
    bought: tuple[int, ...], expected: int | None
) -> None:
    assert first_purchase_within(purchases(*bought), T0, T0 + HORIZON) == expected


def state_of(user: str, *times: int) -> UserState:
    state = UserState()
    for i, t in enumerate(times):
        apply_event(state, ev(user, EventType.VIEW, t), i)
    return state


def test_the_cutoffs_are_multiples_of_the_horizon_since_the_epoch() -> None:
    assert C1 == 1_736_640_000_000 and C1 % HORIZON == 0  # 2025-01-12T00:00:00Z, 11 days after T0
    assert cutoff_after(C1, HORIZON) == C1 + HORIZON  # strictly after


def test_the_sample_keeps_the_best_ranked_users_whatever_the_order_they_come_in() -> None:
    keys = [f"user-{i}".encode() for i in range(50)]
    best = sorted(keys, key=user_rank)[:5]
    for order in (keys, keys[::-1]):
        sample = OutcomeSample(capacity=5)
        for key in order:
            sample.enroll(key, key.decode(), T0, HORIZON)
        assert sorted(sample.members) == sorted(best)
    assert not sample.enroll(best[0], "again", T0, HORIZON)  # a member stays as they joined
    # A better-ranked user coming later takes the worst member's place, and their pending scores go.
    sample = OutcomeSample(capacity=5)
    for key in keys:
        if key != best[0]:
            sample.enroll(key, key.decode(), T0, HORIZON)
    sixth = sorted(keys, key=user_rank)[5]
    sample.add(sixth, pending(sixth.decode(), C1))
    assert sample.enroll(best[0], best[0].decode(), T0, HORIZON)
    assert sorted(sample.members) == sorted(best) and sixth not in sample.pending
    assert sample.resolve(C1 + 2 * HORIZON) == []


def test_a_member_joins_for_the_next_cutoff_and_is_swept_at_each_one_the_watermark_passes() -> None:
    sample = OutcomeSample(capacity=10)
    sample.enroll(b"a", "a", T0, HORIZON)
    sample.enroll(b"gone", "gone", T0, HORIZON)
    assert sample.due_members(C1 - 1) == []
    assert sorted(sample.due_members(C1 + HORIZON)) == [b"a", b"gone"]
    stored = {b"a": state_of("a", T0), b"gone": state_of("gone", T0 - 200 * DAY_MS)}
    snaps = sample.sweep(stored, C1 + HORIZON, HORIZON, max_silence_ms=120 * DAY_MS)
    assert [(s.key, s.cutoff_ms) for s in snaps] == [(b"a", C1), (b"a", C1 + HORIZON)]
    assert b"gone" not in sample.members and sample.take_left_silent() == 1  # silent past the limit: as training
    assert sample.members[b"a"].next_cutoff_ms == C1 + 2 * HORIZON and sample.due_members(C1 + HORIZON) == []


def test_events_past_a_cutoff_snapshot_the_member_as_of_the_cutoff_first() -> None:
    sample = OutcomeSample(capacity=10)
    sample.enroll(b"a", "a", T0, HORIZON)
    batch = {
        b"a": [(ev("a", EventType.PURCHASE, C1 + 5 * DAY_MS, price=9.0), 7), (ev("a", EventType.VIEW, C1 - DAY_MS), 8)]
    }
    assert sample.passing(batch) == [b"a"] and sample.passing({b"a": batch[b"a"][1:]}) == []
    stored = state_of("a", T0)
    (snap,) = sample.crossing(batch, {b"a": stored}, HORIZON, 120 * DAY_MS)
    # As of the cutoff: the view a day before it counts (even after a later event in offset order), the purchase not.
    assert snap.cutoff_ms == C1 and snap.state.last_seen_ms == C1 - DAY_MS and snap.state.last_purchase_ms == 0
    assert snap.purchased_ms == C1 + 5 * DAY_MS  # the batch's purchase inside the horizon
    assert sample.members[b"a"].next_cutoff_ms == C1 + HORIZON


def test_scores_resolve_when_the_watermark_reaches_their_horizon_in_due_order() -> None:
    sample = OutcomeSample(capacity=10)
    for key in (b"early", b"late"):
        sample.enroll(key, key.decode(), T0, HORIZON)
    sample.add(b"late", pending("late", C1 + HORIZON))
    sample.add(b"early", pending("early", C1))
    sample.add(b"early", pending("early", C1 + HORIZON))  # a member has a score pending per cutoff
    sample.observe({b"early": purchases(C1 + 2 * DAY_MS), b"late": [(ev("late", EventType.VIEW, C1 + 40 * DAY_MS), 0)]})
    assert sample.resolve(C1 + HORIZON - 1) == []  # one millisecond short
    assert [(o.key, o.churned) for o in sample.resolve(C1 + HORIZON)] == [(b"early", False)]
    assert len(sample) == 2
    resolved = sample.resolve(C1 + 2 * HORIZON)
    assert [(o.key, o.score.scored_ms, o.churned) for o in resolved] == [
        (b"early", C1 + HORIZON, True),
        (b"late", C1 + HORIZON, True),
    ]
    assert len(sample) == 0


# --- through the pipeline ------------------------------------------------------------

_RECENCY = FEATURE_NAMES.index("recency_days")


async def infer(features: np.ndarray) -> Inference:
    """Risk = days since the last event / 100: a snapshot's risk says when it was taken."""
    return Inference(np.round(features[:, _RECENCY] / 100.0, 6))


def run(pipeline: BatchPipeline, events: list[Event], offset: int) -> Any:
    records = [Record(e.user_id.encode(), encode_event(e), offset + i, e.ts_ms) for i, e in enumerate(events)]
    return asyncio.run(pipeline.process({0: records}, ModelCall(infer, "v-test", horizon_ms=HORIZON)))


def test_the_pipeline_publishes_each_members_cutoff_score_with_what_followed_within_the_horizon() -> None:
    policy = PolicyConfig(holdout_share=0.5, suppression_purchased_within_days=0.0)
    config = PipelineConfig(policy, 1, LIMITS, replay=True, outcome_sample=100)
    pipeline = BatchPipeline(config, MemoryStores(), lambda: T0 + 400 * DAY_MS)
    first = run(pipeline, [ev("stays", EventType.VIEW, T0), ev("goes", EventType.VIEW, T0)], 0)
    assert first.outcomes == [] and first.counts.outcome_users == 2 and first.counts.outcomes_pending == 0
    # Both are snapshotted at C1 (day 11): "stays" before its purchase on day 20 is folded, "goes" once
    # the watermark passes C1; "erased" is snapshotted too, then erased before its horizon closes.
    second = run(
        pipeline,
        [ev("erased", EventType.VIEW, T0 + DAY_MS), ev("stays", EventType.PURCHASE, T0 + 20 * DAY_MS, price=20.0)],
        2,
    )
    assert second.outcomes == [] and second.counts.outcomes_pending == 3
    erase = Record(b"erased", orjson.dumps({"type": "erase", "user_id": "erased", "ts": T0 + 21 * DAY_MS}), 4, T0)
    asyncio.run(pipeline.process({0: [erase]}, ModelCall(infer, "v-test", horizon_ms=HORIZON)))
    # Day 42 moves the watermark past C1 + 30 days: both C1 scores close; C1 + 30 days is swept.
    third = run(pipeline, [ev("other", EventType.VIEW, T0 + 42 * DAY_MS)], 5)
    records = {key.decode(): orjson.loads(value) for key, value in third.outcomes}
    assert set(records) == {"stays", "goes"}  # the erased user's score went with them
    stays, goes = records["stays"], records["goes"]
    assert stays["churned"] is False and stays["purchased_at"] == "2025-01-21T00:00:00.000Z"
    assert goes["churned"] is True and goes["purchased_at"] is None
    assert stays["risk"] == goes["risk"] == 0.11  # both as of C1: 11 days after their view on day 0
    assert goes["schema"] == "retention.outcome/v1" and goes["model_version"] == "v-test"
    assert goes["tier"] == "low" and goes["horizon_days"] == 30 and goes["trigger"] == "cutoff"
    assert goes["scored_at"] == "2025-01-12T00:00:00.000Z" and goes["resolved_at"] == "2025-02-11T00:00:00.000Z"
    assert {u: r["holdout"] for u, r in records.items()} == {u: in_holdout(u, policy) for u in records}
    assert third.counts.outcomes_pending == 2  # stays and goes at C1 + 30 days ("other" joined after it)


def test_a_batch_spanning_months_scores_each_cutoff_from_the_events_before_it() -> None:
    # A replay can put months of a user's events in one batch: each cutoff inside it gets
    # the state as of that cutoff and the batch's first purchase in the horizon after it.
    config = PipelineConfig(PolicyConfig(), 1, LIMITS, replay=True, outcome_sample=10)
    pipeline = BatchPipeline(config, MemoryStores(), lambda: T0 + 400 * DAY_MS)
    run(pipeline, [ev("a", EventType.VIEW, T0)], 0)
    months = [ev("a", EventType.PURCHASE, T0 + (2 + 5 * i) * DAY_MS, price=10.0) for i in range(21)]  # days 2..102
    result = run(pipeline, months, 1)
    got = [(o.score.scored_ms, o.score.risk, o.score.purchased_ms) for o in result.counts.resolved]
    # Cutoffs on days 11, 41 and 71 resolved (day 101's closes past the watermark); the last purchase
    # before each was 4 days earlier, the first after it 1 day later.
    assert got == [(C1 + k * HORIZON, 0.04, C1 + k * HORIZON + DAY_MS) for k in range(3)]
    assert result.counts.outcomes_pending == 1


def test_outcomes_are_off_without_a_sample() -> None:
    config = PipelineConfig(PolicyConfig(), 1, LIMITS, replay=True)
    pipeline = BatchPipeline(config, MemoryStores(), lambda: T0 + 400 * DAY_MS)
    run(pipeline, [ev("a", EventType.VIEW, T0)], 0)
    result = run(pipeline, [ev("b", EventType.VIEW, T0 + 45 * DAY_MS)], 1)
    assert result.outcomes == [] and result.counts.outcomes_pending is None


def test_tail_prints_an_outcome_on_one_readable_line() -> None:
    from streams.commands.tail import format_record

    score = pending("u1", T0, 0.81)
    line = format_record(orjson.dumps(Outcome(b"u1", score).record()))
    assert line == (
        "2025-01-31T00:00:00.000Z outcome u1 churned | scored 2025-01-01T00:00:00.000Z risk=0.81 tier=medium model=v1"
    )


def test_the_shadow_models_cutoff_scores_come_back_beside_the_live_ones_flagged() -> None:
    async def both(features: np.ndarray) -> Inference:
        recency = features[:, _RECENCY] / 100.0
        return Inference(np.round(recency, 6), shadow_risks=np.round(1.0 - recency, 6))

    call = ModelCall(both, "v-live", shadow_version="v-shadow", horizon_ms=HORIZON)
    pipeline = BatchPipeline(
        PipelineConfig(PolicyConfig(), 1, LIMITS, replay=True, outcome_sample=10),
        MemoryStores(),
        lambda: T0 + 400 * DAY_MS,
    )
    for offset, event in enumerate([ev("a", EventType.VIEW, T0), ev("b", EventType.VIEW, T0 + 42 * DAY_MS)]):
        result = asyncio.run(
            pipeline.process({0: [Record(event.user_id.encode(), encode_event(event), offset, event.ts_ms)]}, call)
        )
    records = sorted((orjson.loads(v) for _, v in result.outcomes), key=lambda r: r["shadow"])
    assert [(r["user_id"], r["model_version"], r["shadow"], r["risk"]) for r in records] == [
        ("a", "v-live", False, 0.11),
        ("a", "v-shadow", True, 0.89),
    ]
    report = quality_report(records)
    assert report["model_live"]["n"] == 1 and report["shadow_versions"] == ["v-shadow"]
    assert set(report["by_version"]) == {"v-live", "v-shadow"}
