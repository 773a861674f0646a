"""Derived features, profile, reasons and silence timers."""

from __future__ import annotations

import pytest

from retention_model.events import Event, EventType
from retention_model.features.definitions import FEATURE_CODE_VERSION, FEATURE_NAMES, SIGNALS
from retention_model.features.derive import feature_dict, feature_matrix, feature_vector
from retention_model.features.describe import FeatureRow, describe_many, profile, reasons
from retention_model.features.offline import events_by_user, features_at, replay_states
from retention_model.features.silence import FIXED_SILENCE_DAYS, check_times_ms, next_check_ms
from retention_model.features.state import DAY_MS, UserState, apply_event
from retention_model.policy.policy import PolicyConfig, customer_value
from training.simulator import SimConfig, simulate

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def ev(kind: EventType, day: float, user: str = "u1", **fields: object) -> Event:
    return Event(f"{user}-{kind.name}-{day}", user, kind, T0 + int(day * DAY_MS), **fields)  # type: ignore[arg-type]


def regular_buyer(days: tuple[float, ...] = (0, 10, 20, 30)) -> UserState:
    state = UserState()
    for day in days:
        apply_event(state, ev(EventType.SESSION_START, day))
        apply_event(state, ev(EventType.VIEW, day, category="shoes"))
        apply_event(state, ev(EventType.ADD_TO_CART, day, category="shoes", price=40.0))
        apply_event(state, ev(EventType.PURCHASE, day, price=40.0, quantity=1, category="shoes"))
    return state


def test_feature_names_are_unique_and_derived_from_definitions() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert "spend_sum_30d" in FEATURE_NAMES
    assert "purchases_count_total" in FEATURE_NAMES
    assert len(FEATURE_NAMES) == len(SIGNALS) * 5 + 26
    assert FEATURE_CODE_VERSION.startswith("v1-")


def test_recency_rhythm_and_overdue() -> None:
    state = regular_buyer()
    features = feature_dict(state, T0 + 55 * DAY_MS)
    assert features["recency_days"] == pytest.approx(25)
    assert features["purchase_recency_days"] == pytest.approx(25)
    assert features["tenure_days"] == pytest.approx(55)
    assert features["mean_gap_days"] == pytest.approx(10)
    assert features["gap_std_days"] == pytest.approx(0)
    assert features["overdue_ratio"] == pytest.approx(2.5)
    assert features["avg_order_value"] == pytest.approx(40)
    assert features["btyd_x"] == 3
    assert features["btyd_t_x_days"] == pytest.approx(30)
    assert 0 < features["btyd_p_alive"] < 1
    assert features["cart_abandonment_30d"] == pytest.approx(0)


def test_p_alive_falls_with_silence() -> None:
    state = regular_buyer()
    soon = feature_dict(state, T0 + 32 * DAY_MS)["btyd_p_alive"]
    late = feature_dict(state, T0 + 200 * DAY_MS)["btyd_p_alive"]
    assert late < soon


def test_p_alive_is_finite_for_frequent_buyers_long_gone() -> None:
    # Found on CDNOW: 200 repeat purchases, then a year of silence, overflowed exp().
    from retention_model.features.derive import bgnbd_p_alive

    assert bgnbd_p_alive(200.0, 100.0, 465.0) == pytest.approx(0.0, abs=1e-12)
    assert bgnbd_p_alive(3.0, 30.0, 30.0) > 0.5


def test_one_purchase_already_has_a_cold_start_score() -> None:
    state = UserState()
    apply_event(state, ev(EventType.PURCHASE, 0, price=30.0))
    fresh = feature_dict(state, T0 + 2 * DAY_MS)
    stale = feature_dict(state, T0 + 120 * DAY_MS)
    assert fresh["btyd_p_alive"] == stale["btyd_p_alive"] == 1.0  # uninformative at x = 0
    assert 0.0 < stale["btyd_p_purchase_30d"] < fresh["btyd_p_purchase_30d"] < 1.0


def test_rates_and_ratings() -> None:
    state = regular_buyer()
    apply_event(state, ev(EventType.CANCEL_ORDER, 31))
    apply_event(state, ev(EventType.RETURN, 32))
    apply_event(state, ev(EventType.REVIEW, 33, rating=2.0))
    features = feature_dict(state, T0 + 34 * DAY_MS)
    assert features["cancel_rate"] == pytest.approx(0.25)
    assert features["return_rate"] == pytest.approx(0.25)
    assert features["mean_rating"] == 2.0
    assert features["low_rating"] == 1.0


def test_reasons_read_like_a_marketer_wrote_them() -> None:
    state = regular_buyer()
    apply_event(state, ev(EventType.CANCEL_ORDER, 30.5))
    apply_event(state, ev(EventType.CANCEL_ORDER, 30.6))
    words = reasons(feature_dict(state, T0 + 71 * DAY_MS))
    assert words[0] == "no purchase for 41 days; usually buys every 10 days"
    assert "2 of 4 orders cancelled" in words
    assert len(words) <= 3


