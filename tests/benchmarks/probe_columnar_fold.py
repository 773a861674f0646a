"""Probe (NOTES entry 47): the fold with each user's state in arrays between batches, categories
and items as integer codes, one compiled loop; checked against ``apply_event`` and timed beside it.

    pip install numba   # not a dependency of the project (yet)
    python -m tests.benchmarks.probe_columnar_fold [--many-users] [--repeat 3]

Not product code: it measures what issue 15's columnar state store would give the fold stage
(entry 46 budgets it at 1 µs an event), on the core benchmark's log in batches of 2,000. The
items bought stay in Python (a dict per user, ``add_bought`` per applied purchase), as the
probe's one honest shortcut; a state that would need re-anchoring is counted and refused.
"""

from __future__ import annotations

import argparse
import time
import zlib
from typing import Any

import numpy as np
from numba import njit

from retention_model.events import Event, EventType
from retention_model.features.definitions import SIGNALS
from retention_model.features.state import (
    CATEGORY_HALF_LIFE_MS,
    DAY_MS,
    HALF_LIVES_MS,
    HOUR_MS,
    N_HALF_LIVES,
    N_SIGNALS,
    PURCHASES_SIGNAL,
    REANCHOR_AFTER_MS,
    UserState,
    apply_event,
    item_hash,
)
from retention_model.features.state.bought import add_bought, bought_items, bought_key
from retention_model.features.state.core import _category_key
from retention_model.pipeline import MemoryStore, decode_records, fold_events
from retention_model.pipeline.state_cache import StateCache
from tests.benchmarks.profile_core import _dataset
from tests.benchmarks.test_core import BATCH_SIZE, LIMITS

TYPES = list(EventType)
CODE = {kind: i for i, kind in enumerate(TYPES)}
MEASURE_CODES = {"one": 0, "amount": 1, "quantity": 2, "rating": 3, "with_coupon": 4}
N_TYPES = len(TYPES)
SIG_INDEX = np.full((N_TYPES, N_SIGNALS), -1, dtype=np.int64)
SIG_MEASURE = np.zeros((N_TYPES, N_SIGNALS), dtype=np.int64)
for _i, _s in enumerate(SIGNALS):
    _t = CODE[_s.event_type]
    _k = int((SIG_INDEX[_t] >= 0).sum())
    SIG_INDEX[_t, _k], SIG_MEASURE[_t, _k] = _i, MEASURE_CODES[_s.measure]
CAT_WEIGHT = np.zeros(N_TYPES)
for _kind, _w in ((EventType.VIEW, 1.0), (EventType.ADD_TO_CART, 2.0), (EventType.PURCHASE, 4.0)):
    CAT_WEIGHT[CODE[_kind]] = _w
IS_PREF = np.array([k in (EventType.OPT_OUT, EventType.OPT_IN) for k in TYPES])
OPT_OUT, PURCHASE, REDEEM = CODE[EventType.OPT_OUT], CODE[EventType.PURCHASE], CODE[EventType.COUPON_REDEEM]
REVIEW = CODE[EventType.REVIEW]
H = np.array(HALF_LIVES_MS, dtype=np.float64)


class Columns:
    """Every user's state as arrays (a row per user), as a columnar store would hold it between batches."""

    def __init__(self, capacity: int) -> None:
        n = capacity
        self.row: dict[bytes, int] = {}
        self.ints = np.zeros((n, 7), dtype=np.int64)  # offset, first, last, anchor, first/last purchase, last coupon
        self.ints[:, 0] = -1
        self.flags = np.zeros((n, 2), dtype=np.bool_)  # opted out, coupon redeemed
        self.totals = np.zeros((n, N_SIGNALS))
        self.decayed = np.zeros((n, N_SIGNALS * N_HALF_LIVES))
        self.ids = np.zeros((n, 8), dtype=np.int64)
        self.orders = np.zeros((n, 4), dtype=np.int64)
        self.purchases = np.zeros((n, 8), dtype=np.int64)
        self.cat_code = np.zeros((n, 9), dtype=np.int64)
        self.cat_weight = np.zeros((n, 9))
        self.cat_bits = np.zeros(n, dtype=np.uint64)
        self.item_hash = np.zeros((n, 4), dtype=np.uint64)
        self.item_hour = np.zeros((n, 4), dtype=np.int64)
        self.counts = np.zeros((n, 5), dtype=np.int64)  # ids, orders, purchases, categories, items
        self.bought: list[dict[int, list[float]]] = [{} for _ in range(n)]
        self.categories: dict[str, int] = {}
        self.category_names: list[str] = []

    def rows(self, keys: list[bytes]) -> np.ndarray:
        row = self.row
        return np.fromiter((row.setdefault(k, len(row)) for k in keys), dtype=np.int64, count=len(keys))


