"""The outcome join: sampled scores resolved from the same events when their horizon closes."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest

from retention_model.events import Event, EventType, encode_event
from retention_model.features.state import DAY_MS
from retention_model.pipeline import (
    BatchPipeline,
    DecodeLimits,
    Inference,
    MemoryStores,
    ModelCall,
    PipelineConfig,
    Record,
)
from retention_model.pipeline.outcomes import Outcome, OutcomeSample, PendingScore, first_purchase_within
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import in_holdout

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
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


def test_one_pending_score_per_user_and_a_hard_bound() -> None:
    sample = OutcomeSample(capacity=2)
    assert sample.offer(b"a", pending("a"))
    assert not sample.offer(b"a", pending("a", T0 + 1))  # a's first score is the one that waits
    assert sample.offer(b"b", pending("b"))
    assert not sample.offer(b"c", pending("c"))  # full: skipped, counted, never waited for
    assert len(sample) == 2 and sample.take_skipped() == 1 and sample.take_skipped() == 0


def test_scores_resolve_when_the_watermark_reaches_their_horizon_in_due_order() -> None:
    sample = OutcomeSample(capacity=10)
    sample.offer(b"late", pending("late", T0 + DAY_MS))
    sample.offer(b"early", pending("early", T0))
    sample.observe({b"early": purchases(T0 + 2 * DAY_MS), b"late": [(ev("late", EventType.VIEW, T0 + 2 * DAY_MS), 0)]})
    assert sample.resolve(T0 + HORIZON - 1) == []  # one millisecond short
    resolved = sample.resolve(T0 + HORIZON + DAY_MS)
    assert [(o.key, o.churned) for o in resolved] == [(b"early", False), (b"late", True)]
    assert len(sample) == 0
    # Resolved: the user's next score may enter.
    assert sample.offer(b"early", pending("early", T0 + HORIZON + DAY_MS))


def test_a_dropped_users_score_never_resolves() -> None:
    sample = OutcomeSample(capacity=10)
    sample.offer(b"a", pending("a"))
    sample.drop([b"a"])
    assert sample.resolve(T0 + 2 * HORIZON) == []


# --- through the pipeline ------------------------------------------------------------


async def infer(features: np.ndarray) -> Inference:
    return Inference(np.full(len(features), 0.9))


def run(pipeline: BatchPipeline, events: list[Event], offset: int) -> Any:
    records = [Record(e.user_id.encode(), encode_event(e), offset + i, e.ts_ms) for i, e in enumerate(events)]
    return asyncio.run(pipeline.process({0: records}, ModelCall(infer, "v-test", horizon_ms=HORIZON)))


def test_the_pipeline_publishes_each_sampled_score_with_what_followed_within_the_horizon() -> None:
    policy = PolicyConfig(holdout_share=0.5, suppression_purchased_within_days=0.0)
    config = PipelineConfig(policy, 1, LIMITS, replay=True, outcome_sample=100)
    pipeline = BatchPipeline(config, MemoryStores(), lambda: T0 + 400 * DAY_MS)
    first = run(pipeline, [ev("stays", EventType.VIEW, T0), ev("goes", EventType.VIEW, T0)], 0)
    assert first.outcomes == [] and first.counts.outcomes_pending == 2
    # "stays" buys on day 10; "erased" is scored, then erased before its horizon closes.
    second = run(
        pipeline,
        [ev("stays", EventType.PURCHASE, T0 + 10 * DAY_MS, price=20.0), ev("erased", EventType.VIEW, T0 + 10 * DAY_MS)],
        2,
    )
    assert second.outcomes == []
    erase = Record(b"erased", orjson.dumps({"type": "erase", "user_id": "erased", "ts": T0 + 11 * DAY_MS}), 4, T0)
    asyncio.run(pipeline.process({0: [erase]}, ModelCall(infer, "v-test", horizon_ms=HORIZON)))
    # Day 45 (plus the lateness) moves the watermark past day 30 and day 40: both first scores close.
    third = run(pipeline, [ev("other", EventType.VIEW, T0 + 45 * DAY_MS)], 5)
    records = {key.decode(): orjson.loads(value) for key, value in third.outcomes}
    assert set(records) == {"stays", "goes"}  # the erased user's score went with them
    assert records["stays"]["churned"] is False and records["stays"]["purchased_at"] == "2025-01-11T00:00:00.000Z"
    assert records["goes"]["churned"] is True and records["goes"]["purchased_at"] is None
    goes = records["goes"]
    assert goes["schema"] == "retention.outcome/v1" and goes["model_version"] == "v-test"
    assert goes["risk"] == 0.9 and goes["tier"] == "high" and goes["horizon_days"] == 30
    assert goes["scored_at"] == "2025-01-01T00:00:00.000Z" and goes["resolved_at"] == "2025-01-31T00:00:00.000Z"
    assert {u: r["holdout"] for u, r in records.items()} == {u: in_holdout(u, policy) for u in records}
    assert [o.churned for o in third.counts.resolved] == [
        records[o.key.decode()]["churned"] for o in third.counts.resolved
    ]


def test_a_batch_spanning_months_still_sees_the_purchase_inside_the_horizon() -> None:
    # A replay can put months of a user's events in one batch; the state keeps only the
    # last 8 purchase times (days 66-101 here), so the purchase on day 1 must be read
    # from the batch's events.
    config = PipelineConfig(PolicyConfig(), 1, LIMITS, replay=True, outcome_sample=10)
    pipeline = BatchPipeline(config, MemoryStores(), lambda: T0 + 400 * DAY_MS)
    run(pipeline, [ev("a", EventType.VIEW, T0)], 0)
    months = [ev("a", EventType.PURCHASE, T0 + (1 + 5 * i) * DAY_MS, price=10.0) for i in range(21)]
    result = run(pipeline, months, 1)
    assert [(o.key, o.churned, o.score.purchased_ms) for o in result.counts.resolved] == [(b"a", False, T0 + DAY_MS)]


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
