"""The table recommendations are served from, learned offline from a log and shipped in the bundle.

Items that shared a purchasing basket (an order's lines, and the items carted in a
session that ended in a purchase) are scored as pairs by the cosine similarity of their
basket sets; items are ranked by popularity overall and within each category (ties: the
item bought last first). :class:`~retention_model.policy.recommend.Recommender` serves
from the result and needs nothing else.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any, Final

from retention_model.events import Event, EventType
from retention_model.policy.buy_again import bought_items

__all__ = ["learn_recommendations"]

_BASKET_TYPES = (EventType.ADD_TO_CART, EventType.PURCHASE)
#: Popular items kept overall (bundle size).
_POPULAR_KEPT: Final = 200


def learn_recommendations(events: Iterable[Event], neighbours: int = 10, per_category: int = 20) -> dict[str, Any]:
    """Co-purchase neighbours, popular items overall and per category; JSON-ready.

    A purchase's basket is its session's (carts and lines) when it has a session id,
    else its own order's lines: a log of orders without sessions would otherwise
    make each user's whole history one basket.
    """
    carted: dict[tuple[str, str], set[str]] = defaultdict(set)
    purchased_sessions: set[tuple[str, str]] = set()
    category_of: dict[str, str] = {}
    last_bought: dict[str, int] = {}
    for event in events:
        session = (event.user_id, event.session_id or event.user_id)
        if event.type is EventType.PURCHASE:
            if event.session_id is None and event.items:
                session = (event.user_id, f"order:{event.order_id or event.event_id}")
            purchased_sessions.add(session)
            for line in event.items or ():  # an order's lines are its basket, carts or not
                carted[session].add(line.item_id)
                if line.category is not None:
                    category_of[line.item_id] = line.category
            for item in bought_items(event):
                last_bought[item] = max(last_bought.get(item, 0), event.ts_ms)
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

    def most_bought(items: Iterable[str]) -> list[str]:
        # Ties: the item bought most recently, then the id.
        return sorted(items, key=lambda i: (-popularity[i], -last_bought.get(i, 0), i))

    by_category: dict[str, list[str]] = defaultdict(list)
    for item in popularity:
        by_category[category_of.get(item, "")].append(item)
    overall = most_bought(popularity)[:_POPULAR_KEPT]
    return {
        "also_bought": {
            item: [[other, round(score, 4)] for score, other in sorted(found, key=lambda p: (-p[0], p[1]))[:neighbours]]
            for item, found in sorted(related.items())
        },
        "popular": {
            category: [[item, popularity[item]] for item in most_bought(found)[:per_category]]
            for category, found in sorted(by_category.items())
            if category
        },
        "popular_overall": [[item, popularity[item]] for item in overall],
        "category_of": dict(sorted(category_of.items())),
        "baskets": len(purchased_sessions),
    }
