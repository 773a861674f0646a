"""The blend and the list without purchases, over arrays: exactly the lists that scoring item by item gives.

The references below are the two as first written, one item and one term at a
time, every term's reason kept. The shipped ones add whole rows of arrays and work
out the reasons of the listed items only; the lists, scores and reasons must not change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from retention_model.features.state import PURCHASES_SIGNAL, TOP_CATEGORIES_KEPT, UserState, apply_event
from retention_model.features.state.bought import orders_weight
from retention_model.policy.buy_again import served_scores
from retention_model.policy.recommend import Blend, Recommender, _shares
from retention_model.policy.recommend_learn import learn_recommendations
from training.simulator import SimConfig, simulate_users


def reference_blend(
    rec: Recommender, again: dict[str, tuple[float, str]], orders: float, k: int, categories: Mapping[str, float]
) -> list[tuple[str, float, str]]:
    blend = rec.blend
    scores: dict[str, float] = {}
    parts: dict[str, dict[str, float]] = defaultdict(dict)

    def add(item: str, value: float, why: str) -> None:
        scores[item] = scores.get(item, 0.0) + value
        parts[item][why] = parts[item].get(why, 0.0) + value

    for item, (score, why) in again.items():
        add(item, score / orders, why)
    for seed in sorted(again, key=lambda i: (-again[i][0], i))[: blend.seeds]:
        weight = again[seed][0] / orders
        for other, similarity in rec.also_bought.get(seed, []):
            add(other, blend.co_purchase * weight * similarity, f"often bought with {seed}")
    ranked = sorted(sorted(categories), key=categories.__getitem__, reverse=True)[:TOP_CATEGORIES_KEPT]
    heaviest = categories[ranked[0]] if ranked else 0.0
    for category in ranked:
        weight = blend.category * categories[category] / heaviest if heaviest > 0 else 0.0
        if weight > 0:
            for item, share in _shares(rec.popular.get(category, [])):
                add(item, weight * share, f"popular in {category}")
    for item, share in _shares(rec.popular_overall[: 2 * k]):
        add(item, blend.popular * share, "popular")
    top = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    return [(i, round(scores[i], 6), max(parts[i], key=lambda w: (parts[i][w], w))) for i in top]


def reference_build(rec: Recommender, recent: list[str], top: list[str], k: int) -> list[tuple[str, float, str]]:
    scores: dict[str, float] = {}
    because: dict[str, str] = {}

    def offer(item: str, value: float, why: str) -> None:
        if item not in recent and value > scores.get(item, 0.0):
            scores[item], because[item] = value, why

    for rank, seed in enumerate(recent):
        for other, score in rec.also_bought.get(seed, []):
            offer(other, score / (1 + rank), f"often bought with {seed}")
    for rank, category in enumerate(top):
        for item, share in _shares(rec.popular.get(category, [])):
            offer(item, 0.5 / (1 + rank) * share, f"popular in {category}")
    for item, share in _shares(rec.popular_overall[: 2 * k]):
        offer(item, 0.05 * share, "popular")
    return [(i, round(scores[i], 6), because[i]) for i in sorted(scores, key=lambda i: (-scores[i], i))[:k]]


def listed(payload: dict[str, Any]) -> list[tuple[str, float, str]]:
    return [(e["item_id"], e["score"], e["because"]) for e in payload["items"]]


def test_every_simulated_buyer_gets_the_reference_list() -> None:
    per_user, _ = simulate_users(SimConfig(users=300, days=90, seed=5))
    events = sorted((e for user in per_user for e in user), key=lambda e: e.ts_ms)
    rec = Recommender.from_dict(learn_recommendations(events))
    states: dict[str, UserState] = {}
    for offset, event in enumerate(events):
        apply_event(states.setdefault(event.user_id, UserState()), event, offset)
    now = events[-1].ts_ms
    buyers = 0
    for state in states.values():
        recent = [
            rec.item_by_hash[h]
            for h, _ in sorted(state.recent_items.items(), key=lambda kv: -kv[1])
            if h in rec.item_by_hash
        ]
        top = sorted(state.categories, key=lambda c: (-state.categories[c], c))[:3]
        assert listed(rec._build(recent, top, 10)) == reference_build(rec, recent, top, 10)
        again = served_scores(state, rec._bought_names(), now, rec.buy_again) if state.bought else {}
        if not again:
            continue
        buyers += 1
        orders = orders_weight(int(state.totals[PURCHASES_SIGNAL]))
        for k in (5, 10):
            served = rec.recommend(state, [], k, now)
            assert listed(served) == reference_blend(rec, again, orders, k, state.categories)
    assert buyers > 100


@pytest.mark.parametrize("seed", range(40))
def test_items_on_several_category_lists_and_thin_lists_still_get_the_reference_list(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = [f"i{n:03d}" for n in range(60)]
    categories = [f"c{n}" for n in range(6)]
    popular = {
        c: [
            (str(i), int(n))
            for i, n in zip(
                rng.choice(items, size=int(rng.integers(0, 30)), replace=False),
                sorted(rng.integers(1, 50, size=30), reverse=True),
            )
        ]
        for c in categories
    }
    # Odd seeds: an item may come twice in a co-purchase row (its terms add up, in order).
    twice = bool(seed % 2)
    also = {i: [(str(o), float(rng.random())) for o in rng.choice(items, size=5, replace=twice)] for i in items[:20]}
    overall = [(i, 100 - n) for n, i in enumerate(items[:25])]
    rec = Recommender(also, popular, {i: categories[n % 6] for n, i in enumerate(items)}, {}, overall)
    again = {str(i): (float(rng.random()), f"bought {n} times") for n, i in enumerate(rng.choice(items, size=8))}
    profile = {str(c): float(rng.integers(0, 4)) for c in rng.choice([*categories, "c-unlisted"], size=4)}
    recent = list(dict.fromkeys(str(i) for i in rng.choice(items, size=4)))
    top = list(dict.fromkeys(str(c) for c in rng.choice([*categories, "c-unlisted"], size=3)))
    for k in (3, 10):
        assert listed(rec._blend(again, 2.5, k, profile)) == reference_blend(rec, again, 2.5, k, profile)
        assert listed(rec._build(recent, top, k)) == reference_build(rec, recent, top, k)
    # Co-purchase weighed up, so that its reasons (and their sums over repeated items) win often.
    led = Recommender(also, popular, rec.category_of, {}, overall, Blend(co_purchase=2.0, category=0.1))
    for k in (3, 10):
        assert listed(led._blend(again, 2.5, k, profile)) == reference_blend(led, again, 2.5, k, profile)


def test_without_purchases_an_item_keeps_its_first_best_offer_and_nothing_is_offered_at_zero() -> None:
    rec = Recommender({"a": [("x", 0.5), ("z", 0.0)]}, {"c": [("x", 10)]}, {"x": "c", "z": "c"}, {}, [])
    # 0.5 from the co-purchase of "a", then 0.5 / 1 * 1.0 from the best sellers of "c": a tie.
    assert listed(rec._build(["a"], ["c"], 5)) == [("x", 0.5, "often bought with a")]
    assert listed(rec._build(["a"], ["c"], 5)) == reference_build(rec, ["a"], ["c"], 5)


def test_an_item_twice_in_a_co_purchase_row_has_both_terms_in_its_reason() -> None:
    # x is listed twice by seed a: 0.3 + 0.3 from co-purchase beats 0.5 from the best sellers of c.
    rec = Recommender({"a": [("x", 0.3), ("x", 0.3)]}, {"c": [("x", 10)]}, {}, {}, [], Blend(1.0, 0.5))
    again = {"a": (1.0, "bought once")}
    served = listed(rec._blend(again, 1.0, 5, {"c": 1.0}))
    assert served == reference_blend(rec, again, 1.0, 5, {"c": 1.0})
    assert ("x", 1.1, "often bought with a") in served


def test_an_item_bought_only_on_its_own_is_ranked_by_buy_again_alone() -> None:
    # Issue 21: on the Instacart sample an item in single-item orders only is in no table;
    # the blend over arrays raised KeyError on it.
    rec = Recommender({"a": [("x", 0.5)], "x": [("a", 0.5)]}, {}, {}, {}, [("x", 3), ("a", 2)])
    again = {"solo": (2.0, "bought 2 times"), "a": (1.0, "bought once"), "zz": (0.001, "bought once")}
    for k in (1, 2, 10):
        assert listed(rec._blend(again, 2.0, k, {})) == reference_blend(rec, again, 2.0, k, {})
    assert listed(rec._blend(again, 2.0, 2, {}))[0] == ("solo", 1.0, "bought 2 times")


def test_an_items_terms_are_added_in_the_blends_order_to_the_bit() -> None:
    # b: 0.1 (buy-again) + 0.2 (co-purchase) + 0.3 (category) = 0.6000000000000001 in that order,
    # 0.6 in the reverse; a: 0.6 from the overall best sellers. Only the order of the sum puts b
    # first (a tie would go to a, by name).
    rec = Recommender({"b": [("b", 2.0)]}, {"c": [("b", 10)]}, {}, {}, [("a", 5)], Blend(1.0, 0.3, 0.6))
    again = {"b": (0.1, "bought once")}
    served = listed(rec._blend(again, 1.0, 2, {"c": 1.0}))
    assert served == reference_blend(rec, again, 1.0, 2, {"c": 1.0})
    assert [item for item, _, _ in served] == ["b", "a"]
