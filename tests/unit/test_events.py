"""Event schema v1: strict decoding that never raises."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from retention_model import events as events_module
from retention_model.events import (
    MAX_EVENT_BYTES,
    DecodeError,
    Event,
    EventType,
    UnknownEventType,
    decode_event,
    encode_event,
)

BASE = {"event_id": "e1", "user_id": "u1", "type": "view", "ts": 1_700_000_000_000}


def payload(**changes: object) -> bytes:
    body = {**BASE, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_type_decodes(event_type: EventType) -> None:
    extra = {"price": 12.5} if event_type is EventType.PURCHASE else {}
    if event_type is EventType.REVIEW:
        extra = {"rating": 4}
    decoded = decode_event(payload(type=event_type.wire_name, **extra))
    assert isinstance(decoded, Event)
    assert decoded.type is event_type


def test_iso_timestamp_with_zone_equals_epoch_ms() -> None:
    iso = decode_event(payload(ts="2023-11-14T22:13:20+00:00"))
    epoch = decode_event(payload(ts=1_700_000_000_000))
    assert isinstance(iso, Event) and isinstance(epoch, Event)
    assert iso.ts_ms == epoch.ts_ms == 1_700_000_000_000
    shifted = decode_event(payload(ts="2023-11-15T00:13:20+02:00"))
    assert isinstance(shifted, Event) and shifted.ts_ms == 1_700_000_000_000


def test_unknown_fields_are_ignored_and_numeric_user_ids_become_strings() -> None:
    decoded = decode_event(payload(user_id=42, shiny_new_field={"a": 1}))
    assert isinstance(decoded, Event)
    assert decoded.user_id == "42"


def test_unknown_type_is_reported_not_dead_lettered() -> None:
    decoded = decode_event(payload(type="wishlist_add"))
    assert decoded == UnknownEventType("wishlist_add", "u1")


def test_amount_of_a_purchase_is_its_price_and_of_a_cart_event_price_times_quantity() -> None:
    # A purchase's price is the order total (issue 20); a cart event's is a unit price.
    decoded = decode_event(payload(type="purchase", price=10.0, quantity=3))
    assert isinstance(decoded, Event) and decoded.amount == 10.0
    decoded = decode_event(payload(type="add_to_cart", price=10.0, quantity=3))
    assert isinstance(decoded, Event) and decoded.amount == 30.0


@pytest.mark.parametrize(
    ("quantity", "detail"),
    [(74215.0, "quantity 74215 is outside 1..10000"), (2.5, "quantity 2.5 is not a whole number")],
)
def test_a_bad_quantity_says_which_rule_it_breaks(quantity: float, detail: str) -> None:
    # Issue 20: a whole 74215.0 was reported as "not a whole number in 1..10000".
    decoded = decode_event(payload(quantity=quantity))
    assert isinstance(decoded, DecodeError) and decoded.detail == detail


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event_id": "e1", "user_id": "u1"', "invalid_json"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"[1, 2]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (payload(user_id=None), "missing_field"),
        (payload(user_id=""), "invalid_value"),
        (payload(user_id=[1]), "wrong_type"),
        (payload(type=None), "missing_field"),
        (payload(type=7), "wrong_type"),
        (payload(event_id=None), "missing_field"),
        (payload(ts=None), "missing_field"),
        (payload(ts="yesterday"), "invalid_timestamp"),
        (payload(ts="2023-11-14T22:13:20"), "invalid_timestamp"),
        (payload(ts=True), "wrong_type"),
        (payload(ts=1.5), "invalid_timestamp"),
        (payload(ts=253_402_300_800_000), "timestamp_out_of_range"),
        (payload(ts=0), "timestamp_out_of_range"),
        (payload(price=-1), "invalid_value"),
        (payload(price="12"), "wrong_type"),
        (payload(price=1e12), "invalid_value"),
        (payload(quantity=0), "invalid_value"),
        (payload(quantity=2.5), "invalid_value"),
        (payload(quantity=1e9), "invalid_value"),
        (payload(rating=6), "invalid_value"),
        (payload(type="purchase"), "missing_field"),
        (payload(type="review"), "missing_field"),
        (payload(category="x" * 300), "invalid_value"),
        (b'{"event_id":"e","user_id":"u","type":"view","ts":1700000000000,"price":NaN}', "invalid_json"),
        (b'{"event_id":"e","user_id":"u","type":"view","ts":1700000000000,"price":Infinity}', "invalid_json"),
        (b"{" + b" " * MAX_EVENT_BYTES + b"}", "too_large"),
    ],
)
def test_bad_input_gets_a_reason(raw: bytes, reason: str) -> None:
    decoded = decode_event(raw)
    assert isinstance(decoded, DecodeError), decoded
    assert decoded.reason == reason
    assert decoded.detail


@given(st.binary(max_size=512))
def test_decoder_never_raises_on_bytes(raw: bytes) -> None:
    assert isinstance(decode_event(raw), (Event, DecodeError, UnknownEventType))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from([*BASE, "price", "quantity", "rating", "category", "ts"]), json_values))
def test_decoder_never_raises_on_json_objects(obj: dict[str, object]) -> None:
    raw = json.dumps({**BASE, **obj}).encode()
    assert isinstance(decode_event(raw), (Event, DecodeError, UnknownEventType))


events = st.builds(
    Event,
    event_id=st.text(min_size=1, max_size=20),
    user_id=st.text(min_size=1, max_size=20),
    type=st.sampled_from([t for t in EventType if t not in (EventType.PURCHASE, EventType.REVIEW)]),
    ts_ms=st.integers(min_value=946_684_800_000, max_value=4_102_444_799_999),
    category=st.none() | st.text(min_size=1, max_size=20),
    price=st.none() | st.floats(min_value=0, max_value=1e6),
    quantity=st.none() | st.integers(min_value=1, max_value=10_000),
    rating=st.none() | st.floats(min_value=1, max_value=5),
)


@given(events)
def test_encode_decode_round_trip(event: Event) -> None:
    assert decode_event(encode_event(event)) == event


# A complete, valid event, and each field's values at and just past its bounds
# (plus wrong types, the forms only the checker accepts, and absence).
FULL = {
    **BASE,
    "item_id": "i1",
    "category": "books",
    "price": 9.5,
    "quantity": 2,
    "order_id": "o1",
    "rating": 4.0,
    "session_id": "s1",
    "coupon_id": "c1",
    "intervention_id": "iv1",
}
ABSENT = object()
TEXT_EDGES = ["", "a", "x" * 256, "x" * 257, "\ud800", 7, 1.5, True, None, ABSENT, ["a"]]
EDGES = {
    **{name: TEXT_EDGES for name in ("event_id", "user_id", "item_id", "category", "order_id", "session_id")},
    **{name: TEXT_EDGES for name in ("coupon_id", "intervention_id")},
    "type": [*(t.wire_name for t in EventType), "wishlist_add", "VIEW", "", 5, None, ABSENT],
    "ts": [
        *(946_684_800_000 + d for d in (-1, 0, 1)),
        *(4_102_444_800_000 + d for d in (-1, 0)),
        1.7e12,
        1.7e12 + 0.5,
        2**64,
        True,
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:13:20+01:00",
        "2023-11-14T22:13:20",
        "soon",
        None,
        ABSENT,
    ],
    "price": [-1e-9, -0.5, -0.0, 0, 0.0, 5, 1e6, 1e6 + 0.01, 1e308, True, "5", None, ABSENT],
    "quantity": [-1, 0, 1, 10_000, 10_001, 2.0, 2.5, 2**64, True, "2", None, ABSENT],
    "rating": [0.99, 1, 1.0, 5.0, 5.01, 3, True, "4", None, ABSENT],
    "items": [
        [{"item_id": "a", "category": "c", "price": 2.5, "quantity": 2}, {"item_id": "b"}],
        [{"item_id": "a"}] * 100,
        [{"item_id": "a"}] * 101,
        [],
        [{"item_id": 7, "quantity": 2.0}],
        [{"item_id": "a", "quantity": 2.5}],
        [{"item_id": "a", "price": -1}],
        [{"item_id": ""}],
        [{"category": "c"}],
        ["a"],
        {"item_id": "a"},
        None,
        ABSENT,
    ],
}
EDGE_CASES = [(name, value) for name, values in EDGES.items() for value in values]


@settings(max_examples=400)
@example([("type", "purchase"), ("price", ABSENT)])  # valid field by field, invalid as a whole
@example([("type", "review"), ("rating", None)])
@example([("type", "purchase"), ("items", [{"item_id": "a"}] * 100)])
@example([("type", "cancel_order"), ("items", EDGES["items"][0])])  # a full line the fast path accepts
@example([("type", "return"), ("items", [{"item_id": "a"}] * 101)])
@given(st.lists(st.sampled_from(EDGE_CASES), min_size=1, max_size=2))
def test_fast_path_decodes_exactly_as_the_field_checker(changes: list[tuple[str, object]]) -> None:
    """msgspec's one-pass decode must accept, reject and build exactly what the checker does."""
    body = dict(FULL)
    for name, value in changes:
        if value is ABSENT:
            body.pop(name, None)
        else:
            body[name] = value
    raw = json.dumps(body).encode()
    assert decode_event(raw) == events_module._decode(raw)