def build_columns(cols: Columns, by_user: dict[bytes, list[tuple[Event, int]]]) -> tuple[Any, ...]:
    """The batch's events as columns, users in first-seen order, each user's in offset order."""
    keys = list(by_user)
    user_rows = cols.rows(keys)
    per_user = [len(v) for v in by_user.values()]
    pairs = [pair for events in by_user.values() for pair in events]
    events = [e for e, _ in pairs]
    n = len(events)
    rows = np.repeat(user_rows, per_user)
    offsets = np.array([o for _, o in pairs], dtype=np.int64)
    codes = np.array([CODE[e.type] for e in events], dtype=np.int64)
    ts = np.array([e.ts_ms for e in events], dtype=np.int64)
    crc = zlib.crc32
    ids = np.array([crc(e.event_id.encode()) for e in events], dtype=np.int64)
    orders = np.array([-1 if e.order_id is None else crc(e.order_id.encode()) for e in events], dtype=np.int64)
    measures = np.zeros((n, 5))
    measures[:, 0] = 1.0
    for i in np.flatnonzero(codes == PURCHASE).tolist():
        e = events[i]
        measures[i, 1:3] = e.amount, float(e.quantity if e.quantity is not None else 1)
        measures[i, 4] = 1.0 if e.coupon_id is not None else 0.0
    for i in np.flatnonzero(codes == REVIEW).tolist():
        rating = events[i].rating
        measures[i, 3] = rating if rating is not None else 0.0
    names, known = cols.category_names, cols.categories
    keyed = [_category_key(e.category) if e.category is not None else None for e in events]
    for found in keyed:
        if found is not None and found[0] not in known:
            known[found[0]] = len(names)
            names.append(found[0])
    cats = np.array([-1 if k is None else known[k[0]] for k in keyed], dtype=np.int64)
    bits = np.array([0 if k is None else k[1] for k in keyed], dtype=np.uint64)
    item_ids = [e.item_id for e in events]
    has_item = np.array([i is not None for i in item_ids], dtype=np.bool_)
    items = np.array([0 if i is None else item_hash(i) for i in item_ids], dtype=np.uint64)
    return events, rows, offsets, codes, ts, ids, orders, measures, cats, bits, items, has_item


