"""Merging two states of one user built on disjoint sets of their events (backfills)."""

from __future__ import annotations

from retention_model.features.state.bought import (
    BOUGHT_ITEMS_KEPT,
    FIRST,
    LAST,
    ORDER_HALF_LIFE,
    ORDERS,
    WEIGHT,
    decayed_weight,
    to_float32,
)
from retention_model.features.state.core import (
    DAY_MS,
    PURCHASES_SIGNAL,
    REANCHOR_AFTER_MS,
    RECENT_EVENT_IDS_KEPT,
    RECENT_ORDER_IDS_KEPT,
    RECENT_PURCHASES_KEPT,
    TOP_CATEGORIES_KEPT,
    UserState,
    _add_item,
    _newest_distinct,
    _reanchor,
)

__all__ = ["merge_states"]


def merge_states(a: UserState, b: UserState) -> UserState:
    """One user's state from two states built on disjoint sets of their events.

    Totals and decayed sums add (after moving both to one anchor), first/last times
    take min/max, the recent-purchase and category profiles keep the top entries.
    It lets a backfill split a user's history, and combine the parts.
    """
    if a.is_empty:
        return b.copy()
    if b.is_empty:
        return a.copy()
    left, right = a.copy(), b.copy()
    anchor = min(left.anchor_ms, right.anchor_ms)
    _reanchor(left, anchor)
    _reanchor(right, anchor)
    out = left
    out.offset = max(left.offset, right.offset)
    out.first_seen_ms = min(left.first_seen_ms, right.first_seen_ms)
    out.last_seen_ms = max(left.last_seen_ms, right.last_seen_ms)
    firsts = [t for t in (left.first_purchase_ms, right.first_purchase_ms) if t]
    out.first_purchase_ms = min(firsts) if firsts else 0
    out.last_purchase_ms = max(left.last_purchase_ms, right.last_purchase_ms)
    out.last_coupon_ms = max(left.last_coupon_ms, right.last_coupon_ms)
    out.last_reco_ms = max(left.last_reco_ms, right.last_reco_ms)
    if right.last_scored_ms > left.last_scored_ms:
        out.last_scored_ms, out.last_risk = right.last_scored_ms, right.last_risk
    out.interventions_sent = left.interventions_sent + right.interventions_sent
    newer = right if right.last_seen_ms >= left.last_seen_ms else left
    out.opted_out = newer.opted_out
    out.coupon_redeemed = (left.coupon_redeemed or right.coupon_redeemed) and not (
        left.last_coupon_ms != right.last_coupon_ms
        and not (left if left.last_coupon_ms > right.last_coupon_ms else right).coupon_redeemed
    )
    if left.cap_window_day == right.cap_window_day:
        out.cap_window_day, out.cap_count = left.cap_window_day, left.cap_count + right.cap_count
    else:
        later = left if left.cap_window_day > right.cap_window_day else right
        out.cap_window_day, out.cap_count = later.cap_window_day, later.cap_count
    items = dict(left.recent_items)
    for item, hour in right.recent_items.items():
        _add_item(items, item, hour)
    out.recent_items = items
    out.category_bits = left.category_bits | right.category_bits
    out.last_coupon_wall_ms = max(left.last_coupon_wall_ms, right.last_coupon_wall_ms)
    out.last_reco_wall_ms = max(left.last_reco_wall_ms, right.last_reco_wall_ms)
    # The de-duplication windows: both parts' ids (disjoint events), the later part's last.
    first, second = (left, right) if left.last_seen_ms <= right.last_seen_ms else (right, left)
    out.recent_event_ids = _newest_distinct(first.recent_event_ids + second.recent_event_ids, RECENT_EVENT_IDS_KEPT)
    out.recent_order_ids = _newest_distinct(first.recent_order_ids + second.recent_order_ids, RECENT_ORDER_IDS_KEPT)
    # Before the totals are summed into ``out`` (which is ``left``): each part's own order count.
    out.bought = merge_bought(first, second, int(left.totals[PURCHASES_SIGNAL] + right.totals[PURCHASES_SIGNAL]))
    out.totals = [x + y for x, y in zip(left.totals, right.totals)]
    out.decayed = [x + y for x, y in zip(left.decayed, right.decayed)]
    out.recent_purchases_ms = sorted(left.recent_purchases_ms + right.recent_purchases_ms)[-RECENT_PURCHASES_KEPT:]
    categories = dict(left.categories)
    for name, weight in right.categories.items():
        categories[name] = categories.get(name, 0.0) + weight
    kept = sorted(categories, key=lambda k: (-categories[k], k))[:TOP_CATEGORIES_KEPT]
    out.categories = {name: categories[name] for name in kept}
    if out.last_seen_ms - out.anchor_ms > REANCHOR_AFTER_MS:
        _reanchor(out, out.last_seen_ms - out.last_seen_ms % DAY_MS)
    return out


def merge_bought(first: UserState, second: UserState, orders: int) -> dict[int, list[float]]:
    """Items bought in both parts, as of the merged ``orders``; ``second`` (the later part)
    counts as ordered after ``first``: approximate where the parts interleave in time."""
    n_first, n_second = (int(part.totals[PURCHASES_SIGNAL]) for part in (first, second))
    later = 2.0 ** (-n_second / ORDER_HALF_LIFE)
    merged = {
        item: [entry[FIRST], entry[LAST], entry[ORDERS], decayed_weight(entry, n_first) * later, orders]
        for item, entry in first.bought.items()
    }
    for item, entry in second.bought.items():
        weight = decayed_weight(entry, n_second)
        found = merged.get(item)
        if found is None:
            merged[item] = [entry[FIRST], entry[LAST], entry[ORDERS], weight, orders]
        else:
            found[FIRST], found[LAST] = min(found[FIRST], entry[FIRST]), max(found[LAST], entry[LAST])
            found[ORDERS] += entry[ORDERS]
            found[WEIGHT] += weight
    for entry in merged.values():
        entry[WEIGHT] = to_float32(entry[WEIGHT])  # as the state's bytes hold it (version 5)
    kept = sorted(merged, key=lambda h: (-merged[h][WEIGHT], -merged[h][LAST], h))[:BOUGHT_ITEMS_KEPT]
    return {item: merged[item] for item in kept}