def test_edge_cases_reach_both_paths() -> None:
    """The property above compares something: some edge cases pass the fast path, some do not."""
    cases = [(name, value) for name, value in EDGE_CASES if value is not ABSENT]
    fast = [case for case in cases if isinstance(_fast_or_none(json.dumps({**FULL, case[0]: case[1]})), Event)]
    assert 0 < len(fast) < len(cases)


def _fast_or_none(text: str) -> Event | None:
    try:
        return events_module._fast_decode(text)
    except Exception:
        return None


def test_an_order_carries_its_lines_and_too_many_are_refused_with_the_reason() -> None:
    body = {**BASE, "type": "purchase", "price": 30.0, "items": [{"item_id": "a", "price": 10.0, "quantity": 3}]}
    event = decode_event(json.dumps(body).encode())
    assert isinstance(event, Event) and event.items is not None and event.items[0].quantity == 3
    assert event.amount == 30.0  # price stays the order total
    assert decode_event(encode_event(event)) == event
    too_many = decode_event(json.dumps({**body, "items": [{"item_id": "a"}] * 101}).encode())
    assert isinstance(too_many, DecodeError) and too_many.reason == "too_many_items"
    on_a_view = decode_event(json.dumps({**BASE, "type": "view", "items": [{"item_id": "a"}]}).encode())
    assert isinstance(on_a_view, DecodeError) and "items are for purchase" in on_a_view.detail