@njit(cache=True)
def fold_kernel(
    two, rows, offsets, codes, ts_all, ids_in, orders_in, measures, cats, bits, items, has_item,
    ints, flags, totals, decayed, ids, orders, purchases, cat_code, cat_weight, cat_bits, item_hash_, item_hour,
    counts, sig_index, sig_measure, cat_w, is_pref, opt_out, purchase, redeem, half_lives, cat_half_life,
    day_ms, hour_ms, reanchor_ms, purchases_signal, outcome, order_number,
):  # fmt: skip
    for i in range(rows.shape[0]):
        r = rows[i]
        if offsets[i] <= ints[r, 0]:
            outcome[i] = 1
            continue
        ints[r, 0] = offsets[i]
        t = codes[i]
        h = ids_in[i]
        seen = False
        for j in range(counts[r, 0]):
            if ids[r, j] == h:
                seen = True
        if seen:
            outcome[i] = 2
            continue
        if t == purchase and orders_in[i] >= 0:
            o = orders_in[i]
            for j in range(counts[r, 1]):
                if orders[r, j] == o:
                    seen = True
            if seen:
                outcome[i] = 2
                continue
            if counts[r, 1] < 4:
                orders[r, counts[r, 1]] = o
                counts[r, 1] += 1
            else:
                for j in range(3):
                    orders[r, j] = orders[r, j + 1]
                orders[r, 3] = o
        if counts[r, 0] < 8:
            ids[r, counts[r, 0]] = h
            counts[r, 0] += 1
        else:
            for j in range(7):
                ids[r, j] = ids[r, j + 1]
            ids[r, 7] = h
        if is_pref[t]:
            flags[r, 0] = t == opt_out
            outcome[i] = 0
            continue
        ts = ts_all[i]
        if ints[r, 1] == 0:
            ints[r, 1] = ts
            ints[r, 2] = ts
            ints[r, 3] = ts - ts % day_ms
        else:
            if ts < ints[r, 1]:
                ints[r, 1] = ts
            if ts > ints[r, 2]:
                ints[r, 2] = ts
            if ts - ints[r, 3] > reanchor_ms:
                outcome[i] = 3  # refused: the probe does not re-anchor
                return
        age = ts - ints[r, 3]
        if sig_index[t, 0] >= 0:
            g0 = two ** (age / half_lives[0])
            g1 = two ** (age / half_lives[1])
            g2 = two ** (age / half_lives[2])
            g3 = two ** (age / half_lives[3])
            for k in range(sig_index.shape[1]):
                s = sig_index[t, k]
                if s < 0:
                    break
                value = measures[i, sig_measure[t, k]]
                if value == 0.0:
                    continue
                totals[r, s] += value
                base = s * 4
                decayed[r, base] += value * g0
                decayed[r, base + 1] += value * g1
                decayed[r, base + 2] += value * g2
                decayed[r, base + 3] += value * g3
        if t == purchase:
            if ints[r, 4] == 0 or ts < ints[r, 4]:
                ints[r, 4] = ts
            if ts > ints[r, 5]:
                ints[r, 5] = ts
            n = counts[r, 2]
            at = n
            while at > 0 and purchases[r, at - 1] > ts:
                at -= 1
            if n < 8:
                for j in range(n, at, -1):
                    purchases[r, j] = purchases[r, j - 1]
                purchases[r, at] = ts
                counts[r, 2] = n + 1
            elif at > 0:  # full: the oldest leaves (an older one than all kept never enters)
                for j in range(at - 1):
                    purchases[r, j] = purchases[r, j + 1]
                purchases[r, at - 1] = ts
            order_number[i] = int(totals[r, purchases_signal])
        elif t == redeem:
            if ints[r, 6] != 0 and ts >= ints[r, 6]:
                flags[r, 1] = True
        elif has_item[i] and cat_w[t] > 0.0:
            hour = ts // hour_ms
            n = counts[r, 4]
            found = -1
            for j in range(n):
                if item_hash_[r, j] == items[i]:
                    found = j
            if found >= 0:
                if hour > item_hour[r, found]:
                    item_hour[r, found] = hour
            else:
                item_hash_[r, n] = items[i]
                item_hour[r, n] = hour
                n += 1
                if n > 3:
                    low = 0
                    for j in range(1, n):
                        if item_hour[r, j] < item_hour[r, low] or (
                            item_hour[r, j] == item_hour[r, low] and item_hash_[r, j] < item_hash_[r, low]
                        ):
                            low = j
                    for j in range(low, n - 1):
                        item_hash_[r, j] = item_hash_[r, j + 1]
                        item_hour[r, j] = item_hour[r, j + 1]
                    n -= 1
                counts[r, 4] = n
        if cats[i] >= 0:
            cat_bits[r] |= bits[i]
            w = cat_w[t]
            if w > 0.0:
                n = counts[r, 3]
                added = w * two ** ((ts - ints[r, 3]) / cat_half_life)
                found = -1
                for j in range(n):
                    if cat_code[r, j] == cats[i]:
                        found = j
                if found >= 0:
                    cat_weight[r, found] = cat_weight[r, found] + added
                else:
                    cat_code[r, n] = cats[i]
                    cat_weight[r, n] = 0.0 + added
                    n += 1
                    if n > 8:
                        low = 0
                        for j in range(1, n):
                            if cat_weight[r, j] < cat_weight[r, low]:
                                low = j
                        for j in range(low, n - 1):
                            cat_code[r, j] = cat_code[r, j + 1]
                            cat_weight[r, j] = cat_weight[r, j + 1]
                        n -= 1
                    counts[r, 3] = n
        outcome[i] = 0


