"""Recommendations from order lines: buy again on the user's rhythm, co-purchase, popularity."""

from __future__ import annotations

import pytest

from retention_model.events import Event, EventType, OrderLine
from retention_model.features.state import DAY_MS, UserState, apply_event
from retention_model.policy.buy_again import BuyAgainConfig, PurchaseHistory, buy_again_scores, purchase_histories
from retention_model.policy.recommend import Recommender
from retention_model.policy.recommend_learn import learn_recommendations

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def order(user: str, day: float, items: list[str], n: int = 0) -> Event:
    lines = [OrderLine(item, item.split("-")[0]) for item in items]
    return Event(f"{user}-{day}-{n}", user, EventType.PURCHASE, T0 + int(day * DAY_MS), price=10.0, items=lines)


def ranked(payload: dict) -> list[str]:
    return [entry["item_id"] for entry in payload["items"]]


def test_an_item_on_its_rhythm_outranks_one_long_overdue() -> None:
    # milk every 7 days, last 7 days ago; jam every 7 days too, but last 40 days ago (dropped?)
    history = purchase_histories(
        [
            order("u", 0, ["dairy-milk", "food-jam"]),
            order("u", 7, ["dairy-milk", "food-jam"]),
            order("u", 14, ["dairy-milk"]),
            order("u", 21, ["dairy-milk"]),
        ]
    )["u"]
    scores = buy_again_scores(history, T0 + 28 * DAY_MS)
    assert scores["dairy-milk"][1] == "bought every 7 days, last 7 days ago"
    assert scores["dairy-milk"][0] > scores["food-jam"][0]
    # Overdue weighs less than the same orders would without the rhythm factor.
    flat = buy_again_scores(history, T0 + 28 * DAY_MS, BuyAgainConfig(overdue_power=0.0))
    assert scores["food-jam"][0] < flat["food-jam"][0]
    assert scores["dairy-milk"][0] == flat["dairy-milk"][0]  # on time: not touched


def test_recent_orders_weigh_more_than_old_ones() -> None:
    history = purchase_histories(
        [order("u", 0, ["a-old"]), order("u", 1, ["a-old"]), order("u", 50, ["b-new"]), order("u", 51, ["b-new"])]
    )["u"]
    scores = buy_again_scores(history, T0 + 52 * DAY_MS, BuyAgainConfig(overdue_power=0.0))
    assert scores["b-new"][0] > scores["a-old"][0]


def test_buy_again_config_rejects_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="half_life_orders > 0"):
        BuyAgainConfig(half_life_orders=0)
    with pytest.raises(ValueError, match="early_floor must be within"):
        BuyAgainConfig(early_floor=2)


def shop() -> list[Event]:
    """Bread goes with butter; milk is the best seller; jam is bought once."""
    events = [order(f"b{i}", i, ["bakery-bread", "dairy-butter"]) for i in range(3)]
    events += [order(f"m{i}", i, ["dairy-milk"]) for i in range(5)]
    events += [order("j", 1, ["food-jam"])]
    return sorted(events, key=lambda e: e.ts_ms)


def test_each_order_without_a_session_is_its_own_basket() -> None:
    table = learn_recommendations([order("u", 0, ["x-a", "x-b"]), order("u", 1, ["x-c"])])
    assert table["baskets"] == 2
    assert "x-c" not in table["also_bought"]  # never in an order with a or b
    assert table["popular_overall"][0] == ["x-c", 1]  # ties: the item bought last first


def test_history_ranks_own_repeats_then_their_co_purchases_then_best_sellers() -> None:
    recommender = Recommender.from_dict(learn_recommendations(shop()))
    mine = purchase_histories([order("u", 0, ["bakery-bread"]), order("u", 7, ["bakery-bread"])])["u"]
    payload = recommender.recommend_history(mine, T0 + 14 * DAY_MS, 4)
    assert ranked(payload) == ["bakery-bread", "dairy-butter", "dairy-milk", "food-jam"]
    assert [entry["because"] for entry in payload["items"][:2]] == [
        "bought every 7 days, last 7 days ago",
        "often bought with bakery-bread",
    ]
    scores = [entry["score"] for entry in payload["items"]]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)  # no ties, no padding


