"""Event schema v1: the types, their bounds and the validated :class:`Event`.

The decoder (:mod:`retention_model.events`) turns record bytes into these; every
other module imports them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final

import msgspec

__all__ = [
    "EVENT_TYPE_MEANINGS",
    "MAX_EVENT_BYTES",
    "MAX_ORDER_LINES",
    "MAX_PRICE",
    "MAX_QUANTITY",
    "MAX_STRING_LEN",
    "MAX_TS_MS",
    "MIN_TS_MS",
    "SCHEMA_VERSION",
    "DecodeError",
    "Event",
    "EventType",
    "OrderLine",
    "UnknownEventType",
]

SCHEMA_VERSION: Final = 1

#: Larger payloads are dead-lettered before parsing, so one bad producer cannot
#: make the worker allocate megabytes per record.
MAX_EVENT_BYTES: Final = 64 * 1024

# Sanity bounds on event time: 2000-01-01 .. 2100-01-01 (UTC, epoch ms).
MIN_TS_MS: Final = 946_684_800_000
MAX_TS_MS: Final = 4_102_444_800_000

MAX_PRICE: Final = 1_000_000.0
#: Lines an order (a purchase, cancellation or return) may carry in ``items``.
MAX_ORDER_LINES: Final = 100
MAX_QUANTITY: Final = 10_000
MAX_STRING_LEN: Final = 256


class EventType(StrEnum):
    """Behaviour event types of schema v1 (the value is the wire name)."""

    SESSION_START = "session_start"
    VIEW = "view"
    SEARCH = "search"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    PURCHASE = "purchase"
    CANCEL_ORDER = "cancel_order"
    RETURN = "return"
    REVIEW = "review"
    COUPON_REDEEM = "coupon_redeem"
    #: The user asked for no marketing: the policy sends them nothing until ``opt_in``.
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"

    @property
    def wire_name(self) -> str:
        """The name used in the JSON ``type`` field."""
        return self.value


_TYPES_BY_NAME: Final = {t.wire_name: t for t in EventType}

#: What each event type means and what the worker does with it (the README's table is made from this).
EVENT_TYPE_MEANINGS: Final[dict[EventType, str]] = {
    EventType.SESSION_START: "a visit begins; counted as a session",
    EventType.VIEW: "a product page seen; feeds the category profile and recommendation seeds",
    EventType.SEARCH: "a search made",
    EventType.ADD_TO_CART: "an item carted (`price`: the unit price); feeds cart abandonment",
    EventType.REMOVE_FROM_CART: "an item taken out of the cart",
    EventType.PURCHASE: "an order placed (`price`, required: the order total; `quantity`: items in it)",
    EventType.CANCEL_ORDER: "an order cancelled (`price`: the amount)",
    EventType.RETURN: "items returned (`price`: the amount)",
    EventType.REVIEW: "a review written (`rating`, required: 1 to 5)",
    EventType.COUPON_REDEEM: "a coupon used; with `intervention_id`, attributed to our coupon",
    EventType.OPT_OUT: "the user asked for no marketing: the policy sends nothing until `opt_in`",
    EventType.OPT_IN: "the user accepts marketing again",
}


# Field types carry the schema's bounds, so msgspec checks them while it parses.
_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING_LEN)]
_EventTime = Annotated[int, msgspec.Meta(ge=MIN_TS_MS, lt=MAX_TS_MS)]
_Price = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_PRICE)]
_Quantity = Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
_Rating = Annotated[float, msgspec.Meta(ge=1.0, le=5.0)]


class OrderLine(msgspec.Struct, omit_defaults=True, gc=False):
    """One line of an order: an item, its category, unit price and how many."""

    item_id: _Text
    category: _Text | None = None
    price: _Price | None = None
    quantity: _Quantity | None = None


_OrderLines = Annotated[list[OrderLine], msgspec.Meta(max_length=MAX_ORDER_LINES)]


class Event(msgspec.Struct, omit_defaults=True, gc=False):
    """One validated behaviour event. ``ts_ms`` is event time, epoch milliseconds UTC.

    Treat it as read-only. A msgspec ``Struct`` rather than a dataclass: the decoder
    builds it in C without a dict in between, and ``gc=False`` keeps the millions of
    them a worker makes out of the garbage collector's sight (they hold no references
    that could form a cycle).
    """

    event_id: _Text
    user_id: _Text
    type: EventType
    ts_ms: _EventTime = msgspec.field(name="ts")
    item_id: _Text | None = None
    category: _Text | None = None
    price: _Price | None = None
    quantity: _Quantity | None = None
    order_id: _Text | None = None
    rating: _Rating | None = None
    session_id: _Text | None = None
    coupon_id: _Text | None = None
    intervention_id: _Text | None = None
    #: The order's lines (``purchase``, ``cancel_order``, ``return`` only); ``price`` stays the total.
    items: _OrderLines | None = None

    @property
    def amount(self) -> float:
        """Money value of the event, from the one meaning ``price`` has for its type.

        ``purchase``: ``price`` is the order total (``quantity`` counts its items);
        ``cancel_order`` and ``return``: ``price`` is the amount cancelled or refunded;
        ``view`` and cart events: ``price`` is the unit price, so the value is
        ``price`` × ``quantity``. 0 when there is no price. Features, labels, the
        simulator and ``retention convert`` all go through here.

        Examples:
            >>> Event("e1", "u1", EventType.PURCHASE, 1_700_000_000_000, price=100.0, quantity=5).amount
            100.0
            >>> Event("e2", "u1", EventType.ADD_TO_CART, 1_700_000_000_000, price=20.0, quantity=3).amount
            60.0
        """
        price = self.price
        if price is None:
            return 0.0
        if self.type in _PRICE_IS_TOTAL or self.quantity is None:
            return price
        return price * self.quantity


#: Event types whose ``price`` is already the whole amount (an order total, a refund):
#: ``quantity`` on them counts items and must not multiply it.
_PRICE_IS_TOTAL: Final = frozenset({EventType.PURCHASE, EventType.CANCEL_ORDER, EventType.RETURN})


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why a record could not become an :class:`Event`.

    ``reason`` is a stable code (``invalid_json``, ``missing_field``, ...);
    ``detail`` is a sentence for a person.
    """

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class UnknownEventType:
    """A well-formed record whose ``type`` this schema version does not know.

    It is counted and skipped, never dead-lettered: producers may add types
    before consumers learn them.
    """

    type_name: str
    user_id: str
