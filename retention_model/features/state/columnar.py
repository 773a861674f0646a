"""The fold of a whole batch at once: events as columns, the numeric state as arrays, one Numba loop.

:func:`~.core.apply_event` folds one event into one :class:`UserState` in Python, a few
µs each. Here a batch's events become columns (user row, offset, type code, time, id
hashes, measures), the touched users' numeric state is gathered into arrays once, and
one compiled loop does what ``apply_event`` does to them, event after event in the same
order with the same arithmetic: offsets, the de-duplication windows, preferences, first
and last times, the decayed sums, purchases and coupon redemptions. What keys on
strings (the category profile, items seen, items bought) stays in Python, for the
applied events only, afterwards. A property test holds the two folds equal, state for
state.

A user whose events in the batch would move their anchor (more than
:data:`~.core.REANCHOR_AFTER_MS` of event time: a backfill) is folded by
``apply_event`` instead: the anchor is then fixed for the batch, which is what lets the
category weights be added after the loop.

Numba compiles the loop once per machine (``cache=True`` keeps it on disk) and
:func:`warm_up` does it at worker start, never on the first batch.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Final

import numpy as np
from numba import njit

from retention_model.events import Event, EventType
from retention_model.features.state.bought import add_bought, bought_items, item_hash
from retention_model.features.state.core import (
    _CATEGORY_WEIGHT,
    _FOLD_BY_TYPE,
    _MEASURES,
    APPLIED,
    DAY_MS,
    DUPLICATE_EVENT,
    HALF_LIVES_MS,
    HOUR_MS,
    N_HALF_LIVES,
    N_SIGNALS,
    PURCHASES_SIGNAL,
    REANCHOR_AFTER_MS,
    RECENT_EVENT_IDS_KEPT,
    RECENT_ORDER_IDS_KEPT,
    RECENT_PURCHASES_KEPT,
    REPLAYED,
    ApplyOutcome,
    UserState,
    _add_category,
    _add_item,
    apply_event,
)

__all__ = ["OUTCOMES", "fold_batch", "warm_up"]

#: Outcome codes of the compiled loop, in this order.
OUTCOMES: Final[tuple[ApplyOutcome, ...]] = (APPLIED, REPLAYED, DUPLICATE_EVENT)

_KINDS: Final = tuple(EventType)
_KIND_CODE: Final = {kind: code for code, kind in enumerate(_KINDS)}
_PURCHASE_CODE: Final = _KIND_CODE[EventType.PURCHASE]
_REDEEM_CODE: Final = _KIND_CODE[EventType.COUPON_REDEEM]
_OPT_OUT_CODE: Final = _KIND_CODE[EventType.OPT_OUT]
_OPT_IN_CODE: Final = _KIND_CODE[EventType.OPT_IN]
_ITEM_SEED_TYPES: Final = frozenset(_CATEGORY_WEIGHT) - {EventType.PURCHASE}
_PREFERENCE_TYPES: Final = frozenset({EventType.OPT_OUT, EventType.OPT_IN})

# Measures as columns of the event matrix; code 0 is "one" (no column).
_MEASURE_NAMES: Final = tuple(_MEASURES)
_MEASURE_CODE: Final = {name: code + 1 for code, name in enumerate(_MEASURE_NAMES)}
_MEASURE_OF: Final = {fn: _MEASURE_CODE[name] for name, fn in _MEASURES.items()}
# Per type code, its signals as a slice of (signal index, measure code).
_SIGNAL_START: Final = np.zeros(len(_KINDS), dtype=np.int64)
_SIGNAL_COUNT: Final = np.zeros(len(_KINDS), dtype=np.int64)
_signal_rows: list[tuple[int, int]] = []
for _code, _kind in enumerate(_KINDS):
    _SIGNAL_START[_code] = len(_signal_rows)
    for _index, _base, _measure in _FOLD_BY_TYPE[_kind]:
        _signal_rows.append((_index, 0 if _measure is None else _MEASURE_OF[_measure]))
    _SIGNAL_COUNT[_code] = len(_signal_rows) - _SIGNAL_START[_code]
_SIGNAL_TABLE: Final = np.array(_signal_rows, dtype=np.int64).reshape(-1, 2)
_HALF_LIVES: Final = np.array(HALF_LIVES_MS, dtype=np.int64)
#: Type codes with a signal that reads a measure (the others need no measure columns).
_MEASURED_CODES: Final = frozenset(
    code for code, kind in enumerate(_KINDS) if any(measure is not None for _, _, measure in _FOLD_BY_TYPE[kind])
)

# Columns of the gathered scalar state.
_OFFSET, _FIRST_SEEN, _LAST_SEEN, _ANCHOR, _FIRST_PURCHASE, _LAST_PURCHASE, _LAST_COUPON = range(7)
_OPTED_OUT, _REDEEMED, _N_IDS, _N_ORDERS, _N_RECENT = range(7, 12)
_N_SCALARS: Final = 12


@njit(cache=True, nogil=True)
def _fold_loop(
    rows: np.ndarray,
    offsets: np.ndarray,
    kinds: np.ndarray,
    times: np.ndarray,
    id_hashes: np.ndarray,
    order_hashes: np.ndarray,
    measures: np.ndarray,
    signal_start: np.ndarray,
    signal_count: np.ndarray,
    signal_table: np.ndarray,
    half_lives: np.ndarray,
    two: float,
    scalars: np.ndarray,
    totals: np.ndarray,
    decayed: np.ndarray,
    ids: np.ndarray,
    orders: np.ndarray,
    recent: np.ndarray,
    outcome: np.ndarray,
    order_number: np.ndarray,
) -> None:
    """``apply_event`` over arrays, event after event (see the module's docstring)."""
    n_half = half_lives.shape[0]
    grow = np.empty(n_half)
    for e in range(rows.shape[0]):
        u = rows[e]
        state = scalars[u]
        if offsets[e] >= 0:
            if offsets[e] <= state[0]:
                outcome[e] = 1
                continue
            state[0] = offsets[e]
        kind = kinds[e]
        id_hash = id_hashes[e]
        n_ids = state[9]
        seen = False
        for k in range(n_ids):
            if ids[u, k] == id_hash:
                seen = True
                break
        if seen:
            outcome[e] = 2
            continue
        if kind == _PURCHASE_CODE and order_hashes[e] >= 0:
            n_orders = state[10]
            for k in range(n_orders):
                if orders[u, k] == order_hashes[e]:
                    seen = True
                    break
            if seen:
                outcome[e] = 2
                continue
            if n_orders == orders.shape[1]:
                for k in range(n_orders - 1):
                    orders[u, k] = orders[u, k + 1]
                n_orders -= 1
            orders[u, n_orders] = order_hashes[e]
            state[10] = n_orders + 1
        if n_ids == ids.shape[1]:
            for k in range(n_ids - 1):
                ids[u, k] = ids[u, k + 1]
            n_ids -= 1
        ids[u, n_ids] = id_hash
        state[9] = n_ids + 1
        outcome[e] = 0
        if kind in (_OPT_OUT_CODE, _OPT_IN_CODE):
            state[7] = 1 if kind == _OPT_OUT_CODE else 0
            continue
        ts = times[e]
        if state[1] == 0:
            state[1] = ts
            state[2] = ts
            state[3] = ts - ts % DAY_MS
        else:
            if ts < state[1]:
                state[1] = ts
            if ts > state[2]:
                state[2] = ts
        count = signal_count[kind]
        if count:
            age = ts - state[3]
            for h in range(n_half):
                grow[h] = two ** (age / half_lives[h])  # not 2.0: LLVM would make it exp2
            start = signal_start[kind]
            for s in range(start, start + count):
                index = signal_table[s, 0]
                measure = signal_table[s, 1]
                value = 1.0 if measure == 0 else measures[e, measure - 1]
                if value == 0.0:
                    continue
                totals[u, index] += value
                base = index * n_half
                for h in range(n_half):
                    decayed[u, base + h] += value * grow[h]
        if kind == _PURCHASE_CODE:
            if state[4] == 0 or ts < state[4]:
                state[4] = ts
            if ts > state[5]:
                state[5] = ts
            n_recent = state[11]
            at = n_recent
            while at > 0 and recent[u, at - 1] > ts:  # insort: after equal times
                at -= 1
            if n_recent == recent.shape[1]:
                if at == 0:  # the new time is the oldest: it is the one dropped
                    order_number[e] = int(totals[u, PURCHASES_SIGNAL])
                    continue
                for k in range(at - 1):
                    recent[u, k] = recent[u, k + 1]
                recent[u, at - 1] = ts
            else:
                for k in range(n_recent, at, -1):
                    recent[u, k] = recent[u, k - 1]
                recent[u, at] = ts
                state[11] = n_recent + 1
            order_number[e] = int(totals[u, PURCHASES_SIGNAL])
        elif kind == _REDEEM_CODE and state[6] and ts >= state[6]:
            state[8] = 1


def _columns(flat: Sequence[tuple[Event, int]], rows: list[int]) -> tuple[np.ndarray, ...]:
    """The events' columns, in the order of ``flat``."""
    events = [event for event, _ in flat]
    kinds = [_KIND_CODE[event.type] for event in events]
    measures = np.zeros((len(events), len(_MEASURE_NAMES)))
    for j, kind in enumerate(kinds):
        if kind in _MEASURED_CODES:
            event = events[j]
            measures[j] = [measure(event) for measure in _MEASURES.values()]
    crc32 = zlib.crc32
    return (
        np.array(rows, dtype=np.int64),
        np.array([-1 if offset is None else offset for _, offset in flat], dtype=np.int64),
        np.array(kinds, dtype=np.int64),
        np.array([event.ts_ms for event in events], dtype=np.int64),
        np.array([crc32(event.event_id.encode()) for event in events], dtype=np.int64),
        np.array(
            [-1 if event.order_id is None else crc32(event.order_id.encode()) for event in events], dtype=np.int64
        ),
        measures,
    )


def _gather(states: Sequence[UserState]) -> tuple[np.ndarray, ...]:
    """The numeric state of ``states`` as arrays, one row per user."""
    n = len(states)
    scalars = np.array(
        [
            (
                s.offset,
                s.first_seen_ms,
                s.last_seen_ms,
                s.anchor_ms,
                s.first_purchase_ms,
                s.last_purchase_ms,
                s.last_coupon_ms,
                s.opted_out,
                s.coupon_redeemed,
                len(s.recent_event_ids),
                len(s.recent_order_ids),
                len(s.recent_purchases_ms),
            )
            for s in states
        ],
        dtype=np.int64,
    ).reshape(n, _N_SCALARS)
    totals = np.array([s.totals for s in states], dtype=np.float64).reshape(n, N_SIGNALS)
    decayed = np.array([s.decayed for s in states], dtype=np.float64).reshape(n, N_SIGNALS * N_HALF_LIVES)
    ids = np.zeros((n, RECENT_EVENT_IDS_KEPT), dtype=np.int64)
    orders = np.zeros((n, RECENT_ORDER_IDS_KEPT), dtype=np.int64)
    recent = np.zeros((n, RECENT_PURCHASES_KEPT), dtype=np.int64)
    for row, s in enumerate(states):
        if s.recent_event_ids:
            ids[row, : len(s.recent_event_ids)] = s.recent_event_ids
        if s.recent_order_ids:
            orders[row, : len(s.recent_order_ids)] = s.recent_order_ids
        if s.recent_purchases_ms:
            recent[row, : len(s.recent_purchases_ms)] = s.recent_purchases_ms
    return scalars, totals, decayed, ids, orders, recent


def _scatter(states: Sequence[UserState], arrays: tuple[np.ndarray, ...]) -> None:
    """Write the arrays back into ``states``."""
    scalars, totals, decayed, ids, orders, recent = (a.tolist() for a in arrays)
    for s, row, t, d, i, o, r in zip(states, scalars, totals, decayed, ids, orders, recent):
        (
            s.offset,
            s.first_seen_ms,
            s.last_seen_ms,
            s.anchor_ms,
            s.first_purchase_ms,
            s.last_purchase_ms,
            s.last_coupon_ms,
            opted_out,
            redeemed,
            n_ids,
            n_orders,
            n_recent,
        ) = row
        s.opted_out = bool(opted_out)
        s.coupon_redeemed = bool(redeemed)
        s.totals = t
        s.decayed = d
        s.recent_event_ids = i[:n_ids]
        s.recent_order_ids = o[:n_orders]
        s.recent_purchases_ms = r[:n_recent]


def _moves_anchor(state: UserState, events: Sequence[tuple[Event, int]]) -> bool:
    """Whether ``events`` could move the state's anchor (then ``apply_event`` folds them)."""
    times = [event.ts_ms for event, _ in events]
    lowest = state.anchor_ms if state.first_seen_ms else min(times) - min(times) % DAY_MS
    return max(times) - lowest > REANCHOR_AFTER_MS


def fold_batch(states: Sequence[UserState], events: Sequence[Sequence[tuple[Event, int]]]) -> list[list[ApplyOutcome]]:
    """Fold each user's events (with their source offsets, in order) into their state, in place.

    ``events[i]`` are the events of ``states[i]``. Returns, per user, what became of each
    event, as :func:`~.core.apply_event` would have said event by event.
    """
    outcomes: list[list[ApplyOutcome]] = [[] for _ in states]
    columnar: list[int] = []
    for u, (state, mine) in enumerate(zip(states, events)):
        if not mine:
            continue
        if _moves_anchor(state, mine):
            outcomes[u] = [apply_event(state, event, offset) for event, offset in mine]
        else:
            columnar.append(u)
    if not columnar:
        return outcomes
    chosen = [states[u] for u in columnar]
    flat: list[tuple[Event, int]] = []
    rows: list[int] = []
    for row, u in enumerate(columnar):
        flat.extend(events[u])
        rows.extend([row] * len(events[u]))
    columns = _columns(flat, rows)
    arrays = _gather(chosen)
    outcome = np.zeros(len(flat), dtype=np.int64)
    order_number = np.zeros(len(flat), dtype=np.int64)
    _fold_loop(*columns, _SIGNAL_START, _SIGNAL_COUNT, _SIGNAL_TABLE, _HALF_LIVES, 2.0, *arrays, outcome, order_number)
    _scatter(chosen, arrays)
    codes = outcome.tolist()
    numbers = order_number.tolist()
    position = 0
    for u in columnar:
        state = states[u]
        mine = events[u]
        end = position + len(mine)
        outcomes[u] = [OUTCOMES[code] for code in codes[position:end]]
        for (event, _), code, number in zip(mine, codes[position:end], numbers[position:end]):
            if code == 0:
                _profile(state, event, number)
        position = end
    return outcomes


def _profile(state: UserState, event: Event, order_number: int) -> None:
    """The string-keyed part of ``apply_event`` for an applied event: items bought, items seen, categories."""
    kind = event.type
    if kind in _PREFERENCE_TYPES:  # moves nothing but the preference, set by the loop
        return
    if kind is EventType.PURCHASE:
        hashes = [item_hash(item) for item in bought_items(event)]
        if hashes:
            add_bought(state.bought, hashes, event.ts_ms // HOUR_MS, order_number)
    elif event.item_id is not None and kind in _ITEM_SEED_TYPES:
        _add_item(state.recent_items, item_hash(event.item_id), event.ts_ms // HOUR_MS)
    if event.category is not None:
        _add_category(state, event)


def warm_up() -> None:
    """Compile the loop now (or load it from Numba's cache): at start, not on the first batch."""
    state = UserState()
    event = Event("warm-up", "warm-up", EventType.PURCHASE, 1_700_000_000_000, price=1.0, order_id="o")
    fold_batch([state], [[(event, 0)]])
