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
from datetime import datetime
from typing import Any, Final

import msgspec
import orjson

from retention_model.schema import (
    _TYPES_BY_NAME,
    EVENT_TYPE_MEANINGS,
    MAX_EVENT_BYTES,
    MAX_ORDER_LINES,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_STRING_LEN,
    MAX_TS_MS,
    MIN_TS_MS,
    SCHEMA_VERSION,
    DecodeError,
    Event,
    EventType,
    OrderLine,
    UnknownEventType,
)

__all__ = [
    "EVENT_TYPE_MEANINGS",
    "MAX_EVENT_BYTES",
    "MAX_ORDER_LINES",
    "SCHEMA_VERSION",
    "DecodeError",
    "Event",
    "EventType",
    "OrderLine",
    "UnknownEventType",
    "decode_event",
    "encode_event",
    "parse_timestamp_ms",
]

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
            if (
                (event.price is not None or kind is not _PURCHASE)
                and (event.rating is not None or kind is not _REVIEW)
                and (event.items is None or kind in _LINE_TYPES)
            ):
                return event
    try:
        return _decode(payload)
    except Exception as exc:  # a bug here must not stop the stream; the record is kept in the DLQ
        return DecodeError("decoder_error", f"{type(exc).__name__}: {exc}")


_PURCHASE: Final = EventType.PURCHASE
_REVIEW: Final = EventType.REVIEW
_LINE_TYPES: Final = frozenset({EventType.PURCHASE, EventType.CANCEL_ORDER, EventType.RETURN})
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
    lines = _order_lines(get("items"), event_type)
    if isinstance(lines, DecodeError):
        return lines

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
        lines,
    )


def _order_lines(value: Any, event_type: EventType) -> list[OrderLine] | DecodeError | None:
    """The ``items`` of an order, checked line by line, or why not."""
    if value is None:
        return None
    if event_type not in _LINE_TYPES:
        return DecodeError("invalid_value", f"items are for purchase, cancel_order and return, not {event_type}")
    if not isinstance(value, list):
        return DecodeError("wrong_type", f"items must be a list, got {type(value).__name__}")
    if len(value) > MAX_ORDER_LINES:
        return DecodeError("too_many_items", f"{len(value)} order lines; at most {MAX_ORDER_LINES}")
    lines = []
    for n, line in enumerate(value):
        if not isinstance(line, dict):
            return DecodeError("wrong_type", f"items[{n}] must be an object, got {type(line).__name__}")
        item_id = _string(line, "item_id", required=True)
        category = _string(line, "category", required=False)
        price, quantity = _number(line, "price"), _number(line, "quantity")
        for found in (item_id, category, price, quantity):
            if isinstance(found, DecodeError):
                return DecodeError(found.reason, f"items[{n}]: {found.detail}")
        if price is not None and not 0.0 <= price <= MAX_PRICE:
            return DecodeError("invalid_value", f"items[{n}]: price {price} is outside 0..{MAX_PRICE:g}")
        if quantity is not None and (quantity != int(quantity) or not 1 <= quantity <= MAX_QUANTITY):
            return DecodeError(
                "invalid_value", f"items[{n}]: quantity {quantity:g} is not a whole number in 1..{MAX_QUANTITY}"
            )
        lines.append(OrderLine(item_id, category, price, None if quantity is None else int(quantity)))  # type: ignore[arg-type]
    return lines


def encode_event(event: Event) -> bytes:
    """Encode an event as schema-v1 JSON (``ts`` as epoch ms, unset fields left out)."""
    return _encode(event)
