"""Limits that spend money or reach people hold in real time: cooldowns, caps and budgets on the
wall clock, the circuit breaker on a surge, and features shown to people rounded."""

from __future__ import annotations

from dataclasses import replace

import pytest

from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS, UserState, apply_event
from retention_model.policy.budget import BudgetLedger
from retention_model.policy.circuit import CircuitBreaker, CircuitConfig
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import Decision, decide
from retention_model.scoring import describe_user

T0 = 1_735_689_600_000
WALL = 1_796_000_000_000  # processing time: a day in 2026
CONFIG = PolicyConfig(
    risk_medium=0.5,
    risk_high=0.75,
    coupon_cooldown_days=14,
    recommendation_cooldown_days=3,
    holdout_share=0.0,
    caps_per_user=0,
    suppression_purchased_within_days=0,
    suppression_active_coupon=False,
)


def buyer(user: str = "u1") -> UserState:
    state = UserState()
    apply_event(state, Event(f"{user}-p", user, EventType.PURCHASE, T0, price=30.0), 0)
    return state


def coupon(state: UserState, event_day: float, wall_ms: int | None, **extra: object) -> Decision:
    config = extra.pop("config", CONFIG)
    made = decide(  # type: ignore[arg-type]
        user_id=extra.pop("user", "u1"),
        risk=0.9,
        state=state,
        now_ms=T0 + int(event_day * DAY_MS),
        model_version="m1",
        reasons=[],
        profile={},
        config=config,
        wall_ms=wall_ms,
        **extra,
    )
    return next(d for d in made if d.intervention.kind == "coupon")


class Clock:
    def __init__(self, now: float = 1_796_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- cooldowns and caps on both clocks ------------------------------------------------


def test_event_time_racing_ahead_does_not_end_a_cooldown_in_a_live_worker() -> None:
    """Sixty event-time days pass within one real minute (a replay, a wrong clock): one coupon."""
    state = buyer()
    assert coupon(state, 1, WALL).action == "sent"
    again = coupon(state, 60, WALL + 30_000)
    assert again.action == "suppressed" and again.rule == "cooldown"
    assert "by the wall clock" in again.reason
    # Once the cooldown has passed on both clocks, the next one goes out.
    assert coupon(state, 75, WALL + 15 * DAY_MS).action == "sent"


def test_a_replay_runs_limits_on_event_time_alone() -> None:
    state = buyer()
    assert coupon(state, 1, None).action == "sent"
    assert coupon(state, 60, None).action == "sent"  # as the offline replay always did


def test_the_event_time_cooldown_still_holds_when_the_wall_clock_has_moved_on() -> None:
    state = buyer()
    assert coupon(state, 1, WALL).action == "sent"
    late = coupon(state, 2, WALL + 20 * DAY_MS)  # a backlog read long after: event time says 1 day
    assert late.rule == "cooldown" and "by the wall clock" not in late.reason


def test_the_per_user_cap_counts_real_days_in_a_live_worker() -> None:
    config = replace(CONFIG, caps_per_user=2, caps_window_days=30, coupon_cooldown_days=0, recommendation_tiers=())
    state = buyer()
    rules = [coupon(state, day * 40, WALL + day * 1000, config=config).rule for day in range(4)]
    assert rules == ["tier", "tier", "user_cap", "user_cap"]  # 120 event days, 4 real seconds


def test_a_coupon_expires_by_the_real_clock_in_a_live_worker() -> None:
    state = buyer()
    sent = coupon(state, 1, WALL)
    assert sent.intervention.payload["expires_at"].startswith("2026-")  # 14 real days after sending


# --- budgets -----------------------------------------------------------------------


def test_a_new_event_day_does_not_open_a_fresh_daily_budget_within_one_real_day() -> None:
    config = replace(CONFIG, budget_daily_count=2)
    ledger = BudgetLedger(config)
    sent = [coupon(buyer(f"u{day}"), day, WALL, user=f"u{day}", budget=ledger, config=config) for day in range(5)]
    assert [d.action for d in sent] == ["sent", "sent", "suppressed", "suppressed", "suppressed"]
    assert "real day" in sent[2].reason
    # Replayed without a wall clock, each event day has its own budget, as before.
    replayed = BudgetLedger(config)
    assert all(
        coupon(buyer(f"r{day}"), day, None, user=f"r{day}", budget=replayed, config=config).action == "sent"
        for day in range(5)
    )


# --- the circuit breaker --------------------------------------------------------------


def test_the_breaker_opens_on_a_surge_and_closes_after_its_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CircuitConfig(surge_factor=5, min_per_minute=10, cooldown_s=600), clock)
    admitted = sum(breaker.admit() for _ in range(50))
    assert admitted == 10 and breaker.is_open and breaker.trips == 1
    assert "would pass 10" in breaker.reason
    clock.now += 599
    assert not breaker.admit()
    clock.now += 2
    assert not breaker.is_open
    assert breaker.admit()


def test_an_operator_closes_the_breaker_and_a_steady_rate_raises_the_bar() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CircuitConfig(surge_factor=3, min_per_minute=10, trailing_minutes=10, cooldown_s=0), clock)
    for _ in range(10):  # ten minutes of 9 interventions each: normal traffic
        assert all(breaker.admit() for _ in range(9))
        clock.now += 60
    assert breaker.limit() == 27  # three times the trailing 9 per minute
    assert sum(breaker.admit() for _ in range(100)) == 27
    assert breaker.is_open
    clock.now += 3600  # no cooldown: only an operator closes it
    assert breaker.is_open
    breaker.close()
    assert breaker.admit()


def test_the_absolute_ceiling_holds_whatever_the_trailing_rate() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CircuitConfig(surge_factor=100, min_per_minute=1000, max_per_minute=25), clock)
    assert sum(breaker.admit() for _ in range(100)) == 25


def test_an_open_breaker_suppresses_with_its_rule_and_starts_no_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CircuitConfig(min_per_minute=1, surge_factor=1), clock)
    first, second = buyer("a"), buyer("b")
    assert coupon(first, 1, WALL, user="a", breaker=breaker).action == "sent"
    refused = coupon(second, 1, WALL, user="b", breaker=breaker)
    assert refused.action == "suppressed" and refused.rule == "circuit_open"
    assert second.last_coupon_ms == 0 and second.last_coupon_wall_ms == 0


# --- what people read ---------------------------------------------------------------


def test_features_shown_to_people_are_rounded() -> None:
    state = buyer()
    shown = describe_user("u1", state, T0 + 3 * DAY_MS)
    values = shown["features"].values()
    assert all(value == round(value, 6) for value in values)
    decayed = shown["features"]["purchases_count_90d"]
    assert decayed == pytest.approx(0.5 ** (3 / 90), abs=1e-6)
    assert shown["features"]["purchases_count_total"] == 1