def test_reasons_never_count_zero_visits() -> None:
    """A shopper whose session start was lost still browses: say so without "0 visits"."""
    browsing = UserState()
    apply_event(browsing, ev(EventType.VIEW, 0, category="shoes"))
    apply_event(browsing, ev(EventType.ADD_TO_CART, 0, category="shoes", price=40.0))
    assert "no purchase yet" in reasons(feature_dict(browsing, T0 + DAY_MS))
    apply_event(browsing, ev(EventType.SESSION_START, 0))
    assert "no purchase yet in 1 visit" in reasons(feature_dict(browsing, T0 + DAY_MS))


def test_profile_lifecycle_and_segments() -> None:
    state = regular_buyer()
    active = profile(feature_dict(state, T0 + 31 * DAY_MS), state)
    assert active.lifecycle_stage == "active"
    assert active.top_categories == ("shoes",)
    assert active.price_band == "mid"
    gone = profile(feature_dict(state, T0 + 300 * DAY_MS), state)
    assert gone.lifecycle_stage == "churned"
    assert gone.rfm_segment in {"at_risk", "hibernating"}
    newcomer = UserState()
    apply_event(newcomer, ev(EventType.VIEW, 0, category="toys"))
    fresh = profile(feature_dict(newcomer, T0 + DAY_MS), newcomer)
    assert (fresh.lifecycle_stage, fresh.rfm_segment, fresh.price_band) == ("new", "prospect", "none")


def test_a_scoring_batch_describes_users_as_their_full_features_do() -> None:
    """The batch's profiles and reasons, and the policy's customer value read from a matrix row,
    equal what each user's own named features give (and top categories rank the decayed weights)."""
    states = replay_states(list(simulate(SimConfig(users=200, days=90, seed=5))))
    users = list(states.values())
    for days_later in (0, 20, 200):
        now = [state.last_seen_ms + days_later * DAY_MS for state in users]
        matrix = feature_matrix(users, now)
        profiles, said = describe_many(matrix, users)
        for i, (state, at) in enumerate(zip(users, now)):
            full = feature_dict(state, at)
            assert profiles[i] == profile(full, state).as_dict()
            assert said[i] == reasons(full)
            assert customer_value(FeatureRow(matrix[i]), PolicyConfig()) == customer_value(full, PolicyConfig())
            weights = state.category_weights(at)  # the profile ranks undecayed weights
            assert profiles[i]["top_categories"] == sorted(weights, key=lambda k: (-weights[k], k))[:3]


def test_silence_thresholds_follow_the_users_rhythm() -> None:
    state = regular_buyer()  # buys every 10 days, last on day 30
    times = [(t - T0) / DAY_MS for t in check_times_ms(state)]
    assert 50 in times and 60 in times  # 2x and 3x the gap after the last purchase
    assert all(30 + d in times for d in FIXED_SILENCE_DAYS)
    assert (next_check_ms(state) - T0) / DAY_MS == 37  # 7 days of silence comes first
    state.last_scored_ms = T0 + 50 * DAY_MS
    assert (next_check_ms(state) - T0) / DAY_MS == 60
    state.last_scored_ms = T0 + 120 * DAY_MS
    assert next_check_ms(state) is None  # after 90 days of silence: left alone
    assert next_check_ms(UserState()) is None


def test_offline_features_at_cutoffs_use_only_the_past() -> None:
    events = [ev(EventType.PURCHASE, d, price=10.0) for d in (0, 10, 20)] + [
        ev(EventType.PURCHASE, d, user="u2", price=5.0) for d in (5, 25)
    ]
    per_user = events_by_user(events)
    keys, matrix = features_at(per_user, [("u1", T0 + 15 * DAY_MS), ("u2", T0 + 15 * DAY_MS), ("u2", T0 + 2 * DAY_MS)])
    assert keys == [("u1", T0 + 15 * DAY_MS), ("u2", T0 + 15 * DAY_MS)]  # u2 unseen on day 2
    purchases = FEATURE_NAMES.index("purchases_count_total")
    assert matrix[:, purchases].tolist() == [2.0, 1.0]
    final = replay_states(events)
    assert (
        feature_vector(final["u1"], T0 + 30 * DAY_MS) == feature_matrix([final["u1"]], [T0 + 30 * DAY_MS])[0].tolist()
    )


def test_offline_late_events_follow_log_order() -> None:
    # day 12 arrives after day 20 in the log: features at day 15 include day 12.
    events = [
        ev(EventType.PURCHASE, 0, price=1.0),
        ev(EventType.PURCHASE, 20, price=2.0),
        ev(EventType.PURCHASE, 12, price=4.0),
    ]
    _, matrix = features_at(events_by_user(events), [("u1", T0 + 15 * DAY_MS)])
    assert matrix[0, FEATURE_NAMES.index("spend_sum_total")] == 5.0


def test_frames_with_datetime_columns_convert_to_epoch_ms() -> None:
    import pandas as pd

    from training.eventlog import events_from_frame

    frame = pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "user_id": ["u1", "u1"],
            "type": ["view", "purchase"],
            "ts": pd.to_datetime(["2025-01-01T00:00:00Z", "2025-01-02T12:00:00+02:00"], utc=True),
            "price": [None, 12.5],
        }
    )
    events = events_from_frame(frame)
    assert [e.ts_ms for e in events] == [T0, T0 + DAY_MS + 10 * 3_600_000]
    assert events[1].price == 12.5 and events[0].price is None
    naive = frame.assign(ts=frame["ts"].dt.tz_localize(None))
    with pytest.raises(ValueError, match="no time zone"):
        events_from_frame(naive)
