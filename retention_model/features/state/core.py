"""Per-user feature state and its fold: updated event by event, order-independent.

Decayed aggregates are kept *anchored*: instead of the value at the last event,
the state stores ``s = Σ x·2^((t - anchor)/h)``, and the value at any time ``now``
is ``s·2^(-(now - anchor)/h)``. An update touches only the signals of the event's
type (no rescaling of every aggregate when time moves on), and the sum does not
depend on the order events arrive in: a late event adds its own term exactly like
an on-time one.

Effectively-once: ``offset`` is the source offset last applied. A user's events
live in one partition, in order, so a replay after a crash skips every event at or
below it. A producer that retries sends the same event at a new offset, which the
offset cannot see: the state also keeps 32-bit hashes of the user's last
:data:`RECENT_EVENT_IDS_KEPT` event ids and last :data:`RECENT_ORDER_IDS_KEPT`
purchase order ids, and an event whose id (or a purchase whose order id) is among
them counts once.
"""

from __future__ import annotations

import zlib
from bisect import insort
from collections.abc import Callable
from functools import lru_cache
from operator import itemgetter
from typing import Final, Literal

from retention_model.events import Event, EventType
from retention_model.features.definitions import HALF_LIVES_DAYS, SIGNALS
from retention_model.features.state.bought import add_bought, bought_items, bought_key, item_hash

__all__ = [
    "APPLIED",
    "CATEGORY_HALF_LIFE_MS",
    "DAY_MS",
    "DUPLICATE_EVENT",
    "HALF_LIVES_MS",
    "HOUR_MS",
    "MAX_CATEGORY_BYTES",
    "N_HALF_LIVES",
    "N_SIGNALS",
    "PURCHASES_SIGNAL",
    "REANCHOR_AFTER_MS",
    "RECENT_EVENT_IDS_KEPT",
    "RECENT_ITEMS_KEPT",
    "RECENT_ORDER_IDS_KEPT",
    "RECENT_PURCHASES_KEPT",
    "REPLAYED",
    "STATE_VERSION",
    "TOP_CATEGORIES_KEPT",
    "ApplyOutcome",
    "UserState",
    "apply_event",
    "decay_factor",
    "item_hash",
]

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
STATE_VERSION: Final = 5

#: What :func:`apply_event` did with an event; the values are the
#: ``retention_events_total`` outcome labels.
ApplyOutcome = Literal["applied", "duplicate", "duplicate_event"]
APPLIED: Final = "applied"
#: At or below the state's source offset: a re-read after a crash or rebalance.
REPLAYED: Final = "duplicate"
#: A new offset, but an event id (or purchase order id) the user sent recently: a retry.
DUPLICATE_EVENT: Final = "duplicate_event"
#: The de-duplication window: a retried event is caught while its id is among the
#: user's last 8 event ids, a retried purchase while its order id is among their
#: last 4 orders. 4-byte hashes keep both inside the 1 KiB state.
RECENT_EVENT_IDS_KEPT: Final = 8
RECENT_ORDER_IDS_KEPT: Final = 4

N_SIGNALS: Final = len(SIGNALS)
N_HALF_LIVES: Final = len(HALF_LIVES_DAYS)
HALF_LIVES_MS: Final = tuple(h * DAY_MS for h in HALF_LIVES_DAYS)
#: Half-life of the category profile weights.
CATEGORY_HALF_LIFE_MS: Final = 30 * DAY_MS
#: Move the anchor before 2^(age/h) nears float64's range (2^1023); 400 one-day
#: half-lives leaves a wide margin.
REANCHOR_AFTER_MS: Final = 400 * DAY_MS
RECENT_PURCHASES_KEPT: Final = 8
#: Distinct items last viewed or carted, the seeds of the recommendation payload.
#: Kept as 64-bit hashes of the item id (a model bundle maps them back to ids), so
#: long SKUs cost no more than short ones.
RECENT_ITEMS_KEPT: Final = 3
TOP_CATEGORIES_KEPT: Final = 8
MAX_CATEGORY_BYTES: Final = 24

