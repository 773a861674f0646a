"""A user's state as bytes and back: versioned, within 1.25 KiB, read by every older version."""

from __future__ import annotations

import struct
from operator import attrgetter, itemgetter
from typing import Final

from retention_model.features.definitions import SIGNALS
from retention_model.features.state.bought import BOUGHT_KEY_MASK, decayed_weight, to_float32
from retention_model.features.state.core import (
    HOUR_MS,
    N_HALF_LIVES,
    N_SIGNALS,
    PURCHASES_SIGNAL,
    STATE_VERSION,
    UserState,
)

__all__ = ["dump_state", "load_state"]

_HEADER: Final = struct.Struct("<BqqqqqqqqqIQd")
_FLOATS: Final = struct.Struct(f"<{N_SIGNALS + N_SIGNALS * N_HALF_LIVES}d")
# Version 3 stores the totals of count signals (sums of ones: whole numbers) as
# uint32, and recent purchase times as 48 bits (low 32, high 16): the room the
# de-duplication windows take, so the busiest state stays within 1 KiB.
_COUNT_SIGNALS: Final = tuple(i for i, signal in enumerate(SIGNALS) if signal.how == "count")
_SUM_SIGNALS: Final = tuple(i for i, signal in enumerate(SIGNALS) if signal.how != "count")
_COUNTS_AND_FLOATS: Final = struct.Struct(f"<{len(_COUNT_SIGNALS)}I{len(_SUM_SIGNALS) + N_SIGNALS * N_HALF_LIVES}d")
_count_totals: Final = itemgetter(*_COUNT_SIGNALS)
_sum_totals: Final = itemgetter(*_SUM_SIGNALS)
# Version 2: flags (opted out, coupon redeemed), cap window day (days since 1970,
# fits 16 bits until 2149), cap count, item count.
_POLICY_TAIL: Final = struct.Struct("<BHBB")
# Version 3: sends in processing time (coupon, recommendation: epoch ms), the wall-clock
# cap window day and count, then the de-duplication windows (counts and 32-bit hashes).
_WALL_TAIL: Final = struct.Struct("<II")
_WEIGHT: Final = struct.Struct("<d")
# Version 4: items bought (see .bought): hash, first and last hour, orders (capped at
# 65,535), weight, the order number it is as of.
_BOUGHT: Final = struct.Struct("<QIIHdI")
# Version 5: items bought in 16 bytes each, their weights as of the user's purchase count:
# the key's low 32 and high 16 bits, hours before the last purchase's hour, hours between
# first and last (both capped at 65,535: 7.5 years), orders (capped at 65,535) and the
# weight as a float32 (see .bought). 16 items in 256 bytes keep the busiest state in 1.25 KiB.
_BOUGHT_V5: Final = struct.Struct("<IHHHHf")
_CAP: Final = 0xFFFF


# Header fields after the version byte, in wire order (load_state unpacks them in this order too).
_HEADER_FIELDS: Final = (
    "offset",
    "anchor_ms",
    "first_seen_ms",
    "last_seen_ms",
    "first_purchase_ms",
    "last_purchase_ms",
    "last_coupon_ms",
    "last_reco_ms",
    "last_scored_ms",
    "interventions_sent",
    "category_bits",
    "last_risk",
)


_header_values: Final = attrgetter(*_HEADER_FIELDS)


