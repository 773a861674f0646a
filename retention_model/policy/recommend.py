"""Recommendation payloads: the user's own items and categories, blended with what
other buyers bought together, learned offline and shipped in the model bundle.

Learning counts items that shared a purchasing basket (an order's lines, and the
items carted in a session that ended in a purchase) and scores pairs by cosine similarity of their
basket sets; it also ranks items by popularity within each category. Serving
starts from the user's recent items (kept in state as hashes) and top
categories, and needs nothing but this table.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from retention_model.events import Event, EventType
from retention_model.features.state import UserState, item_hash

__all__ = ["Recommender", "learn_recommendations"]

_BASKET_TYPES = (EventType.ADD_TO_CART, EventType.PURCHASE)
#: Bound on remembered payloads (cleared when full: cheap, and recent users refill it).
_BUILT_KEPT = 65_536


def learn_recommendations(events: Iterable[Event], neighbours: int = 10, per_category: int = 20) -> dict[str, Any]:
    """Co-purchase neighbours per item and popular items per category, JSON-ready."""
    carted: dict[tuple[str, str], set[str]] = defaultdict(set)
    purchased_sessions: set[tuple[str, str]] = set()
    category_of: dict[str, str] = {}
    for event in events:
        session = (event.user_id, event.session_id or event.user_id)
        if event.type is EventType.PURCHASE:
            purchased_sessions.add(session)
            for line in event.items or ():  # an order's lines are its basket, carts or not
                carted[session].add(line.item_id)
                if line.category is not None:
                    category_of[line.item_id] = line.category
        if event.type in _BASKET_TYPES and event.item_id is not None:
            carted[session].add(event.item_id)
            if event.category is not None:
                category_of[event.item_id] = event.category
    popularity: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    for session, items in carted.items():
        if session not in purchased_sessions:
            continue
        popularity.update(items)
        ordered = sorted(items)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                pairs[a, b] += 1
    related: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for (a, b), together in pairs.items():
        score = together / math.sqrt(popularity[a] * popularity[b])
        related[a].append((score, b))
        related[b].append((score, a))
    by_category: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for item, count in popularity.items():
        by_category[category_of.get(item, "")].append((count, item))
    return {
        "also_bought": {
            item: [[other, round(score, 4)] for score, other in sorted(found, key=lambda p: (-p[0], p[1]))[:neighbours]]
            for item, found in sorted(related.items())
        },
        "popular": {
            category: [[item, count] for count, item in sorted(found, key=lambda p: (-p[0], p[1]))[:per_category]]
            for category, found in sorted(by_category.items())
            if category
        },
        "category_of": dict(sorted(category_of.items())),
        "baskets": len(purchased_sessions),
    }


@dataclass(frozen=True)
class Recommender:
    """Serves ranked item lists from a learned table (empty: categories only)."""

    also_bought: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    popular: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    category_of: dict[str, str] = field(default_factory=dict)
    item_by_hash: dict[int, str] = field(default_factory=dict)
    #: Payloads already built, by (seed items, categories, size). A user re-scored
    #: while nothing they saw changed gets the same payload; built once, it is read
    #: only (serialised, never mutated), so sharing it is safe.
    _built: dict[tuple[tuple[str, ...], tuple[str, ...], int], dict[str, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Recommender:
        """Build from :func:`learn_recommendations` output (as stored in a bundle)."""
        if not data:
            return cls()
        also = {item: [(str(o), float(s)) for o, s in found] for item, found in data.get("also_bought", {}).items()}
        popular = {c: [(str(i), int(n)) for i, n in found] for c, found in data.get("popular", {}).items()}
        category_of = dict(data.get("category_of", {}))
        known = set(also) | set(category_of)
        return cls(also, popular, category_of, {item_hash(item): item for item in known})

    def recommend(self, state: UserState, top_categories: list[str], max_items: int) -> dict[str, Any]:
        """Payload for the recommendation topic: ranked items with why, and categories.

        The returned dict may be shared between calls: do not modify it.
        """
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
        scores: dict[str, float] = {}
        because: dict[str, str] = {}
        for rank, seed in enumerate(recent):
            weight = 1.0 / (1 + rank)
            for other, score in self.also_bought.get(seed, []):
                if other in recent:
                    continue
                value = weight * score
                if value > scores.get(other, 0.0):
                    scores[other] = value
                    because[other] = f"often bought with {seed}"
        for rank, category in enumerate(top_categories):
            found = self.popular.get(category, [])
            if not found:
                continue
            top_count = found[0][1]
            for item, count in found:
                if item in recent:
                    continue
                value = 0.5 / (1 + rank) * count / top_count
                if value > scores.get(item, 0.0):
                    scores[item] = value
                    because[item] = f"popular in {category}"
        ranked = sorted(scores, key=lambda i: (-scores[i], i))[:max_items]
        return {
            "strategy": "co_purchase+category_popularity" if self.also_bought else "top_categories",
            "items": [
                {
                    "item_id": item,
                    "category": self.category_of.get(item),
                    "rank": i + 1,
                    "score": round(scores[item], 4),
                    "because": because[item],
                }
                for i, item in enumerate(ranked)
            ],
            "categories": [{"category": c, "rank": i + 1} for i, c in enumerate(top_categories)],
            "seed_items": recent,
        }