_PREFERENCE_TYPES: Final = (EventType.OPT_OUT, EventType.OPT_IN)
# Bound once: an enum member lookup per event is measurable in the fold.
_OPT_OUT: Final = EventType.OPT_OUT
_PURCHASE: Final = EventType.PURCHASE
_COUPON_REDEEM: Final = EventType.COUPON_REDEEM
#: The purchase-count signal: a purchase's order number (after the fold has counted it).
PURCHASES_SIGNAL: Final = next(i for i, s in enumerate(SIGNALS) if (s.on, s.how) == ("purchases", "count"))
_CATEGORY_WEIGHT: Final = {
    EventType.VIEW: 1.0,
    EventType.ADD_TO_CART: 2.0,
    EventType.PURCHASE: 4.0,
}


class UserState:
    """Everything the worker remembers about one user.

    Policy bookkeeping (``last_coupon_ms`` ...) lives here too, so cooldowns survive
    restarts with the rest of the state.
    """

    __slots__ = (
        "anchor_ms",
        "bought",
        "cap_count",
        "cap_window_day",
        "categories",
        "category_bits",
        "coupon_redeemed",
        "decayed",
        "first_purchase_ms",
        "first_seen_ms",
        "interventions_sent",
        "last_coupon_ms",
        "last_coupon_wall_ms",
        "last_purchase_ms",
        "last_reco_ms",
        "last_reco_wall_ms",
        "last_risk",
        "last_scored_ms",
        "last_seen_ms",
        "offset",
        "opted_out",
        "recent_event_ids",
        "recent_items",
        "recent_order_ids",
        "recent_purchases_ms",
        "totals",
    )

    def __init__(self) -> None:
        self.offset = -1
        self.anchor_ms = 0
        self.first_seen_ms = 0
        self.last_seen_ms = 0
        self.first_purchase_ms = 0
        self.last_purchase_ms = 0
        self.last_coupon_ms = 0
        self.last_reco_ms = 0
        self.last_scored_ms = 0
        self.interventions_sent = 0
        self.category_bits = 0
        self.last_risk = -1.0
        self.totals = [0.0] * N_SIGNALS
        self.decayed = [0.0] * (N_SIGNALS * N_HALF_LIVES)
        self.recent_purchases_ms: list[int] = []
        self.categories: dict[str, float] = {}
        # Policy bookkeeping (state version 2).
        self.opted_out = False
        #: A coupon redemption came after the last coupon we sent (it is used up).
        self.coupon_redeemed = False
        #: Per-user cap: interventions sent in the window starting at this day number.
        self.cap_window_day = 0
        self.cap_count = 0
        #: item hash -> last hour (since epoch) viewed or carted; the newest few.
        self.recent_items: dict[int, int] = {}
        # State version 3. Sends in processing time (wall clock, epoch ms in whole
        # seconds), beside the event-time ones above: cooldowns hold on both clocks.
        self.last_coupon_wall_ms = 0
        self.last_reco_wall_ms = 0
        #: 32-bit hashes of the last event ids and purchase order ids, oldest first.
        self.recent_event_ids: list[int] = []
        self.recent_order_ids: list[int] = []
        # State version 4: item key -> [first hour, last hour, orders, weight, at order] (see .bought;
        # since version 5 keyed by bought_key, every weight a float32 as of the same order).
        self.bought: dict[int, list[float]] = {}

    def copy(self) -> UserState:
        """An independent copy (containers copied too): a snapshot that later events do not touch."""
        twin = UserState.__new__(UserState)
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(twin, name, value.copy() if isinstance(value, list | dict) else value)
        twin.bought = {item: entry.copy() for item, entry in self.bought.items()}
        return twin

    @property
    def is_empty(self) -> bool:
        """True before the first event was applied."""
        return self.first_seen_ms == 0

    def decayed_value(self, signal_index: int, half_life_index: int, now_ms: int) -> float:
        """Decayed aggregate of one signal as of ``now_ms``."""
        stored = self.decayed[signal_index * N_HALF_LIVES + half_life_index]
        return stored * decay_factor(now_ms - self.anchor_ms, HALF_LIVES_MS[half_life_index])

    def category_weights(self, now_ms: int) -> dict[str, float]:
        """Decayed (30-day half-life) interest per category as of ``now_ms``."""
        factor = decay_factor(now_ms - self.anchor_ms, CATEGORY_HALF_LIFE_MS)
        return {name: weight * factor for name, weight in self.categories.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserState):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        return (
            f"UserState(offset={self.offset}, first_seen_ms={self.first_seen_ms}, "
            f"last_seen_ms={self.last_seen_ms}, purchases={self.totals[5]:g})"
        )


