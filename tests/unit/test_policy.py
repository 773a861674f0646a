"""The first policy: tiers, cooldowns, deterministic ids, documented schema."""

from __future__ import annotations

import pytest

from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS, UserState, apply_event
from retention_model.policy.policy import (
    DECISION_SCHEMA,
    INTERVENTION_SCHEMA,
    Decision,
    PolicyConfig,
    decide,
    in_holdout,
    tier_for,
)

T0 = 1_735_689_600_000
CONFIG = PolicyConfig(
    medium_risk=0.5, high_risk=0.75, coupon_cooldown_days=14, recommendation_cooldown_days=3, holdout_share=0.0
)
PROFILE = {"top_categories": ["shoes", "bags"], "lifecycle_stage": "at_risk"}


def buyer() -> UserState:
    state = UserState()
    apply_event(state, Event("e1", "u1", EventType.PURCHASE, T0, price=30.0), 0)
    return state


def run(state: UserState, risk: float, day: float, config: PolicyConfig = CONFIG) -> list[str]:
    """Kinds actually sent."""
    return [d.intervention.kind for d in decisions(state, risk, day, config) if d.action == "sent"]


def decisions(
    state: UserState, risk: float, day: float, config: PolicyConfig = CONFIG, user: str = "u1"
) -> list[Decision]:
    return decide(
        risk=risk,
        state=state,
        now_ms=T0 + int(day * DAY_MS),
        model_version="m1",
        reasons=["no purchase for 41 days; usually buys every 12"],
        profile=PROFILE,
        config=config,
        user_id=user,
    )


@pytest.mark.parametrize(
    ("risk", "tier"), [(0.1, "low"), (0.5, "medium"), (0.749, "medium"), (0.75, "high"), (1.0, "high")]
)
def test_tiers(risk: float, tier: str) -> None:
    assert tier_for(risk, CONFIG) == tier


def test_low_risk_gets_nothing() -> None:
    assert run(buyer(), 0.2, 1) == []


def test_high_risk_buyer_gets_coupon_and_recommendation_then_cooldowns_hold() -> None:
    state = buyer()
    assert run(state, 0.9, 1) == ["coupon", "recommendation"]
    assert run(state, 0.9, 2) == []  # both cooling down
    assert run(state, 0.9, 4.5) == ["recommendation"]  # 3-day cooldown over
    assert run(state, 0.9, 15) == ["coupon", "recommendation"]  # 14-day cooldown over
    assert state.interventions_sent == 5


def test_high_risk_user_who_never_bought_gets_only_a_recommendation() -> None:
    state = UserState()
    apply_event(state, Event("e1", "u1", EventType.VIEW, T0, category="shoes"), 0)
    assert run(state, 0.95, 1) == ["recommendation"]


def test_intervention_wire_form_and_deterministic_id() -> None:
    state_a, state_b = buyer(), buyer()
    kwargs = dict(
        user_id="u1", risk=0.9, now_ms=T0 + DAY_MS, model_version="m1", reasons=["r"], profile=PROFILE, config=CONFIG
    )
    first = [d.intervention for d in decide(state=state_a, **kwargs)]  # type: ignore[arg-type]
    again = [d.intervention for d in decide(state=state_b, **kwargs)]  # type: ignore[arg-type]
    assert [i.as_dict() for i in first] == [i.as_dict() for i in again]
    coupon = first[0].as_dict()
    assert coupon["schema"] == INTERVENTION_SCHEMA
    assert set(coupon) >= {
        "intervention_id",
        "kind",
        "user_id",
        "tier",
        "risk",
        "model_version",
        "event_time",
        "reasons",
        "offer",
    }
    assert coupon["offer"] == {
        "coupon_value": 10.0,
        "currency": "EUR",
        "min_spend": 30.0,
        "expires_at": "2025-01-16T00:00:00.000Z",
    }
    reco = first[1].as_dict()
    assert reco["recommendation"]["categories"][0] == {"category": "shoes", "rank": 1}
    assert coupon["intervention_id"] != reco["intervention_id"]


def test_bad_tier_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="medium_risk"):
        PolicyConfig(medium_risk=0.9, high_risk=0.5)


def test_every_decision_says_what_and_why() -> None:
    state = buyer()
    made = decisions(state, 0.9, 1)
    assert [(d.action, d.intervention.kind) for d in made] == [("sent", "coupon"), ("sent", "recommendation")]
    again = decisions(state, 0.9, 2)
    assert [d.action for d in again] == ["suppressed", "suppressed"]
    assert again[0].reason == "cooldown: last coupon 1.0 days ago, cooldown 14 days"
    body = again[0].as_dict()
    assert body["schema"] == DECISION_SCHEMA
    assert body["decision_id"] == body["intervention"]["intervention_id"]
    assert body["action"] == "suppressed"


def test_holdout_users_get_decisions_but_nothing_is_sent() -> None:
    config = PolicyConfig(holdout_share=0.5)
    held = next(f"user-{i}" for i in range(100) if in_holdout(f"user-{i}", config))
    state = buyer()
    made = decisions(state, 0.9, 1, config, user=held)
    assert [d.action for d in made] == ["held_out", "held_out"]
    assert made[0].reason == "control group (50% holdout)"
    # The control group keeps the treated group's cadence: cooldowns start all the same.
    assert [d.action for d in decisions(state, 0.9, 2, config, user=held)] == ["suppressed", "suppressed"]
    assert state.interventions_sent == 0


def test_holdout_share_is_met_within_one_percent_over_100k_users() -> None:
    config = PolicyConfig(holdout_share=0.10)
    share = sum(in_holdout(f"user-{i}", config) for i in range(100_000)) / 100_000
    assert abs(share - 0.10) <= 0.01


def test_holdout_is_stable_across_processes_and_changes_with_the_salt() -> None:
    import subprocess
    import sys

    config = PolicyConfig(holdout_share=0.10)
    here = [in_holdout(f"user-{i}", config) for i in range(2000)]
    code = (
        "from retention_model.policy.policy import PolicyConfig, in_holdout;"
        "print(''.join('1' if in_holdout(f'user-{i}', PolicyConfig(holdout_share=0.10)) else '0' for i in range(2000)))"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert there == "".join("1" if h else "0" for h in here)
    salted = [in_holdout(f"user-{i}", PolicyConfig(holdout_share=0.10, holdout_salt="other")) for i in range(2000)]
    assert salted != here
