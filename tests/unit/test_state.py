"""Per-user state: decayed aggregates, order independence, idempotence, serialisation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention_model.events import Event, EventType, OrderLine
from retention_model.features.definitions import FEATURE_NAMES, HALF_LIVES_DAYS, SIGNALS
from retention_model.features.derive import feature_dict
from retention_model.features.state import (
    APPLIED,
    DAY_MS,
    DUPLICATE_EVENT,
    HOUR_MS,
    RECENT_EVENT_IDS_KEPT,
    REPLAYED,
    UserState,
    apply_event,
    dump_state,
    item_hash,
    load_state,
    merge_states,
)
from retention_model.features.state.bought import bought_key, to_float32

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
SPEND = [s.on for s in SIGNALS].index("spend")
PURCHASES = [s.on for s in SIGNALS].index("purchases")


def purchase(ts_ms: int, price: float, quantity: int = 1, category: str = "books", n: int = 0) -> Event:
    return Event(f"e{n}", "u1", EventType.PURCHASE, ts_ms, price=price, quantity=quantity, category=category)


event_types = st.sampled_from(list(EventType))


@st.composite
def user_events(draw: st.DrawFn, max_size: int = 30) -> list[Event]:
    n = draw(st.integers(min_value=1, max_value=max_size))
    out = []
    for i in range(n):
        event_type = draw(event_types)
        out.append(
            Event(
                event_id=f"e{i}",
                user_id="u1",
                type=event_type,
                ts_ms=T0 + draw(st.integers(min_value=0, max_value=200 * DAY_MS)),
                price=draw(st.floats(min_value=0, max_value=500)) if event_type is EventType.PURCHASE else None,
                quantity=draw(st.integers(min_value=1, max_value=5)),
                rating=float(draw(st.integers(1, 5))) if event_type is EventType.REVIEW else None,
                coupon_id=draw(st.none() | st.just("c1")),
                category=draw(st.sampled_from(["a", "b", "c", None])),
            )
        )
    return out


def replay(events: list[Event]) -> UserState:
    state = UserState()
    for event in events:
        apply_event(state, event)
    return state


@given(user_events(), st.integers(min_value=0, max_value=400 * DAY_MS))
def test_decayed_spend_matches_brute_force(events: list[Event], later_ms: int) -> None:
    state = replay(events)
    now = max(e.ts_ms for e in events) + later_ms
    features = feature_dict(state, now)
    purchases = [e for e in events if e.type is EventType.PURCHASE]
    for h in HALF_LIVES_DAYS:
        expected = sum(e.amount * 0.5 ** ((now - e.ts_ms) / (h * DAY_MS)) for e in purchases)
        assert features[f"spend_sum_{h}d"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        count = sum(0.5 ** ((now - e.ts_ms) / (h * DAY_MS)) for e in purchases)
        assert features[f"purchases_count_{h}d"] == pytest.approx(count, rel=1e-9, abs=1e-9)
    assert features["spend_sum_total"] == pytest.approx(sum(e.amount for e in purchases))


@given(user_events(), st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_features(events: list[Event], rng: random.Random) -> None:
    shuffled = events[:]
    rng.shuffle(shuffled)
    now = max(e.ts_ms for e in events) + DAY_MS
    in_order = feature_dict(replay(sorted(events, key=lambda e: e.ts_ms)), now)
    out_of_order = feature_dict(replay(shuffled), now)
    for name in FEATURE_NAMES:
        assert out_of_order[name] == pytest.approx(in_order[name], rel=1e-9, abs=1e-9), name


@given(user_events(), st.data())
def test_replaying_a_prefix_changes_nothing(events: list[Event], data: st.DataObject) -> None:
    once = UserState()
    for offset, event in enumerate(events):
        apply_event(once, event, offset)
    prefix = data.draw(st.integers(min_value=0, max_value=len(events)))
    twice = load_state(dump_state(once))
    skipped = [apply_event(twice, event, offset) for offset, event in enumerate(events[:prefix])]
    assert skipped == [REPLAYED] * prefix
    assert twice == once


@given(user_events(max_size=60))
def test_serialisation_round_trips_within_one_kib(events: list[Event]) -> None:
    state = replay(events)
    blob = dump_state(state)
    assert load_state(blob) == state
    assert len(blob) <= 1280


def test_state_of_a_busy_user_stays_under_one_kib() -> None:
    state = UserState()
    for i in range(5000):
        # Category names at the 24-byte limit, items with long ids, every policy field set.
        apply_event(state, purchase(T0 + i * 3_600_000, 20.0, category=f"long-category-name-{i % 40:05d}", n=i))
        view = Event(f"v{i}", "u1", EventType.VIEW, T0 + i * 3_600_000 + 1, item_id=f"sku-{i:040d}")
        apply_event(state, view)
    state.cap_window_day, state.cap_count, state.opted_out, state.coupon_redeemed = 20_000, 3, True, True
    state.last_scored_ms = state.last_coupon_ms = state.last_reco_ms = T0 + 400 * DAY_MS  # real epoch times
    state.interventions_sent, state.last_risk, state.offset = 70_000, 0.73, 2**40
    state.last_coupon_wall_ms = state.last_reco_wall_ms = T0 + 400 * DAY_MS  # whole seconds, as the policy keeps them
    for i in range(10):  # purchases with order ids fill the order window too
        lines = [OrderLine(f"sku-{i}-{j:040d}") for j in range(3)]
        apply_event(
            state, Event(f"o{i}", "u1", EventType.PURCHASE, T0, price=1.0, order_id=f"order-{i:030d}", items=lines)
        )
    assert len(state.recent_event_ids) == 8 and len(state.recent_order_ids) == 4 and len(state.bought) == 16
    blob = dump_state(state)
    assert load_state(blob) == state
    assert len(blob) <= 1280
    assert len(state.categories) == 8
    assert len(state.recent_items) == 3
    assert load_state(blob) == state


def test_long_category_names_are_cut_to_24_bytes_without_splitting_a_character() -> None:
    state = UserState()
    apply_event(state, purchase(T0, 20.0, category="é" * 20, n=1))
    (name,) = state.categories
    assert name == "é" * 12


def test_recent_items_keep_the_newest_whatever_the_arrival_order() -> None:
    views = [Event(f"v{i}", "u1", EventType.VIEW, T0 + i * 3_600_000, item_id=f"item-{i % 5}") for i in range(12)]
    forward, backward = UserState(), UserState()
    for event in views:
        apply_event(forward, event)
    for event in reversed(views):
        apply_event(backward, event)
    assert forward.recent_items == backward.recent_items
    assert set(forward.recent_items) == {item_hash(f"item-{i}") for i in (4, 0, 1)}


def test_opt_out_and_coupon_redemption_are_remembered() -> None:
    state = UserState()
    apply_event(state, Event("o1", "u1", EventType.OPT_OUT, T0))
    assert state.opted_out
    state.last_coupon_ms = T0 + 1000
    apply_event(state, Event("r0", "u1", EventType.COUPON_REDEEM, T0 + 500, coupon_id="c"))
    assert not state.coupon_redeemed  # redeemed before our coupon was sent: not ours
    apply_event(state, Event("r1", "u1", EventType.COUPON_REDEEM, T0 + 2000, coupon_id="c"))
    apply_event(state, Event("i1", "u1", EventType.OPT_IN, T0 + 3000))
    assert state.coupon_redeemed and not state.opted_out
    assert load_state(dump_state(state)) == state


# Written by state format version 1 (two purchases: 20.0 on day 0, 2 x 35.0 on day 10),
# frozen here: every later version of the code must still load it.
V1_BLOB = bytes.fromhex(
    "01ffffffffffffffff007c291f94010000007c291f940100000014a95294010000007c291f940100000014a952940100"
    "00000000000000000000000000000000000000000000000000000000000000040000000000000000000000f0bf000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000040000000"
    "000080564000000000000008400000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000049040be93f0a3ce880d4046b9c6"
    "7c511402406826425cf6a30040000000004081f14098214f03a20d6a4048b5f240720c5b4005b4d0e9aae65740000000"
    "000002a040be93f0a3ce8819408b728df9a2280c40d14c84b8ec47094000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000002007c291f940100000014a952940100000105"
    "626f6f6b7346b9c67c51142240"
)


def test_version_one_state_loads() -> None:
    state = load_state(V1_BLOB)
    assert state.totals[PURCHASES] == 2
    assert state.totals[SPEND] == 90.0
    assert state.categories.keys() == {"books"}
    assert not state.opted_out and not state.recent_items and state.cap_count == 0  # v2 fields start empty
    assert load_state(dump_state(state)) == state  # rewritten as v5, nothing lost
    assert dump_state(state)[0] == 5


def test_unknown_state_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version 9"):
        load_state(b"\x09" + V1_BLOB[1:])


def test_offsets_skip_duplicates() -> None:
    state = UserState()
    assert apply_event(state, purchase(T0, 10.0), 5) == APPLIED
    assert apply_event(state, purchase(T0, 10.0), 5) == REPLAYED
    assert apply_event(state, purchase(T0, 10.0), 4) == REPLAYED
    assert apply_event(state, purchase(T0, 10.0, n=1), 6) == APPLIED
    assert state.totals[PURCHASES] == 2


def test_a_retried_purchase_counts_once_and_a_new_one_counts() -> None:
    """Five copies of one purchase at five offsets (an at-least-once producer retrying): one purchase."""
    state = UserState()
    order = Event("order-1", "u1", EventType.PURCHASE, T0, price=100.0, order_id="o-1")
    outcomes = [apply_event(state, order, offset) for offset in range(5)]
    assert outcomes == [APPLIED] + [DUPLICATE_EVENT] * 4
    assert state.totals[PURCHASES] == 1 and state.totals[SPEND] == 100.0
    assert apply_event(state, Event("order-2", "u1", EventType.PURCHASE, T0 + 1, price=50.0), 5) == APPLIED
    assert state.totals[PURCHASES] == 2 and state.totals[SPEND] == 150.0


def test_a_purchase_resent_under_a_new_event_id_counts_once_by_its_order_id() -> None:
    state = UserState()
    assert apply_event(state, Event("a", "u1", EventType.PURCHASE, T0, price=30.0, order_id="o-9")) == APPLIED
    assert apply_event(state, Event("b", "u1", EventType.PURCHASE, T0, price=30.0, order_id="o-9")) == DUPLICATE_EVENT
    # A cancellation names the order it cancels: that is no repeat of the purchase.
    cancel = Event("c", "u1", EventType.CANCEL_ORDER, T0 + 5, price=30.0, order_id="o-9")
    assert apply_event(state, cancel) == APPLIED
    assert state.totals[PURCHASES] == 1


def test_the_de_duplication_window_is_the_last_eight_event_ids() -> None:
    state = UserState()
    first = Event("first", "u1", EventType.VIEW, T0)
    apply_event(state, first)
    for i in range(RECENT_EVENT_IDS_KEPT - 1):
        apply_event(state, Event(f"v{i}", "u1", EventType.VIEW, T0 + i + 1))
    assert apply_event(state, first) == DUPLICATE_EVENT  # still within the window
    apply_event(state, Event("one-more", "u1", EventType.VIEW, T0 + 100))
    assert apply_event(state, first) == APPLIED  # pushed out: documented, and counted again
    assert load_state(dump_state(state)) == state


# Written by state format version 2 (a purchase of 20.0 in books, a view of sku-1 in toys,
# opted out, cap window 20089 with 2 sends), frozen here.
V2_BLOB = bytes.fromhex(
    "020100000000000000007c291f94010000007c291f94010000806a601f94010000007c291f94010000007c291f940100"
    "00057c291f9401000000000000000000000000000000000000000000000000040000000800000000000000f0bf000000"
    "0000000000000000000000f03f000000000000000000000000000000000000000000000000000000000000f03f000000"
    "0000003440000000000000f03f0000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000d15541"
    "9f0578f03facf6563bef10f03f5da36ef4f103f03fa2f0278b5001f03f00000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000f03f000000000000f03f000000"
    "000000f03f000000000000f03f0000000000003440000000000000344000000000000034400000000000003440000000"
    "000000f03f000000000000f03f000000000000f03f000000000000f03f00000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000001007c291f940100000205626f6f6b73000000"
    "000000104004746f79735da36ef4f103f03f01794e0201cda98029402774e6595b0700"
)


def test_version_two_state_loads() -> None:
    state = load_state(V2_BLOB)
    assert state.totals[PURCHASES] == 1 and state.totals[SPEND] == 20.0
    assert state.opted_out and state.cap_window_day == 20089 and state.cap_count == 2
    assert state.recent_items == {item_hash("sku-1"): (T0 + 3_600_000) // 3_600_000}
    assert state.recent_event_ids == [] and state.last_coupon_wall_ms == 0  # v3 fields start empty
    assert load_state(dump_state(state)) == state
    assert dump_state(state)[0] == 5


# Written by state format version 3 (a view of sku-1, an order of sku-1 and sku-2 with id o-1,
# a week later one of sku-1 with id o-2, a coupon sent a day in), frozen here.
V3_BLOB = bytes.fromhex(
    "030300000000000000007c291f94010000007c291f940100000000364394010000806a601f9401000000003643940100"
    "00000000000000000000000000000000000000000000000000000000000000040000000000000000000000f0bf000000"
    "000100000000000000000000000000000002000000000000000000000000000000000000000000000000000000008056"
    "400000000000000040000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000f03f000000000000f03f000000000000f03f000000000000f03f000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000ac823e0bf0206040567bab9d770808"
    "4028465aa37e69014060c0962e1972004057230e0e2c29b940162d8bc24a85614018c40b1138b45840fc4e0dc3123257"
    "40ac823e0bf0206040567bab9d7708084028465aa37e69014060c0962e19720040000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000002806a601f00003643940194010105"
    "626f6f6b7328465aa37e69234000794e0101cda98029402774e6585b070000d775670000000003278d8d089ddc84910b"
    "ec83e602da0f3ecd605e3754"
)


def test_version_three_state_loads() -> None:
    state = load_state(V3_BLOB)
    assert state.totals[PURCHASES] == 2 and state.totals[SPEND] == 90.0
    assert state.recent_purchases_ms == [T0 + 3_600_000, T0 + 7 * DAY_MS]
    assert len(state.recent_event_ids) == 3 and len(state.recent_order_ids) == 2
    assert state.last_coupon_wall_ms == T0 + DAY_MS and state.cap_count == 1
    assert state.bought == {}  # v4's items bought start empty: served from the next purchase on
    assert load_state(dump_state(state)) == state
    assert dump_state(state)[0] == 5


def test_reanchoring_keeps_values_over_years() -> None:
    events = [purchase(T0 + i * 30 * DAY_MS, 10.0, n=i) for i in range(40)]  # over three years
    state = replay(events)
    now = events[-1].ts_ms
    expected = sum(10.0 * 0.5 ** ((now - e.ts_ms) / DAY_MS) for e in events)
    assert state.decayed_value(SPEND, 0, now) == pytest.approx(expected)
    assert math.isfinite(state.decayed[SPEND * 4])


@given(user_events(), st.data())
def test_merging_two_halves_equals_the_whole(events: list[Event], data: st.DataObject) -> None:
    mask = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    left = replay([e for e, m in zip(events, mask) if m])
    right = replay([e for e, m in zip(events, mask) if not m])
    whole = replay(events)
    merged = merge_states(left, right)
    now = max(e.ts_ms for e in events) + DAY_MS
    got, want = feature_dict(merged, now), feature_dict(whole, now)
    for name in FEATURE_NAMES:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-9), name
    assert merged.recent_purchases_ms == whole.recent_purchases_ms
    assert merge_states(UserState(), whole) == whole


@given(st.lists(user_events(max_size=20), min_size=1, max_size=6), st.integers(min_value=0, max_value=400 * DAY_MS))
def test_batch_features_match_each_user_alone_and_brute_force(histories: list[list[Event]], later_ms: int) -> None:
    """Feature rows are column-wise over a batch: no user's row may depend on the others'."""
    import statistics

    from retention_model.features.derive import feature_matrix

    states = [replay(events) for events in histories]
    now = [max(e.ts_ms for e in events) + later_ms for events in histories]
    batch = feature_matrix(states, now)
    for i, (events, state) in enumerate(zip(histories, states)):
        assert batch[i].tolist() == feature_matrix([state], [now[i]])[0].tolist()
        named = dict(zip(FEATURE_NAMES, batch[i].tolist()))
        shopping = [e for e in events if e.type not in (EventType.OPT_IN, EventType.OPT_OUT)]
        if not shopping:
            continue
        assert named["recency_days"] == pytest.approx((now[i] - max(e.ts_ms for e in shopping)) / DAY_MS)
        assert named["tenure_days"] == pytest.approx((now[i] - min(e.ts_ms for e in shopping)) / DAY_MS)
        bought = sorted(e.ts_ms for e in events if e.type is EventType.PURCHASE)
        gaps = [(b - a) / DAY_MS for a, b in zip(bought[-8:], bought[-8:][1:])]
        expected_std = statistics.stdev(gaps) if len(gaps) >= 2 else 0.0
        assert named["gap_std_days"] == pytest.approx(expected_std, rel=1e-9, abs=1e-9)
        expected_gap = (bought[-1] - bought[0]) / DAY_MS / (len(bought) - 1) if len(bought) >= 2 else 0.0
        assert named["mean_gap_days"] == pytest.approx(expected_gap, rel=1e-9, abs=1e-9)
        assert named["btyd_x"] == max(0, len(bought) - 1)
        assert 0.0 <= named["btyd_p_alive"] <= 1.0
        assert 0.0 <= named["btyd_p_purchase_30d"] <= named["btyd_p_alive"] + 1e-12


# Written by state format version 4 (an order of sku-1 and sku-2 an hour in, a week later one
# of sku-1: order ids o-1, o-2), frozen here.
V4_BLOB = bytes.fromhex(
    "04ffffffffffffffff007c291f94010000806a601f940100000000364394010000806a601f9401000000003643940100"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000f0bf000000"
    "00000000000000000000000000000000000200000000000000000000000000000000000000000000000000000000002a"
    "400000000000000040000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000ac823e0bf0206040567bab9d770808"
    "4028465aa37e69014060c0962e1972004002a64c191c4a8040c1ea609186093140426c1fdcf56b2b40c5b68f85eb722a"
    "40ac823e0bf0206040567bab9d7708084028465aa37e69014060c0962e19720040000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000002806a601f00003643940194010000"
    "00000000000000000000000002ad6562f217346b6b02da0f3ecd605e375402cda98029402774e6595b0700005c070002"
    "0090f06d6dc6edfd3f020000004d2a063f3aa30e7f595b0700595b07000100000000000000f03f01000000"
)


def test_version_four_state_loads_its_items_bought_as_version_five_keeps_them() -> None:
    state = load_state(V4_BLOB)
    assert state.totals[PURCHASES] == 2 and len(state.recent_order_ids) == 2
    hour = (T0 + 3_600_000) // 3_600_000
    sku1, sku2 = bought_key("sku-1"), bought_key("sku-2")
    # Both weights now as of the second order: sku-2's (1.0 at the first) decays one order.
    assert state.bought == {
        sku1: [hour, hour + 167, 2, to_float32(1.0 + 2**-0.2), 2],
        sku2: [hour, hour, 1, to_float32(2**-0.2), 2],
    }
    assert load_state(dump_state(state)) == state
    assert dump_state(state)[0] == 5


def test_items_bought_out_of_the_wire_range_are_clamped_not_refused() -> None:
    """Fields past 16 bits (an item first bought 8 years before the last purchase, 70,000 orders)
    are capped on the wire, as the state's bytes document, and the rest round-trips."""
    state = UserState()
    last_hour = 1_700_000_000_000 // HOUR_MS
    state.first_seen_ms = state.last_seen_ms = state.last_purchase_ms = last_hour * HOUR_MS
    state.first_purchase_ms = state.anchor_ms = state.first_seen_ms
    eight_years = 8 * 365 * 24
    state.bought = {
        bought_key("old"): [last_hour - eight_years, last_hour - 10, 70_000, to_float32(2.5), 0],
        bought_key("new"): [last_hour - 3, last_hour, 2, to_float32(1.0), 0],
    }
    loaded = load_state(dump_state(state))
    old, new = loaded.bought[bought_key("old")], loaded.bought[bought_key("new")]
    assert old[:4] == [last_hour - 10 - 0xFFFF, last_hour - 10, 0xFFFF, 2.5]
    assert new[:4] == [last_hour - 3, last_hour, 2, 1.0]