def decay_factor(age_ms: int, half_life_ms: int) -> float:
    """2^(-age/half_life): the weight of something ``age_ms`` old."""
    return 2.0 ** (-age_ms / half_life_ms)


def _reanchor(state: UserState, new_anchor_ms: int) -> None:
    shift = new_anchor_ms - state.anchor_ms
    decayed = state.decayed
    for j, half_life in enumerate(HALF_LIVES_MS):
        factor = decay_factor(shift, half_life)
        for i in range(j, len(decayed), N_HALF_LIVES):
            decayed[i] *= factor
    factor = decay_factor(shift, CATEGORY_HALF_LIFE_MS)
    state.categories = {k: v * factor for k, v in state.categories.items()}
    state.anchor_ms = new_anchor_ms


_MEASURES: Final[dict[str, Callable[[Event], float]]] = {
    "amount": lambda event: event.amount,
    "quantity": lambda event: float(event.quantity if event.quantity is not None else 1),
    "rating": lambda event: event.rating if event.rating is not None else 0.0,
    "with_coupon": lambda event: 1.0 if event.coupon_id is not None else 0.0,
}
# Per event type, the signals it touches: (signal index, its first decayed slot,
# measure or None for "one").
_FOLD_BY_TYPE: Final = {
    kind: tuple(
        (index, index * N_HALF_LIVES, _MEASURES.get(signal.measure))
        for index, signal in enumerate(SIGNALS)
        if signal.event_type is kind
    )
    for kind in EventType
}
if tuple(h * DAY_MS for h in (1, 7, 30, 90)) != HALF_LIVES_MS:
    raise ImportError("apply_event unrolls the half-lives 1, 7, 30 and 90 days: update it with HALF_LIVES_DAYS")
_H1, _H7, _H30, _H90 = HALF_LIVES_MS


