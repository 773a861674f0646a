"""Items bought, kept in the state: the same weights as the offline buy-again, bounded, mergeable, served."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention_model.events import Event, EventType, OrderLine
from retention_model.features.state import DAY_MS, HOUR_MS, UserState, apply_event, dump_state, load_state, merge_states
from retention_model.features.state.bought import (
    BOUGHT_ITEMS_KEPT,
    FIRST,
    LAST,
    ORDERS,
    bought_key,
    decayed_weight,
    to_float32,
)
from retention_model.policy.buy_again import PurchaseHistory, buy_again_scores, purchase_histories, served_scores
from retention_model.policy.recommend import Recommender
from retention_model.policy.recommend_learn import learn_recommendations

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
ITEMS = [f"sku-{i}" for i in range(6)]


def orders_of(baskets: list[list[int]], gap_days: float = 3.0) -> list[Event]:
    """One user's orders in time order, ``gap_days`` apart, each with the listed items as lines."""
    return [
        Event(
            f"o{n}",
            "u1",
            EventType.PURCHASE,
            T0 + int(n * gap_days * DAY_MS),
            price=9.0,
            order_id=f"o{n}",
            items=[OrderLine(ITEMS[i]) for i in basket],
        )
        for n, basket in enumerate(baskets)
    ]


def folded(events: list[Event]) -> UserState:
    state = UserState()
    for event in events:
        apply_event(state, event)
    return state


baskets = st.lists(
    st.lists(st.integers(0, len(ITEMS) - 1), min_size=1, max_size=4, unique=True), min_size=1, max_size=25
)


@given(baskets)
def test_weights_orders_and_times_are_the_offline_history_s(orders: list[list[int]]) -> None:
    """Six items (within the eight kept) bought in time order: only the usual gap is approximate."""
    events = orders_of(orders)
    state = folded(events)
    history = purchase_histories(events)["u1"]
    now = events[-1].ts_ms + 2 * DAY_MS
    offline = buy_again_scores(history, now)
    names = {bought_key(item): item for item in ITEMS}
    served = served_scores(state, names, now)
    assert served.keys() == offline.keys() == set(history.bought_ms)
    n = len(history.orders_ms)
    for item, times in history.bought_ms.items():
        entry = state.bought[bought_key(item)]
        assert (entry[FIRST], entry[LAST], entry[ORDERS]) == (times[0] // HOUR_MS, times[-1] // HOUR_MS, len(times))
        order_numbers = [history.orders_ms.index(t) + 1 for t in times]
        # Float32 weights since state version 5: a few 1e-8 off per order.
        assert decayed_weight(entry, n) == pytest.approx(sum(2.0 ** (-(n - k) / 5) for k in order_numbers), rel=1e-6)
        if len(times) <= 3:  # up to two gaps, their mean is their median: the same score and reason
            assert served[item][0] == pytest.approx(offline[item][0], rel=1e-6)
            assert served[item][1] == offline[item][1]


def test_the_lightest_item_leaves_first_and_the_state_stays_bounded() -> None:
    names = [f"item-{i}" for i in range(20)]
    state = UserState()
    for n in range(20):  # a staple in every order, and a new item each time
        lines = [OrderLine("staple"), OrderLine(names[n])]
        apply_event(state, Event(f"o{n}", "u1", EventType.PURCHASE, T0 + n * DAY_MS, price=1.0, items=lines))
    assert len(state.bought) == BOUGHT_ITEMS_KEPT
    kept = set(state.bought)
    assert bought_key("staple") in kept
    assert kept - {bought_key("staple")} == {bought_key(name) for name in names[-(BOUGHT_ITEMS_KEPT - 1) :]}
    staple = state.bought[bought_key("staple")]
    assert decayed_weight(staple, 20) == pytest.approx(sum(2.0 ** (-k / 5) for k in range(20)))


@given(baskets, st.data())
def test_merging_a_time_split_history_gives_the_whole_s_items(orders: list[list[int]], data: st.DataObject) -> None:
    events = orders_of(orders)
    split = data.draw(st.integers(0, len(events)))
    whole = folded(events)
    merged = merge_states(folded(events[:split]), folded(events[split:]))
    assert merged.bought.keys() == whole.bought.keys()
    for item, entry in whole.bought.items():
        got = merged.bought[item]
        assert got[:3] == entry[:3]
        assert decayed_weight(got, len(events)) == pytest.approx(decayed_weight(entry, len(events)), rel=1e-6)


def test_the_worker_serves_buy_again_from_its_state() -> None:
    shop = orders_of([[0, 1], [0, 2], [0, 1], [0, 3]], gap_days=7.0)
    others = [
        Event(f"x{n}", f"v{n}", EventType.PURCHASE, T0 + n * DAY_MS, price=1.0, items=[OrderLine(ITEMS[4 + n % 2])])
        for n in range(12)
    ]  # other users make sku-4 and sku-5 the best sellers
    recommender = Recommender.from_dict(learn_recommendations(shop + others))
    state = folded(shop)
    now = shop[-1].ts_ms + 7 * DAY_MS
    served = recommender.recommend(state, [], 3, now)
    offline = recommender.recommend_history(purchase_histories(shop)["u1"], now, 3, state.categories)
    assert [entry["item_id"] for entry in served["items"]][:2] == ["sku-0", "sku-1"]
    assert served["items"][0]["because"] == "bought every 7 days, last 7 days ago"
    assert served["strategy"] == "buy_again+co_purchase+popularity"
    assert [entry["item_id"] for entry in served["items"]] == [entry["item_id"] for entry in offline["items"]]
    # Without the time the worker decides at, the payload falls back to what it served before.
    assert recommender.recommend(state, [], 3)["strategy"] != served["strategy"]
    assert math.isfinite(served["items"][0]["score"])


def test_a_purchase_with_no_item_leaves_the_items_bought_empty() -> None:
    state = folded([Event("o1", "u1", EventType.PURCHASE, T0, price=5.0)])
    assert state.bought == {}
    assert served_scores(state, {}, T0) == {}
    assert PurchaseHistory().orders_ms == []


def test_a_purchase_without_items_moves_the_weights_on_and_the_state_still_round_trips() -> None:
    # State version 5 keeps one order number for all weights: the user's purchase count.
    state = folded([*orders_of([[0]]), Event("p1", "u1", EventType.PURCHASE, T0 + DAY_MS, price=3.0)])
    assert state.bought[bought_key(ITEMS[0])][3:] == [to_float32(2.0**-0.2), 2]
    assert load_state(dump_state(state)) == state
