"""The items a user bought, kept in their state so the worker can serve "buy again".

On a shop of consumables a user's own repeat purchases are the strongest recommendation
signal (see :mod:`retention_model.policy.buy_again`). The offline path scores them from the
whole purchase history; the worker has only the state, so it keeps, per item bought, what
that score needs in a fixed size: first and last purchase hour, the number of orders it was
in and a weight that decays by the user's orders (half-life :data:`ORDER_HALF_LIFE`, in
orders). :data:`BOUGHT_ITEMS_KEPT` items at most; the lightest (as of the user's latest
order) leaves first.

Two approximations, both documented where the score is served: the usual gap between
purchases of an item is the mean (last - first) / (orders - 1), not the median of the gaps;
and the weight assumes purchases arrive in time order (a late purchase decays the others as
if it were the newest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Final

from retention_model.events import Event

__all__ = [
    "BOUGHT_ITEMS_KEPT",
    "ORDER_HALF_LIFE",
    "add_bought",
    "bought_items",
    "decayed_weight",
    "item_hash",
    "orders_weight",
]

BOUGHT_ITEMS_KEPT: Final = 8
#: An order's weight halves with every 5 later orders of the user (the buy-again default).
ORDER_HALF_LIFE: Final = 5.0

# Entry fields, a list per item hash (mutable, small): first hour, last hour, orders it was
# in, weight as of order number ``AT``.
FIRST, LAST, ORDERS, WEIGHT, AT = range(5)


@lru_cache(maxsize=1 << 16)
def item_hash(item_id: str) -> int:
    """Stable 64-bit hash of an item id (the same in every process).

    Cached: a catalogue's popular items recur, and a hit costs a tenth of the hash.
    """
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "little")


def bought_items(event: Event) -> Iterator[str]:
    """The distinct items of a purchase: its lines, and its own ``item_id`` if any."""
    seen: set[str] = set()
    for line in event.items or ():
        if line.item_id not in seen:
            seen.add(line.item_id)
            yield line.item_id
    if event.item_id is not None and event.item_id not in seen:
        yield event.item_id


def decayed_weight(entry: list[float], order_number: int) -> float:
    """An entry's weight as of the user's ``order_number``-th order."""
    return entry[WEIGHT] * 2.0 ** (-(order_number - entry[AT]) / ORDER_HALF_LIFE)


def orders_weight(orders: int) -> float:
    """Sum of the weights of a user's ``orders`` orders (the newest weighs 1): the scores' scale."""
    ratio = 2.0 ** (-1.0 / ORDER_HALF_LIFE)
    return (1.0 - ratio**orders) / (1.0 - ratio) if orders > 0 else 1.0


def add_bought(bought: dict[int, list[float]], hashes: list[int], hour: int, order_number: int) -> None:
    """Record one order (its distinct item hashes) placed at ``hour``, the user's ``order_number``-th."""
    for item in hashes:
        entry = bought.get(item)
        if entry is None:
            bought[item] = [hour, hour, 1, 1.0, order_number]
            continue
        entry[WEIGHT] = decayed_weight(entry, order_number) + 1.0
        entry[AT] = order_number
        entry[ORDERS] += 1
        if hour < entry[FIRST]:
            entry[FIRST] = hour
        if hour > entry[LAST]:
            entry[LAST] = hour
    if len(bought) > BOUGHT_ITEMS_KEPT:
        ranked = sorted(bought, key=lambda h: (decayed_weight(bought[h], order_number), bought[h][LAST], -h))
        for item in ranked[: len(bought) - BOUGHT_ITEMS_KEPT]:
            del bought[item]