def fold_columns(cols: Columns, by_user: dict[bytes, list[tuple[Event, int]]]) -> tuple[float, float, float]:
    """Fold one batch; seconds spent building columns, in the kernel, and on the items bought."""
    t0 = time.perf_counter()
    events, rows, offsets, codes, ts, ids, orders, measures, cats, bits, items, has_item = build_columns(cols, by_user)
    outcome = np.zeros(len(events), dtype=np.int64)
    order_number = np.zeros(len(events), dtype=np.int64)
    t1 = time.perf_counter()
    fold_kernel(
        2.0, rows, offsets, codes, ts, ids, orders, measures, cats, bits, items, has_item,
        cols.ints, cols.flags, cols.totals, cols.decayed, cols.ids, cols.orders, cols.purchases,
        cols.cat_code, cols.cat_weight, cols.cat_bits, cols.item_hash, cols.item_hour, cols.counts,
        SIG_INDEX, SIG_MEASURE, CAT_WEIGHT, IS_PREF, OPT_OUT, PURCHASE, REDEEM, H, float(CATEGORY_HALF_LIFE_MS),
        DAY_MS, HOUR_MS, REANCHOR_AFTER_MS, PURCHASES_SIGNAL, outcome, order_number,
    )  # fmt: skip
    if (outcome == 3).any():
        raise SystemExit("a state needed re-anchoring: the probe does not do it")
    t2 = time.perf_counter()
    for i in np.flatnonzero((codes == PURCHASE) & (outcome == 0)).tolist():
        event, bought = events[i], cols.bought[rows[i]]
        hashes = [bought_key(item) for item in bought_items(event)]
        if hashes or bought:
            add_bought(bought, hashes, event.ts_ms // HOUR_MS, int(order_number[i]))
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def as_state(cols: Columns, r: int) -> UserState:
    """Row ``r`` as a :class:`UserState` (the fields the fold writes), to compare with ``apply_event``'s."""
    s = UserState()
    (s.offset, s.first_seen_ms, s.last_seen_ms, s.anchor_ms, s.first_purchase_ms, s.last_purchase_ms, _) = cols.ints[
        r
    ].tolist()
    s.opted_out, s.coupon_redeemed = (bool(x) for x in cols.flags[r])
    s.totals, s.decayed = cols.totals[r].tolist(), cols.decayed[r].tolist()
    n_ids, n_orders, n_purchases, n_cats, n_items = cols.counts[r].tolist()
    s.recent_event_ids, s.recent_order_ids = cols.ids[r, :n_ids].tolist(), cols.orders[r, :n_orders].tolist()
    s.recent_purchases_ms = cols.purchases[r, :n_purchases].tolist()
    names = cols.category_names
    s.categories = {
        names[c]: w for c, w in zip(cols.cat_code[r, :n_cats].tolist(), cols.cat_weight[r, :n_cats].tolist())
    }
    s.category_bits = int(cols.cat_bits[r])
    s.recent_items = dict(zip(cols.item_hash[r, :n_items].tolist(), cols.item_hour[r, :n_items].tolist()))
    s.bought = cols.bought[r]
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--many-users", action="store_true", help="20,000 users over 4 days")
    args = parser.parse_args()
    records, wall, label = _dataset(args.many_users)
    batches, watermark = [], 0
    for start in range(0, len(records), BATCH_SIZE):
        decoded = decode_records(records[start : start + BATCH_SIZE], watermark=watermark, wall_ms=wall, limits=LIMITS)
        watermark = decoded.watermark
        batches.append(decoded.events)
    n = len(records)
    warm = Columns(16)
    fold_columns(warm, dict(list(batches[0].items())[:4]))  # compile (or load the cache) before timing
    best_ref = best = None
    for _ in range(args.repeat):
        store, cache = MemoryStore(), StateCache(20_000)
        ref = 0.0
        for events in batches:
            t = time.perf_counter()
            folded = fold_events(events, store, cache)
            ref += time.perf_counter() - t
            blank = b""  # one object: the cache's identity check holds, as for a blob just written
            store.put_many([(k, blank) for k, _ in folded.changed])
            cache.keep((k, blank, s) for k, s in folded.changed)
        best_ref = ref if best_ref is None else min(best_ref, ref)
        cols = Columns(len({r.key for r in records}))
        spent = np.zeros(3)
        for events in batches:
            spent += fold_columns(cols, events)
        best = spent if best is None or spent.sum() < best.sum() else best
    reference = {}
    for events in batches:
        for key, pairs in events.items():
            state = reference.setdefault(key, UserState())
            for event, offset in pairs:
                apply_event(state, event, offset)
    mismatched = [k for k, state in reference.items() if as_state(cols, cols.row[k]) != state]
    equal = len(reference) - len(mismatched)
    print(f"{n:,} events ({label}); states equal to apply_event's: {equal:,} of {len(reference):,} users")
    assert best is not None and best_ref is not None
    for name, seconds in zip(("columns", "kernel", "items bought"), best, strict=True):
        print(f"  {name:13s} {1e6 * seconds / n:5.2f} µs/event")
    print(f"  {'columnar':13s} {1e6 * best.sum() / n:5.2f} µs/event")
    print(f"  {'fold_events':13s} {1e6 * best_ref / n:5.2f} µs/event (objects, the decoded-state cache hit)")


if __name__ == "__main__":
    main()
