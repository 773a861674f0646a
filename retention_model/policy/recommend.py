"""Recommendation payloads: the user's own items and categories, blended with what
other buyers bought together (the table :mod:`~retention_model.policy.recommend_learn`
learns offline, shipped in the model bundle).

Serving starts from the user's recent items (kept in state as hashes) and top
categories, with overall popularity as the fallback, and needs nothing but that
table. With a user's purchase history (offline, see
:mod:`retention_model.policy.buy_again`) the user's own repeat purchases come first.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retention_model.features.state import PURCHASES_SIGNAL, TOP_CATEGORIES_KEPT, UserState, item_hash
from retention_model.features.state.bought import bought_names, orders_weight
from retention_model.policy.blend_index import BlendIndex, Row, row_terms, term_reason
from retention_model.policy.buy_again import (
    BuyAgainConfig,
    PurchaseHistory,
    buy_again_scores,
    served_scores,
)

__all__ = ["Blend", "Recommender", "payload", "unbuilt_recommendation"]

#: Bound on remembered payloads (cleared when full: cheap, and recent users refill it).
_BUILT_KEPT = 65_536


def _shares(found: list[tuple[str, int]]) -> list[tuple[str, float]]:
    """Count / top count, nudged down by position (under 0.1%) so no two items tie."""
    if not found:
        return []
    top, n = found[0][1] or 1, len(found)
    return [(item, count / top * (1.0 - 1e-3 * pos / n)) for pos, (item, count) in enumerate(found)]


def unbuilt_recommendation(top_categories: list[str]) -> dict[str, Any]:
    """The payload of a suppressed recommendation: the user's categories, no items.

    Nobody receives it, and ranking items is the costliest step per scored user, so
    they are not worked out; ``strategy`` says so.
    """
    return {
        "strategy": "not_built",
        "items": [],
        "categories": [{"category": c, "rank": i + 1} for i, c in enumerate(top_categories)],
        "seed_items": [],
    }


def payload(
    scores: Mapping[str, float],
    because: Mapping[str, str],
    category_of: Mapping[str, str],
    max_items: int,
    strategy: str,
    top_categories: list[str],
    seeds: list[str],
) -> dict[str, Any]:
    """The recommendation topic's payload: the ``max_items`` best-scored items (ties by id), each with why."""
    ranked = sorted(scores, key=lambda i: (-scores[i], i))[:max_items]
    return {
        "strategy": strategy,
        "items": [
            {
                "item_id": item,
                "category": category_of.get(item),
                "rank": i + 1,
                "score": round(scores[item], 6),
                "because": because[item],
            }
            for i, item in enumerate(ranked)
        ],
        "categories": [{"category": c, "rank": i + 1} for i, c in enumerate(top_categories)],
        "seed_items": seeds,
    }


@dataclass(frozen=True)
class Blend:
    """Weights of the evidence beside buy-again (chosen on an earlier cutoff than the one reported).

    A category's best sellers weigh ``category`` times the category's weight in the user's
    profile over the heaviest one's, for every category the profile keeps: a user whose
    attention is spread gets several categories, one who shops in one mostly that one.
    Chosen on validation logs (a simulator run with another seed, the reported one a
    month earlier): weighing by profile share lifted hit rate@10 by 0.015 on average
    over weighing the top three by rank alone (docs/policy.md).
    """

    co_purchase: float = 0.03
    category: float = 0.2
    popular: float = 0.01
    #: The user's items (by buy-again score) that seed co-purchase.
    seeds: int = 20


