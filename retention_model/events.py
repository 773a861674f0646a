"""Event schema v1 and its strict decoder.

Producers send one JSON object per Kafka record, keyed by ``user_id``. The decoder
never raises: it returns either an :class:`Event` or a :class:`DecodeError` whose
``reason`` is a short, stable code that ends up in the dead-letter topic and in the
``retention_dead_letters_total{reason=...}`` metric.

Two paths, one schema. Well-formed records, nearly all of them, are decoded and
validated in one pass by msgspec straight into :class:`Event` (the bounds live in the
field types). A record msgspec turns down goes through the field-by-field checker,
which finds the exact reason, and accepts the few forms the fast path leaves to it
(ISO-8601 ``ts``, numeric ids, whole-number floats). A property test holds the two
paths equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

import msgspec
import orjson

__all__ = [
    "EVENT_TYPE_MEANINGS",
    "MAX_EVENT_BYTES",
    "SCHEMA_VERSION",
    "DecodeError",
    "Event",
    "EventType",
    "UnknownEventType",
    "decode_event",
    "encode_event",
    "parse_timestamp_ms",
]

SCHEMA_VERSION: Final = 1

#: Larger payloads are dead-lettered before parsing, so one bad producer cannot
#: make the worker allocate megabytes per record.
MAX_EVENT_BYTES: Final = 64 * 1024

# Sanity bounds on event time: 2000-01-01 .. 2100-01-01 (UTC, epoch ms).
MIN_TS_MS: Final = 946_684_800_000
MAX_TS_MS: Final = 4_102_444_800_000

MAX_PRICE: Final = 1_000_000.0
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


_OPTIONAL_STRINGS: Final = (
    "item_id",
    "category",
    "order_id",
    "session_id",
    "coupon_id",
    "intervention_id",
)


def parse_timestamp_ms(value: Any) -> int | DecodeError:
    """Parse ``ts``: epoch milliseconds (int) or ISO-8601 with a zone offset."""
    if isinstance(value, bool):
        return DecodeError("wrong_type", "ts must be epoch milliseconds or an ISO-8601 string")
    if isinstance(value, int):
        ts_ms = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return DecodeError("invalid_timestamp", f"ts {value!r} is not whole epoch milliseconds")
        ts_ms = int(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return DecodeError("invalid_timestamp", f"ts {value[:64]!r} is not ISO-8601")
        if parsed.tzinfo is None:
            return DecodeError("invalid_timestamp", f"ts {value[:64]!r} has no zone offset; add Z or +hh:mm")
        ts_ms = int(parsed.timestamp() * 1000)
    else:
        return DecodeError("wrong_type", "ts must be epoch milliseconds or an ISO-8601 string")
    if not MIN_TS_MS <= ts_ms < MAX_TS_MS:
        return DecodeError("timestamp_out_of_range", f"ts {ts_ms} is outside 2000-01-01..2100-01-01")
    return ts_ms


_MISSING: Final = object()


def _string(obj: dict[str, Any], name: str, *, required: bool) -> str | DecodeError | None:
    value = obj.get(name)
    if value is None:
        if required:
            return DecodeError("missing_field", f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return DecodeError("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    text = str(value)
    if not text:
        return DecodeError("invalid_value", f"{name} must not be empty")
    if len(text) > MAX_STRING_LEN:
        return DecodeError("invalid_value", f"{name} is longer than {MAX_STRING_LEN} characters")
    return text


def _number(obj: dict[str, Any], name: str) -> float | DecodeError | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DecodeError("wrong_type", f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        return DecodeError("invalid_value", f"{name} must be finite")
    return number


def decode_event(payload: bytes | bytearray | memoryview) -> Event | DecodeError | UnknownEventType:
    """Decode and validate one record value. Never raises.

    Examples:
        >>> decode_event(b'{"event_id":"e1","user_id":"u1","type":"view","ts":1700000000000}').type
        <EventType.VIEW: 'view'>
        >>> decode_event(b'{"user_id":"u1"').reason
        'invalid_json'
    """
    if len(payload) <= MAX_EVENT_BYTES:
        try:
            event = _fast_decode(payload)
        except Exception:  # not the common shape: the checker below says why, or accepts it
            pass
        else:
            kind = event.type
            if (event.price is not None or kind is not _PURCHASE) and (event.rating is not None or kind is not _REVIEW):
                return event
    try:
        return _decode(payload)
    except Exception as exc:  # a bug here must not stop the stream; the record is kept in the DLQ
        return DecodeError("decoder_error", f"{type(exc).__name__}: {exc}")


_PURCHASE: Final = EventType.PURCHASE
_REVIEW: Final = EventType.REVIEW
_fast_decode: Final = msgspec.json.Decoder(Event).decode
_encode: Final = msgspec.json.Encoder().encode


def _decode(payload: bytes | bytearray | memoryview) -> Event | DecodeError | UnknownEventType:
    if len(payload) > MAX_EVENT_BYTES:
        return DecodeError("too_large", f"{len(payload)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        reason = "invalid_utf8" if "utf-8" in text.lower() else "invalid_json"
        return DecodeError(reason, text[:200])
    if not isinstance(obj, dict):
        return DecodeError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")

    # Fast paths test the common shape (a non-empty str, an int ts, a float) inline;
    # anything else goes through the general checks, which give the exact error.
    get = obj.get
    user_id = get("user_id")
    if type(user_id) is not str or not 0 < len(user_id) <= MAX_STRING_LEN:
        user_id = _string(obj, "user_id", required=True)
        if isinstance(user_id, DecodeError):
            return user_id
    type_name = get("type")
    if type_name is None:
        return DecodeError("missing_field", "type is required")
    if not isinstance(type_name, str):
        return DecodeError("wrong_type", "type must be a string")
    event_type = _TYPES_BY_NAME.get(type_name)
    if event_type is None:
        return UnknownEventType(type_name[:MAX_STRING_LEN], user_id)
    event_id = get("event_id")
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_STRING_LEN:
        event_id = _string(obj, "event_id", required=True)
        if isinstance(event_id, DecodeError):
            return event_id
    ts = get("ts", _MISSING)
    if type(ts) is int and MIN_TS_MS <= ts < MAX_TS_MS:
        ts_ms = ts
    else:
        if ts is _MISSING:
            return DecodeError("missing_field", "ts is required")
        ts_ms = parse_timestamp_ms(ts)
        if isinstance(ts_ms, DecodeError):
            return ts_ms

    strings: list[str | None] = []
    for name in _OPTIONAL_STRINGS:
        value = get(name)
        if value is not None and (type(value) is not str or not 0 < len(value) <= MAX_STRING_LEN):
            value = _string(obj, name, required=False)
            if isinstance(value, DecodeError):
                return value
        strings.append(value)
    item_id, category, order_id, session_id, coupon_id, intervention_id = strings

    price = get("price")
    if price is not None:
        if type(price) is not float or not math.isfinite(price):
            price = _number(obj, "price")
            if isinstance(price, DecodeError):
                return price
        if not 0.0 <= price <= MAX_PRICE:
            return DecodeError("invalid_value", f"price {price} is outside 0..{MAX_PRICE:g}")
    quantity = get("quantity")
    if quantity is not None and not (type(quantity) is int and 1 <= quantity <= MAX_QUANTITY):
        raw_quantity = _number(obj, "quantity")
        if isinstance(raw_quantity, DecodeError):
            return raw_quantity
        assert raw_quantity is not None
        if raw_quantity != int(raw_quantity):
            return DecodeError("invalid_value", f"quantity {raw_quantity:g} is not a whole number")
        if not 1 <= raw_quantity <= MAX_QUANTITY:
            return DecodeError("invalid_value", f"quantity {raw_quantity:g} is outside 1..{MAX_QUANTITY}")
        quantity = int(raw_quantity)
    rating = get("rating")
    if rating is not None:
        rating = _number(obj, "rating")
        if isinstance(rating, DecodeError):
            return rating
        assert rating is not None
        if not 1.0 <= rating <= 5.0:
            return DecodeError("invalid_value", f"rating {rating} is outside 1..5")

    if event_type is EventType.PURCHASE and price is None:
        return DecodeError("missing_field", "price is required for purchase")
    if event_type is EventType.REVIEW and rating is None:
        return DecodeError("missing_field", "rating is required for review")

    return Event(
        event_id,
        user_id,
        event_type,
        ts_ms,
        item_id,
        category,
        price,
        quantity,
        order_id,
        rating,
        session_id,
        coupon_id,
        intervention_id,
    )


def encode_event(event: Event) -> bytes:
    """Encode an event as schema-v1 JSON (``ts`` as epoch ms, unset fields left out)."""
    return _encode(event)