def dump_state(state: UserState) -> bytes:
    """Serialise to the compact binary format (version byte first).

    Version 2 appended the policy tail (opt-out, last redemption, recent send
    times, recent items) to the version 1 layout; version 3 packs count totals
    and purchase times tighter and appends the processing-time sends and the
    de-duplication windows; version 4 appends the items bought (up to 8, 30 bytes each,
    for "buy again"), which took the busiest state past 1 KiB; version 5 keeps up to 16
    of them in 16 bytes each.
    """
    recent = state.recent_purchases_ms
    categories = state.categories
    items = state.recent_items
    totals = state.totals
    # The variable-length parts go in one pack call, with a format built per shape
    # (the struct module caches compiled formats).
    names = [name.encode() for name in categories]
    shape = "".join(f"B{len(name)}sd" for name in names)
    tail: list[object] = [len(recent)]
    tail += [t & 0xFFFFFFFF for t in recent]
    tail += [t >> 32 for t in recent]
    tail.append(len(names))
    for name, weight in zip(names, categories.values()):
        tail += (len(name), name, weight)
    flags = int(state.opted_out) | int(state.coupon_redeemed) << 1
    tail += (flags, state.cap_window_day, min(state.cap_count, 255), len(items))
    for item_and_hour in items.items():
        tail += item_and_hour
    ids, orders = state.recent_event_ids, state.recent_order_ids
    tail += (state.last_coupon_wall_ms // 1000, state.last_reco_wall_ms // 1000, len(ids), *ids, len(orders), *orders)
    n = len(recent)
    return b"".join(
        (
            _HEADER.pack(STATE_VERSION, *_header_values(state)),
            _COUNTS_AND_FLOATS.pack(*map(int, _count_totals(totals)), *_sum_totals(totals), *state.decayed),
            struct.pack(f"<B{n}I{n}HB{shape}BHBB{'QI' * len(items)}IIB{len(ids)}IB{len(orders)}I", *tail),
            _dump_bought(state),
        )
    )


def _dump_bought(state: UserState) -> bytes:
    """The items bought, version 5: one pack of the entries as they are, nearly always in range
    (a struct error sends the rest through the clamps: after 7.5 years, or 65,535 orders)."""
    bought = state.bought
    latest = state.last_purchase_ms // HOUR_MS
    shape = f"<B{'IHHHHf' * len(bought)}"
    try:
        return struct.pack(
            shape,
            len(bought),
            *[
                value
                for item, (first, last, in_orders, weight, _) in bought.items()
                for value in (item & 0xFFFFFFFF, item >> 32, latest - last, last - first, in_orders, weight)
            ],
        )
    except struct.error:
        values: list[object] = [len(bought)]
        for item, (first, last, in_orders, weight, _) in bought.items():
            last = int(last)
            before, span = min(max(latest - last, 0), _CAP), min(last - int(first), _CAP)
            values += (item & 0xFFFFFFFF, item >> 32, before, span, min(int(in_orders), _CAP), weight)
        return struct.pack(shape, *values)


def load_state(blob: bytes) -> UserState:
    """Inverse of :func:`dump_state`; reads every state version written so far."""
    version = blob[0]
    if not 1 <= version <= STATE_VERSION:
        msg = f"user state version {version} is not readable by this code (knows 1..{STATE_VERSION})"
        raise ValueError(msg)
    # Fields are assigned straight from the unpacked tuples, not through __init__ and a
    # setattr loop: a state is loaded for every user in every batch.
    state = UserState.__new__(UserState)
    (
        _,
        state.offset,
        state.anchor_ms,
        state.first_seen_ms,
        state.last_seen_ms,
        state.first_purchase_ms,
        state.last_purchase_ms,
        state.last_coupon_ms,
        state.last_reco_ms,
        state.last_scored_ms,
        state.interventions_sent,
        state.category_bits,
        state.last_risk,
    ) = _HEADER.unpack_from(blob, 0)
    pos = _HEADER.size
    if version >= 3:
        values = _COUNTS_AND_FLOATS.unpack_from(blob, pos)
        pos += _COUNTS_AND_FLOATS.size
        totals = [0.0] * N_SIGNALS
        for index, value in zip(_COUNT_SIGNALS, values):
            totals[index] = float(value)
        n_counts = len(_COUNT_SIGNALS)
        for index, value in zip(_SUM_SIGNALS, values[n_counts:]):
            totals[index] = value
        state.totals = totals
        state.decayed = list(values[n_counts + len(_SUM_SIGNALS) :])
        n_recent = blob[pos]
        parts = struct.unpack_from(f"<{n_recent}I{n_recent}H", blob, pos + 1)
        state.recent_purchases_ms = [low | high << 32 for low, high in zip(parts[:n_recent], parts[n_recent:])]
        pos += 1 + 6 * n_recent
    else:
        floats = _FLOATS.unpack_from(blob, pos)
        pos += _FLOATS.size
        state.totals = list(floats[:N_SIGNALS])
        state.decayed = list(floats[N_SIGNALS:])
        n_recent = blob[pos]
        state.recent_purchases_ms = list(struct.unpack_from(f"<{n_recent}q", blob, pos + 1))
        pos += 1 + 8 * n_recent
    n_categories = blob[pos]
    pos += 1
    categories: dict[str, float] = {}
    weight_at = _WEIGHT.unpack_from
    for _ in range(n_categories):
        end = pos + 1 + blob[pos]
        (categories[blob[pos + 1 : end].decode()],) = weight_at(blob, end)
        pos = end + 8
    state.categories = categories
    state.recent_items = {}
    if version >= 2:
        flags, state.cap_window_day, state.cap_count, n_items = _POLICY_TAIL.unpack_from(blob, pos)
        state.opted_out = bool(flags & 1)
        state.coupon_redeemed = bool(flags & 2)
        pos += _POLICY_TAIL.size
        if n_items:
            pairs = struct.unpack_from(f"<{'QI' * n_items}", blob, pos)
            state.recent_items = dict(zip(pairs[::2], pairs[1::2]))
            pos += 12 * n_items
    else:
        state.opted_out = state.coupon_redeemed = False
        state.cap_window_day = state.cap_count = 0
    if version >= 3:
        coupon_s, reco_s = _WALL_TAIL.unpack_from(blob, pos)
        state.last_coupon_wall_ms, state.last_reco_wall_ms = coupon_s * 1000, reco_s * 1000
        pos += _WALL_TAIL.size
        n_ids = blob[pos]
        state.recent_event_ids = list(struct.unpack_from(f"<{n_ids}I", blob, pos + 1))
        pos += 1 + 4 * n_ids
        n_orders = blob[pos]
        state.recent_order_ids = list(struct.unpack_from(f"<{n_orders}I", blob, pos + 1))
        pos += 1 + 4 * n_orders
    else:
        state.last_coupon_wall_ms = state.last_reco_wall_ms = 0
        state.recent_event_ids = []
        state.recent_order_ids = []
    state.bought = {}
    if version >= 5:
        n_bought = blob[pos]
        pos += 1
        latest, at = state.last_purchase_ms // HOUR_MS, int(state.totals[PURCHASES_SIGNAL])
        for _ in range(n_bought):
            low, high, before, span, in_orders, weight = _BOUGHT_V5.unpack_from(blob, pos)
            state.bought[low | high << 32] = [latest - before - span, latest - before, in_orders, weight, at]
            pos += _BOUGHT_V5.size
    elif version == 4:
        state.bought = _bought_v4(blob, pos, int(state.totals[PURCHASES_SIGNAL]))
    return state


def _bought_v4(blob: bytes, pos: int, at: int) -> dict[int, list[float]]:
    """Version 4's items bought as version 5 keeps them: 48-bit keys, float32 weights as of
    the user's purchase count ``at``."""
    entries = [_BOUGHT.unpack_from(blob, pos + 1 + i * _BOUGHT.size) for i in range(blob[pos])]
    return {
        item & BOUGHT_KEY_MASK: [first, last, in_orders, to_float32(decayed_weight([0, 0, 0, weight, was_at], at)), at]
        for item, first, last, in_orders, weight, was_at in entries
    }
