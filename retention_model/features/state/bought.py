"""The items a user bought, kept in their state so the worker can serve "buy again".

On a shop of consumables a user's own repeat purchases are the strongest recommendation
signal (see :mod:`retention_model.policy.buy_again`). The offline path scores them from the
whole purchase history; the worker has only the state, so it keeps, per item bought, what
that score needs in a fixed size: first and last purchase hour, the number of orders it was
in and a weight that decays by the user's orders (half-life :data:`ORDER_HALF_LIFE`, in
orders). :data:`BOUGHT_ITEMS_KEPT` items at most; the lightest (as of the user's latest
order) leaves first.

Since state version 5 the entries are what 16 bytes on the wire hold, so the state keeps
16 items in about the room 8 took (issue 21: an Instacart basket has about ten items): the
key is the item hash's low 48 bits (:func:`bought_key`), every weight is a float32 as of
the same order (the user's latest with items) and is brought to it at each order.

Two approximations, both documented where the score is served: the usual gap between
purchases of an item is the mean (last - first) / (orders - 1), not the median of the gaps;
and the weight assumes purchases arrive in time order (a late purchase decays the others as
if it were the newest).
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Final

from retention_model.events import Event

__all__ = [
    "BOUGHT_ITEMS_KEPT",
    "BOUGHT_KEY_MASK",
    "ORDER_HALF_LIFE",
    "add_bought",
    "bought_items",
    "bought_key",
    "bought_names",
    "decayed_weight",
    "item_hash",
    "orders_weight",
    "to_float32",
]

#: 16, chosen on the validation logs (docs/policy.md): on Instacart's, served hit rate@10
#: 0.892 with 8, 0.906 with 16, 24 or 32 no better; the simulator's gained 0.002-0.011.
BOUGHT_ITEMS_KEPT: Final = 16
#: The part of :func:`item_hash` an item bought is kept by (48 bits: no two of a million
#: items are likely to share one, and two bytes fewer on the wire).
BOUGHT_KEY_MASK: Final = (1 << 48) - 1
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


def bought_key(item_id: str) -> int:
    """The key an item bought is kept under: the low 48 bits of its :func:`item_hash`."""
    return item_hash(item_id) & BOUGHT_KEY_MASK


def bought_names(by_hash: Mapping[int, str]) -> dict[int, str]:
    """Item names by :func:`bought_key`, from names by :func:`item_hash`."""
    return {h & BOUGHT_KEY_MASK: name for h, name in by_hash.items()}


_FLOAT32: Final = struct.Struct("<f")


def to_float32(value: float) -> float:
    """``value`` as the float32 the state's bytes hold, so a loaded state equals the one dumped."""
    return float(_FLOAT32.unpack(_FLOAT32.pack(value))[0])


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
    """Record one order (its distinct item keys) placed at ``hour``, the user's ``order_number``-th.

    Every entry is brought to ``order_number`` (its weight decayed, as a float32), so the
    state's bytes hold one order number for all of them.
    """
    behind = [entry for entry in bought.values() if entry[AT] != order_number]
    if behind:
        # One float32 rounding for all (array 'f' rounds in C): every purchase comes here.
        moved = array("f", [decayed_weight(entry, order_number) for entry in behind])
        for entry, weight in zip(behind, moved, strict=True):
            entry[WEIGHT] = weight
            entry[AT] = order_number
    for item in hashes:
        entry = bought.get(item)
        if entry is None:
            bought[item] = [hour, hour, 1, 1.0, order_number]
            continue
        entry[WEIGHT] = to_float32(entry[WEIGHT] + 1.0)
        entry[ORDERS] += 1
        if hour < entry[FIRST]:
            entry[FIRST] = hour
        if hour > entry[LAST]:
            entry[LAST] = hour
    if len(bought) > BOUGHT_ITEMS_KEPT:
        ranked = sorted(bought, key=lambda h: (bought[h][WEIGHT], bought[h][LAST], -h))
        for item in ranked[: len(bought) - BOUGHT_ITEMS_KEPT]:
            del bought[item]
