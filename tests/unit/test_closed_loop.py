"""The closed loop in process: the worker's batch pipeline acts, simulated users answer, the report measures.

No broker: the log goes through :class:`BatchPipeline` in batches; each batch's
interventions go to the :class:`Responder`, whose events join the log at their event
time. The effect report's 95% interval must then contain the simulator's true uplift.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from retention_model.events import Event, EventType
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.state import DAY_MS
from retention_model.pipeline import (
    BatchPipeline,
    DecodeLimits,
    Inference,
    MemoryStores,
    ModelCall,
    PipelineConfig,
)
from retention_model.policy.config import PolicyConfig
from training.closed_loop import LoopFeed, Responder
from training.effect import effect_report, headline
from training.loop_replay import run_closed_loop
from training.simulator import SimConfig, simulate_users

PARTITIONS = 4
LIMITS = DecodeLimits(lateness_ms=30 * DAY_MS, future_skew_ms=300_000, watermark_jump_ms=DAY_MS)
_RECENCY = FEATURE_NAMES.index("recency_days")


def noisy_recency_model() -> ModelCall:
    """A stand-in for the network: risk grows with days since the last event, plus seeded noise,
    so active users (sure things among them) are decided on too, not only the silent."""
    rng = np.random.default_rng(18)

    async def infer(features: np.ndarray) -> Inference:
        recency = 1.0 - np.exp(-features[:, _RECENCY] / 8.0)
        return Inference(np.clip(0.5 * recency + 0.55 * rng.random(len(features)), 0.0, 1.0))

    return ModelCall(infer, "noisy-recency-test")


def run_loop(
    responder: Responder, per_user: list[list[Event]], holdout_share: float, batch_size: int = 500
) -> tuple[list[dict[str, Any]], list[Event]]:
    """The log through the pipeline with the responder in the loop: (decisions, every event the worker saw)."""
    wall_ms = max(events[-1].ts_ms for events in per_user if events) + DAY_MS
    pipeline = BatchPipeline(
        PipelineConfig(PolicyConfig(holdout_share=holdout_share), partitions=PARTITIONS, limits=LIMITS, replay=True),
        MemoryStores(),
        clock=lambda: wall_ms,
    )
    run = run_closed_loop(
        pipeline, noisy_recency_model(), per_user, responder, partitions=PARTITIONS, batch_size=batch_size
    )
    return run.decisions, run.events


@pytest.fixture(scope="module")
def world() -> tuple[SimConfig, list[list[Event]], Any]:
    config = SimConfig(users=600, days=150, seed=18)
    per_user, truth = simulate_users(config)
    return config, per_user, truth


def test_the_measured_uplift_interval_contains_the_true_uplift(world: Any) -> None:
    config, per_user, truth = world
    responder = Responder(per_user, truth, config)
    decisions, events = run_loop(responder, per_user, holdout_share=0.5)
    report = effect_report(decisions, events)
    true = responder.true_uplift(decisions, report["events_until_ms"])
    figures = headline(report)
    # Both count the same users: the report's groups are the truth's users.
    assert figures["n_treated"] + figures["n_holdout"] == true.users
    assert true.persuadables and true.sure_things and true.lost_causes
    assert true.uplift is not None and true.uplift > 0.05
    assert figures["ci_low"] <= true.uplift <= figures["ci_high"], (figures, true)
    assert figures["ci_low"] > 0, "the effect is large enough to be seen at this size"
    # Redemptions and clicks happen, and are attributed to the decisions that caused them.
    assert figures["redemptions"] > 0 and figures["clicks"] > 0
    assert report["coupons_redeemed"] <= report["coupons_sent"]
    assert 0 < report["recommendation_click_through_rate"] < 1
    assert "clicked" in report["groups"]
    assert responder.counts["retained"] > 0


def test_responses_are_deterministic_and_answered_once(world: Any) -> None:
    config, per_user, truth = world
    user = next(u for u in truth if u.user_id in {e.user_id for e in per_user[0]})
    t = per_user[0][len(per_user[0]) // 2].ts_ms
    from retention_model.policy.policy import iso_ms

    intervention = {
        "intervention_id": "ab" * 12,
        "kind": "recommendation",
        "user_id": user.user_id,
        "event_time": iso_ms(t),
        "recommendation": {"items": [{"item_id": i, "category": "c" + i[1:3]} for i in sorted(user.favourite_items)]},
    }
    first = Responder(per_user, truth, config).respond(intervention)
    second_responder = Responder(per_user, truth, config)
    assert second_responder.respond(intervention) == first
    assert second_responder.respond(intervention) == []  # a redelivered intervention is answered once
    assert all(e.ts_ms > t and e.intervention_id in (None, "ab" * 12) for e in first)
    assert all(e.type is not EventType.PURCHASE or e.intervention_id for e in first)


def test_the_feed_merges_responses_in_event_time() -> None:
    base = [Event(f"e{i}", "u", EventType.VIEW, 1_700_000_000_000 + i * 1000) for i in range(5)]
    feed = LoopFeed(base)
    seen = []
    for event in feed:
        seen.append(event.event_id)
        if event.event_id == "e0":
            feed.add([Event("r", "u", EventType.VIEW, 1_700_000_002_500), Event("late", "u", EventType.VIEW, 1)])
    assert seen == ["e0", "late", "e1", "e2", "r", "e3", "e4"]


def test_a_few_recommendations_get_clicked_and_liked_ones_more(world: Any) -> None:
    """Analysts read the demo's click-through: it must be the few per cent of real lists, not one
    click per list, and it must answer to what the list holds (the user's tastes)."""
    from retention_model.policy.policy import iso_ms

    config, per_user, truth = world
    responder = Responder(per_user, truth, config)
    clicked = {"liked": 0, "unliked": 0}
    sent = 0
    for number, user in enumerate(truth):
        if responder.persuadable[user.user_id] or user.silent_ms is None or len(user.taste) < 2:
            continue
        ranked = sorted(user.taste, key=user.taste.__getitem__)
        t = user.silent_ms - 30 * DAY_MS  # still active
        for n in range(10):
            sent += 1
            for label, category, mark in (("liked", ranked[-1], "a"), ("unliked", ranked[0], "b")):
                items = [{"item_id": f"i{category[1:]}-{k:03d}", "category": category} for k in range(10)]
                iid = f"{mark}{n:03x}{number:08x}".ljust(32, "0")  # hex: it seeds the user's draws
                intervention = {"intervention_id": iid, "kind": "recommendation", "user_id": user.user_id}
                intervention |= {"event_time": iso_ms(t), "recommendation": {"items": items}}
                clicked[label] += bool(responder.respond(intervention))
    assert sent > 1000
    liked, unliked = clicked["liked"] / sent, clicked["unliked"] / sent
    print(f"click-through: liked {liked:.3f}, unliked {unliked:.3f} over {sent} lists each")
    assert 0.02 < liked < 0.15, liked
    assert liked > 2 * unliked, (liked, unliked)