def test_a_user_without_history_gets_best_sellers_without_equal_scores() -> None:
    events = [order(f"u{i}", i, [f"x-{i % 4}"]) for i in range(8)]  # four items, two orders each
    recommender = Recommender.from_dict(learn_recommendations(events))
    payload = recommender.recommend_history(PurchaseHistory(), T0 + 9 * DAY_MS, 3)
    # Equal counts: the item bought last comes first (x-3 on day 7, x-2 on day 6, ...).
    assert ranked(payload) == ["x-3", "x-2", "x-1"]
    scores = [entry["score"] for entry in payload["items"]]
    assert len(set(scores)) == 3
    served = recommender.recommend(UserState(), [], 3)  # the worker's path falls back to them too
    assert ranked(served) == ["x-3", "x-2", "x-1"]
    assert all(entry["because"] == "popular" for entry in served["items"])


def test_an_older_bundle_without_overall_popularity_still_loads() -> None:
    table = learn_recommendations(shop())
    del table["popular_overall"]
    recommender = Recommender.from_dict(table)
    assert ranked(recommender.recommend(UserState(), ["dairy"], 2)) == ["dairy-milk", "dairy-butter"]


def test_best_sellers_of_each_category_weigh_by_its_share_of_the_profile() -> None:
    # a-1 and b-1 sell 10 each, a-2 8; d-1 once.
    counts = {"a-1": 10, "a-2": 8, "b-1": 10, "c-1": 1, "d-1": 1}
    events = [order(f"s{item}{n}", n, [item]) for item, many in counts.items() for n in range(many)]
    recommender = Recommender.from_dict(learn_recommendations(sorted(events, key=lambda e: e.ts_ms)))
    # Nearly as much interest in b as in a: b's best seller comes before a's second
    # (ranking categories by position alone would put a-2 first).
    payload = recommender.recommend_history(PurchaseHistory(), T0 + 20 * DAY_MS, 3, {"a": 10.0, "b": 9.9, "c": 1.0})
    assert ranked(payload) == ["a-1", "b-1", "a-2"]
    assert [c["category"] for c in payload["categories"]] == ["a", "b", "c"]
    # Every category the profile keeps counts, not only the top three.
    spread = recommender.recommend_history(PurchaseHistory(), T0 + 20 * DAY_MS, 5, dict.fromkeys("abcd", 1.0))
    assert {entry["item_id"]: entry["because"] for entry in spread["items"]}["d-1"] == "popular in d"


def test_the_worker_blends_the_profile_s_categories_as_the_offline_path_does() -> None:
    history = [order("u", 0, ["dairy-milk", "food-jam"]), order("u", 7, ["dairy-milk"])]
    views = [
        Event(f"v{n}", "u", EventType.VIEW, T0 + int((8 + n) * DAY_MS), item_id="bakery-bread", category="bakery")
        for n in range(6)
    ]
    state = UserState()
    for event in sorted(history + views, key=lambda e: e.ts_ms):
        apply_event(state, event)
    recommender = Recommender.from_dict(learn_recommendations(shop()))
    now = T0 + 15 * DAY_MS
    served = recommender.recommend(state, ["bakery", "dairy", "food"], 5, now)
    offline = recommender.recommend_history(purchase_histories(history)["u"], now, 5, state.categories)
    assert ranked(served) == ranked(offline)
    assert served["categories"] == offline["categories"]
    assert served["categories"][0]["category"] == "bakery"  # viewed most: the profile's top category
    assert "bakery-bread" in ranked(served)  # its best seller, never bought by this user