def apply_event(state: UserState, event: Event, offset: int | None = None) -> ApplyOutcome:
    """Fold one event into ``state`` in place; say whether it counted.

    ``offset`` is the event's source offset; offline replays have none and pass
    nothing, which never skips by offset. Returns :data:`APPLIED`,
    :data:`REPLAYED` (offset already applied) or :data:`DUPLICATE_EVENT` (an event
    id or purchase order id seen within the de-duplication window).
    """
    if offset is not None:
        if offset <= state.offset:
            return REPLAYED
        state.offset = offset
    kind = event.type
    if _seen_before(state, event, kind):
        return DUPLICATE_EVENT
    if kind in _PREFERENCE_TYPES:
        # A marketing preference, not shopping activity: it moves no time or feature.
        state.opted_out = kind is _OPT_OUT
        return APPLIED
    ts = event.ts_ms
    if state.first_seen_ms == 0:
        state.first_seen_ms = ts
        state.last_seen_ms = ts
        state.anchor_ms = ts - ts % DAY_MS
    else:
        if ts < state.first_seen_ms:
            state.first_seen_ms = ts
        if ts > state.last_seen_ms:
            state.last_seen_ms = ts
        if ts - state.anchor_ms > REANCHOR_AFTER_MS:
            _reanchor(state, ts - ts % DAY_MS)

    touched = _FOLD_BY_TYPE[kind]
    if touched:
        age = ts - state.anchor_ms
        # Unrolled over the four half-lives (checked at import): the same arithmetic as
        # a loop, in a third less time on the worker's hottest path.
        grow_1, grow_7, grow_30, grow_90 = (
            2.0 ** (age / _H1),
            2.0 ** (age / _H7),
            2.0 ** (age / _H30),
            2.0 ** (age / _H90),
        )
        totals = state.totals
        decayed = state.decayed
        for index, base, measure in touched:
            value = 1.0 if measure is None else measure(event)
            if value == 0.0:
                continue
            totals[index] += value
            decayed[base] += value * grow_1
            decayed[base + 1] += value * grow_7
            decayed[base + 2] += value * grow_30
            decayed[base + 3] += value * grow_90

    if kind is _PURCHASE:
        if state.first_purchase_ms == 0 or ts < state.first_purchase_ms:
            state.first_purchase_ms = ts
        if ts > state.last_purchase_ms:
            state.last_purchase_ms = ts
        recent = state.recent_purchases_ms
        insort(recent, ts)
        if len(recent) > RECENT_PURCHASES_KEPT:
            del recent[0]
        hashes = [bought_key(item) for item in bought_items(event)]
        if hashes or state.bought:  # every purchase moves the weights on: all as of the latest (v5)
            add_bought(state.bought, hashes, ts // HOUR_MS, int(state.totals[PURCHASES_SIGNAL]))

    elif kind is _COUPON_REDEEM:
        if state.last_coupon_ms and ts >= state.last_coupon_ms:
            state.coupon_redeemed = True
    elif event.item_id is not None and kind in _CATEGORY_WEIGHT:
        _add_item(state.recent_items, item_hash(event.item_id), ts // HOUR_MS)

    if event.category is not None:
        _add_category(state, event)
    return APPLIED


def _seen_before(state: UserState, event: Event, kind: EventType) -> bool:
    """Whether ``event`` repeats one of the user's recent event ids (or purchase order ids); remember it if not.

    CRC-32 rather than a cryptographic hash: ids that differ in a few characters
    (``order-1``, ``order-2``) never collide under it, and it costs a tenth.
    """
    id_hash = zlib.crc32(event.event_id.encode())
    ids = state.recent_event_ids
    if id_hash in ids:
        return True
    if kind is _PURCHASE and event.order_id is not None:
        order_hash = zlib.crc32(event.order_id.encode())
        orders = state.recent_order_ids
        if order_hash in orders:
            return True
        orders.append(order_hash)
        if len(orders) > RECENT_ORDER_IDS_KEPT:
            del orders[0]
    ids.append(id_hash)
    if len(ids) > RECENT_EVENT_IDS_KEPT:
        del ids[0]
    return False


_SEEN_THEN_ITEM: Final = itemgetter(1, 0)


def _add_item(items: dict[int, int], item: int, hour: int) -> None:
    """Keep the items with the newest last-seen hour: exact whatever the arrival order."""
    if hour > items.get(item, -1):
        items[item] = hour
    if len(items) > RECENT_ITEMS_KEPT:
        oldest, _ = min(items.items(), key=_SEEN_THEN_ITEM)  # ties: the smallest item hash
        del items[oldest]


def _newest_distinct(hashes: list[int], kept: int) -> list[int]:
    """The last ``kept`` distinct values of ``hashes``, oldest first."""
    out: list[int] = []
    for value in reversed(hashes):
        if value not in out:
            out.append(value)
            if len(out) == kept:
                break
    out.reverse()
    return out


@lru_cache(maxsize=1 << 12)
def _category_key(category: str) -> tuple[str, int]:
    """The stored name (cut to 24 bytes on a character boundary) and its distinct-count bit."""
    name = category.encode()[:MAX_CATEGORY_BYTES].decode(errors="ignore")
    return name, 1 << (zlib.crc32(name.encode()) & 63)


def _add_category(state: UserState, event: Event) -> None:
    assert event.category is not None
    name, bit = _category_key(event.category)
    state.category_bits |= bit
    weight = _CATEGORY_WEIGHT.get(event.type)
    if weight is None:
        return
    categories = state.categories
    categories[name] = categories.get(name, 0.0) + weight * 2.0 ** (
        (event.ts_ms - state.anchor_ms) / CATEGORY_HALF_LIFE_MS
    )
    if len(categories) > TOP_CATEGORIES_KEPT:
        # Space-saving style: drop the weakest. Only this bounded profile depends on
        # arrival order; every numeric aggregate is order-independent.
        weakest = min(categories, key=categories.__getitem__)
        del categories[weakest]
