"""Buy again: the user's own repeat purchases, ranked by how often and how lately they
buy each item, and whether its usual gap has passed.

For a shop of consumables a user's own repeat purchases are the strongest signal it
has (on the Instacart sample about 60% of order lines are reorders). Offline the score
comes from each user's whole purchase history (:class:`PurchaseHistory`, built from the
log); the worker serves it from the summary its state keeps of the last 16 items bought
(:mod:`retention_model.features.state.bought`, :func:`served_scores`).

The score of an item the user bought is a decayed count of the orders it was in
(recent orders weigh more: tastes drift), times a rhythm factor from the user's own
gaps between purchases of that item: an item more than twice its usual gap overdue
has likely been dropped and weighs less. Holding back an item whose gap has not yet
passed is available (``early_power``) but off: on the Instacart sample it lowered
hit rate and recall, as did boosting an item that had just fallen due, and giving
items bought once the population's usual gap. Items bought once have no rhythm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from statistics import median

from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS, HOUR_MS, PURCHASES_SIGNAL, UserState
from retention_model.features.state.bought import (
    FIRST,
    LAST,
    ORDER_HALF_LIFE,
    ORDERS,
    bought_items,
    decayed_weight,
)

__all__ = [
    "BuyAgainConfig",
    "PurchaseHistory",
    "bought_items",
    "buy_again_scores",
    "purchase_histories",
    "served_scores",
]


@dataclass
class PurchaseHistory:
    """One user's orders: when each was placed, and when each item was bought (ascending)."""

    orders_ms: list[int] = field(default_factory=list)
    bought_ms: dict[str, list[int]] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        """Record a purchase (events of other types are ignored); events come in time order."""
        if event.type is not EventType.PURCHASE:
            return
        self.orders_ms.append(event.ts_ms)
        for item in bought_items(event):
            self.bought_ms.setdefault(item, []).append(event.ts_ms)


def purchase_histories(events: Iterable[Event]) -> dict[str, PurchaseHistory]:
    """Every buyer's :class:`PurchaseHistory`, from a log in time order."""
    histories: dict[str, PurchaseHistory] = {}
    for event in events:
        if event.type is EventType.PURCHASE:
            histories.setdefault(event.user_id, PurchaseHistory()).add(event)
    return histories


@dataclass(frozen=True)
class BuyAgainConfig:
    """How repeat purchases are weighed.

    The defaults were chosen on the Instacart sample's second-last orders (the
    evaluation reports its last ones): a half-life of 5 orders, and an item more than
    twice its usual gap overdue weighed by (2 gap / elapsed) ** 0.5, helped; holding
    back an item whose gap has not yet passed (``early_power`` > 0) or boosting one
    that just fell due did not, so ``early_power`` is 0.
    """

    #: Half-life of an order's weight, in the user's own orders (the latest weighs 1).
    half_life_orders: float = ORDER_HALF_LIFE
    #: Past this many usual gaps, an item has likely been dropped ...
    overdue_after: float = 2.0
    #: ... and is weighed by (overdue_after x gap / elapsed) ** this.
    overdue_power: float = 0.5
    #: An item whose usual gap has not passed is weighed by (elapsed / gap) ** this.
    early_power: float = 0.0
    #: Floor on the early factor, so a just-bought staple still ranks among the rest.
    early_floor: float = 0.2
    #: Gaps shorter than this (days) count as this: same-day top-ups are not a rhythm.
    min_gap_days: float = 1.0

    def __post_init__(self) -> None:
        if self.half_life_orders <= 0 or min(self.overdue_after, self.overdue_power, self.early_power) < 0:
            msg = f"BuyAgainConfig needs half_life_orders > 0 and no negative factor; got {self}"
            raise ValueError(msg)
        if not 0 <= self.early_floor <= 1:
            msg = f"BuyAgainConfig.early_floor must be within [0, 1]; got {self.early_floor}"
            raise ValueError(msg)


def buy_again_scores(
    history: PurchaseHistory,
    now_ms: int,
    config: BuyAgainConfig = BuyAgainConfig(),
) -> dict[str, tuple[float, str]]:
    """Score and reason for each item the user bought, as of ``now_ms``.

    Examples:
        >>> h = PurchaseHistory([0, 7 * DAY_MS, 14 * DAY_MS], {"milk": [0, 7 * DAY_MS, 14 * DAY_MS], "cake": [0]})
        >>> scores = buy_again_scores(h, 21 * DAY_MS)
        >>> scores["milk"][1]
        'bought every 7 days, last 7 days ago'
        >>> scores["milk"][0] > scores["cake"][0]
        True
    """
    orders = history.orders_ms
    if not orders:
        return {}
    # An order's weight by how many of the user's orders came after it.
    newer_than = {ts: len(orders) - 1 - i for i, ts in enumerate(orders)}
    decay = math.log(2) / config.half_life_orders
    out: dict[str, tuple[float, str]] = {}
    for item, times in history.bought_ms.items():
        weight = sum(math.exp(-decay * newer_than.get(ts, 0)) for ts in times)
        elapsed = max(0.0, (now_ms - times[-1]) / DAY_MS)
        gap = median((b - a) / DAY_MS for a, b in pairwise(times)) if len(times) > 1 else None
        out[item] = _with_rhythm(weight, gap, elapsed, config)
    return out


def _with_rhythm(weight: float, gap: float | None, elapsed: float, config: BuyAgainConfig) -> tuple[float, str]:
    """An item's score and reason from its order-decayed weight, usual gap (days; None when
    bought once: no rhythm yet) and the days since it was last bought."""
    if gap is None:
        return weight, f"bought {elapsed:.0f} days ago"
    why = f"bought every {gap:.0f} days, last {elapsed:.0f} days ago"
    gap = max(gap, config.min_gap_days)
    rhythm = 1.0
    if elapsed < gap and config.early_power:
        rhythm = max(config.early_floor, (elapsed / gap) ** config.early_power)
    elif elapsed > config.overdue_after * gap:
        rhythm = (config.overdue_after * gap / elapsed) ** config.overdue_power
    return weight * rhythm, why


def served_scores(
    state: UserState, names: Mapping[int, str], now_ms: int, config: BuyAgainConfig = BuyAgainConfig()
) -> dict[str, tuple[float, str]]:
    """:func:`buy_again_scores` from what the worker's state keeps (:mod:`~retention_model.features.state.bought`):
    the items it can name (``names``: by ``bought_key``), their usual gap taken as the mean
    (last - first) / (orders - 1), their weights decayed by the state's half-life
    (:data:`ORDER_HALF_LIFE`, the config's default)."""
    orders = int(state.totals[PURCHASES_SIGNAL])
    out: dict[str, tuple[float, str]] = {}
    for item, entry in state.bought.items():
        name = names.get(item)
        if name is None:
            continue
        first, last, in_orders = entry[FIRST] * HOUR_MS, entry[LAST] * HOUR_MS, int(entry[ORDERS])
        weight = decayed_weight(entry, orders)
        gap = (last - first) / DAY_MS / (in_orders - 1) if in_orders > 1 else None
        out[name] = _with_rhythm(weight, gap, max(0.0, (now_ms - last) / DAY_MS), config)
    return out