@dataclass(frozen=True)
class Recommender:
    """Serves ranked item lists from a learned table (empty: categories only)."""

    also_bought: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    popular: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    category_of: dict[str, str] = field(default_factory=dict)
    item_by_hash: dict[int, str] = field(default_factory=dict)
    popular_overall: list[tuple[str, int]] = field(default_factory=list)
    blend: Blend = field(default_factory=Blend)
    buy_again: BuyAgainConfig = field(default_factory=BuyAgainConfig)
    #: Payloads already built, by (seed items, categories, size). A user re-scored
    #: while nothing they saw changed gets the same payload; built once, it is read
    #: only (serialised, never mutated), so sharing it is safe.
    _built: dict[tuple[tuple[str, ...], tuple[str, ...], int], dict[str, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )
    #: Each category's best sellers as :func:`_shares`, computed once: every served
    #: buyer's payload reads up to eight categories' lists.
    _category_shares: dict[str, list[tuple[str, float]]] = field(default_factory=dict, compare=False, repr=False)
    #: The :class:`~.blend_index.BlendIndex`, once built.
    _lookups: list[BlendIndex] = field(default_factory=list, compare=False, repr=False)
    #: Item names by the key the state keeps items bought under, once built.
    _names_bought: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any] | None, blend: Blend | None = None, buy_again: BuyAgainConfig | None = None
    ) -> Recommender:
        """Build from :func:`learn_recommendations` output (as stored in a bundle; older ones lack some keys)."""
        blend, buy_again = blend or Blend(), buy_again or BuyAgainConfig()
        if not data:
            return cls(blend=blend, buy_again=buy_again)
        also = {item: [(str(o), float(s)) for o, s in found] for item, found in data.get("also_bought", {}).items()}
        popular = {c: [(str(i), int(n)) for i, n in found] for c, found in data.get("popular", {}).items()}
        overall = [(str(i), int(n)) for i, n in data.get("popular_overall", [])]
        category_of = dict(data.get("category_of", {}))
        known = set(also) | set(category_of) | {item for item, _ in overall}
        by_hash = {item_hash(item): item for item in known}
        return cls(also, popular, category_of, by_hash, overall, blend, buy_again)

    def recommend(
        self, state: UserState, top_categories: list[str], max_items: int, now_ms: int | None = None
    ) -> dict[str, Any]:
        """Payload for the recommendation topic: ranked items with why, and categories.

        With ``now_ms`` and items bought that the bundle can name, buy-again first, blended
        as :meth:`recommend_history` does (from the state's summary of the purchases, see
        :func:`~retention_model.policy.buy_again.served_scores`, and its category profile);
        otherwise co-purchase neighbours of recently viewed or carted items and
        ``top_categories``' best sellers. The returned dict may be shared between calls: do
        not modify it.
        """
        if now_ms is not None and state.bought:
            again = served_scores(state, self._bought_names(), now_ms, self.buy_again)
            if again:
                orders = orders_weight(int(state.totals[PURCHASES_SIGNAL]))
                return self._blend(again, orders, max_items, state.categories)
        recent = [
            self.item_by_hash[h]
            for h, _ in sorted(state.recent_items.items(), key=lambda kv: -kv[1])
            if h in self.item_by_hash
        ]
        key = (tuple(recent), tuple(top_categories), max_items)
        payload = self._built.get(key)
        if payload is None:
            if len(self._built) >= _BUILT_KEPT:
                self._built.clear()
            payload = self._built[key] = self._build(recent, top_categories, max_items)
        return payload

    def _build(self, recent: list[str], top_categories: list[str], max_items: int) -> dict[str, Any]:
        """Co-purchase neighbours of the recent items, the categories' and overall best sellers:
        each item keeps its best offer and that offer's reason (the first, on a tie), never a
        recent item itself and nothing offered at zero; over the offers' terms, as :meth:`_blend`."""
        index = self.index()
        cols: list[np.ndarray] = []
        values: list[np.ndarray] = []
        reasons: list[str] = []

        def offer(row: Row | None, scale: float, why: str, divide: bool = False) -> None:
            if row is not None and len(row[0]):
                cols.append(row[0])
                values.append(row[1] / scale if divide else scale * row[1])
                reasons.append(why)

        for rank, seed in enumerate(recent):
            offer(index.also.get(seed), float(1 + rank), f"often bought with {seed}", divide=True)
        for rank, category in enumerate(top_categories):
            offer(index.lists.get(category), 0.5 / (1 + rank), f"popular in {category}")
        offer(index.overall(max_items, self._overall_best_sellers), 0.05, "popular")
        top: dict[str, float] = {}
        because: dict[str, str] = {}
        if cols:
            terms, offered = np.concatenate(cols), np.concatenate(values)
            source = np.repeat(np.arange(len(reasons)), [len(c) for c in cols])
            keep = offered > 0
            if recent:
                keep &= ~np.isin(terms, [index.position[item] for item in recent])
            items, best, winner = index.best_terms(terms[keep], offered[keep])
            listed = np.lexsort((items, -best))[:max_items]
            whose = source[keep][winner[listed]].tolist()
            for item, score, why in zip(items[listed].tolist(), best[listed].tolist(), whose, strict=True):
                top[index.items[item]], because[index.items[item]] = score, reasons[why]
        strategy = "co_purchase+category_popularity" if self.also_bought else "top_categories"
        return payload(top, because, self.category_of, max_items, strategy, top_categories, recent)

    def recommend_history(
        self,
        history: PurchaseHistory,
        now_ms: int,
        max_items: int,
        categories: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """Payload for a user whose purchase history is known: buy-again first, then co-purchase,
        category and overall popularity (the offline evaluation's path; serving lacks the history).

        ``categories`` is the user's category profile (name -> weight, as
        :attr:`UserState.categories` keeps it); without one, the categories of their own purchases.
        """
        again = buy_again_scores(history, now_ms, self.buy_again)
        decay = math.log(2) / self.buy_again.half_life_orders
        orders = sum(math.exp(-decay * k) for k in range(len(history.orders_ms))) or 1.0
        return self._blend(again, orders, max_items, categories)

    def _blend(
        self,
        again: dict[str, tuple[float, str]],
        orders: float,
        max_items: int,
        categories: Mapping[str, float] | None,
    ) -> dict[str, Any]:
        """Buy-again scores (``orders``: their scale) blended with co-purchase, category and overall popularity.

        Over arrays of the terms (:mod:`.blend_index`); each item's terms are added in
        the same order as a term-by-term sum would, so the scores are the same to the
        bit, and the reasons are worked out for the listed items only.
        """
        blend, index = self.blend, self.index()
        position = index.position
        # An item bought only on its own is in no table (offline only: the worker keeps
        # items the bundle can name); it has buy-again alone and joins the ranking below.
        unlisted = {item: again[item][0] / orders for item in again if item not in position}
        known = [item for item in again if item in position]
        # The terms, in the order a term-by-term sum adds them: buy-again (about the share of
        # recent orders each item was in), the seeds' co-purchase rows, categories, overall.
        own = (
            np.fromiter((position[item] for item in known), dtype=np.int64, count=len(known)),
            np.fromiter((again[i][0] / orders for i in known), dtype=np.float64, count=len(known)),
        )
        rows: list[tuple[Row, float]] = []
        seeds = sorted(again, key=lambda i: (-again[i][0], i))[: blend.seeds]
        seed_weights = {seed: blend.co_purchase * (again[seed][0] / orders) for seed in seeds}
        for seed, weight in seed_weights.items():
            row = index.also.get(seed)
            if row is not None:
                rows.append((row, weight))
        weights: Mapping[str, float] = categories or self._bought_categories(again)
        # Heaviest first, ties by name, as the profile ranks them (features.derive.profile).
        ranked = sorted(sorted(weights), key=weights.__getitem__, reverse=True)[:TOP_CATEGORIES_KEPT]
        heaviest = weights[ranked[0]] if ranked else 0.0
        weighted = [(c, blend.category * weights[c] / heaviest) for c in ranked] if heaviest > 0 else []
        weighted = [(c, w) for c, w in weighted if w > 0]
        for category, weight in weighted:
            row = index.lists.get(category)
            if row is not None:
                rows.append((row, weight))
        rows.append((index.overall(max_items, self._overall_best_sellers), blend.popular))
        items, sums = index.sum_terms(*row_terms(rows, first=own))
        listed = np.lexsort((items, -sums))[:max_items]
        top = {index.items[i]: s for i, s in zip(items[listed].tolist(), sums[listed].tolist(), strict=True)}
        if unlisted:
            top.update(unlisted)
            top = {item: top[item] for item in sorted(top, key=lambda i: (-top[i], i))[:max_items]}
        overall_share = index.overall_shares(max_items, self._overall_best_sellers)
        by_category = dict(weighted)
        because = {
            item: term_reason(index, item, again, orders, seed_weights, by_category, overall_share, blend.popular)
            for item in top
        }
        return payload(top, because, self.category_of, max_items, "buy_again+co_purchase+popularity", ranked[:3], [])

    def _overall_best_sellers(self, size: int) -> list[tuple[str, float]]:
        """The overall best sellers offered for lists of ``size``, with their shares."""
        return _shares(self.popular_overall[: 2 * size])

    def _shares_of(self, category: str) -> list[tuple[str, float]]:
        shares = self._category_shares.get(category)
        if shares is None:
            shares = self._category_shares[category] = _shares(self.popular.get(category, []))
        return shares

    def index(self) -> BlendIndex:
        """The tables as arrays, built on first use (the recommender is read only)."""
        if not self._lookups:
            shares = {category: self._shares_of(category) for category in self.popular}
            self._lookups.append(BlendIndex.build(self.also_bought, shares, self.popular_overall, self.category_of))
        return self._lookups[0]

    def _bought_names(self) -> dict[int, str]:
        """Names by :func:`~retention_model.features.state.bought.bought_key`, built on first use."""
        if not self._names_bought and self.item_by_hash:
            self._names_bought.update(bought_names(self.item_by_hash))
        return self._names_bought

    def _bought_categories(self, again: Mapping[str, tuple[float, str]]) -> dict[str, float]:
        """Category weights from the user's own items' buy-again scores (no profile at hand)."""
        weights: Counter[str] = Counter()
        for item, (score, _) in again.items():
            if item in self.category_of:
                weights[self.category_of[item]] += score
        return dict(weights)
