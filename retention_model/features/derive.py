"""Features, profile and reasons derived from a :class:`UserState` at scoring time.

Everything is computed *as of* an event time passed in (``now_ms``), never the
wall clock, so a replay at any speed gives the result live traffic gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from retention_model.features.definitions import DERIVED_FEATURES, FEATURE_NAMES, HALF_LIVES_DAYS, SIGNALS
from retention_model.features.state import DAY_MS, N_HALF_LIVES, RECENT_PURCHASES_KEPT, UserState

__all__ = [
    "feature_dict",
    "feature_matrix",
    "feature_vector",
]

_INDEX: Final = {signal.on: i for i, signal in enumerate(SIGNALS)}
_HL: Final = {h: j for j, h in enumerate(HALF_LIVES_DAYS)}
#: Each derived feature's model input column, by name (:data:`DERIVED_FEATURES`).
_DERIVED_COLUMNS: Final = {name: FEATURE_NAMES.index(name) for name, _ in DERIVED_FEATURES}

# BG/NBD parameters fitted on the full CDNOW cohort (weeks; see shared data README).
# Used as a fixed prior so that P(alive) exists for a user from the first purchase.
_BGNBD_R, _BGNBD_ALPHA, _BGNBD_A, _BGNBD_B = 0.2516, 4.789, 0.7234, 2.161
_WEEK_DAYS: Final = 7.0


def bgnbd_p_alive(x: ArrayLike, t_x_days: ArrayLike, t_days: ArrayLike) -> np.ndarray:
    """BG/NBD probability that a customer is still active (Fader, Hardie & Lee 2005), elementwise."""
    x, t_x, big_t = (np.asarray(v, dtype=np.float64) for v in (x, t_x_days, t_days))
    t_x, big_t = t_x / _WEEK_DAYS, big_t / _WEEK_DAYS
    # In log space: with many repeat purchases the odds term overflows a float.
    log_odds = np.log(_BGNBD_A / (_BGNBD_B + np.maximum(x, 1.0) - 1.0)) + (_BGNBD_R + x) * np.log(
        (_BGNBD_ALPHA + big_t) / (_BGNBD_ALPHA + t_x)
    )
    alive = 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700.0)))
    return np.where(x <= 0, 1.0, np.where(log_odds > 700.0, 0.0, alive))


def bgnbd_p_purchase(x: ArrayLike, t_x_days: ArrayLike, t_days: ArrayLike, horizon_days: float = 30.0) -> np.ndarray:
    """BG/NBD P(at least one purchase in the next ``horizon_days``), elementwise.

    P(alive) times P(a Poisson purchase | alive), with the purchase rate's posterior
    Gamma(r + x, alpha + T): meaningful from the first purchase (x = 0), when P(alive)
    alone is 1 for everyone.
    """
    big_t, horizon = np.asarray(t_days, dtype=np.float64) / _WEEK_DAYS, horizon_days / _WEEK_DAYS
    no_purchase_if_alive = ((_BGNBD_ALPHA + big_t) / (_BGNBD_ALPHA + big_t + horizon)) ** (_BGNBD_R + np.asarray(x))
    return bgnbd_p_alive(x, t_x_days, t_days) * (1.0 - no_purchase_if_alive)


def feature_vector(state: UserState, now_ms: int) -> list[float]:
    """The model input row for one user as of ``now_ms``, in :data:`FEATURE_NAMES` order."""
    return feature_matrix([state], [now_ms])[0].tolist()


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` where the denominator is positive, else 0 ."""
    out = np.zeros(len(denominator))
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _gap_std_days(recent: list[list[int]]) -> np.ndarray:
    """Sample std of the gaps between each user's recent purchases (0 below three purchases)."""
    times = np.zeros((len(recent), RECENT_PURCHASES_KEPT))
    kept = np.zeros(len(recent))
    for i, purchase_times in enumerate(recent):
        if len(purchase_times) >= 3:
            times[i, : len(purchase_times)] = purchase_times
            kept[i] = len(purchase_times)
    n_gaps = np.maximum(kept - 1.0, 0.0)[:, None]
    valid = np.arange(RECENT_PURCHASES_KEPT - 1) < n_gaps
    gaps = np.where(valid, np.diff(times, axis=1) / DAY_MS, 0.0)
    mean = gaps.sum(axis=1, keepdims=True) / np.maximum(n_gaps, 1.0)
    spread = np.where(valid, gaps - mean, 0.0)
    return np.sqrt((spread**2).sum(axis=1) / np.maximum(n_gaps[:, 0] - 1.0, 1.0))


def feature_matrix(states: Sequence[UserState], now_ms: Sequence[int]) -> np.ndarray:
    """Model input rows for many users at once, a float64 matrix in :data:`FEATURE_NAMES` order.

    Column-wise over the batch: the per-user Python work is only gathering the
    state's fields, so a batch costs a few NumPy passes instead of a loop of
    per-user arithmetic.
    """
    n = len(states)
    if n == 0:
        return np.empty((0, len(FEATURE_NAMES)), dtype=np.float64)
    now = np.fromiter(now_ms, dtype=np.float64, count=n)
    anchor = np.fromiter((s.anchor_ms for s in states), dtype=np.float64, count=n)
    first_seen = np.fromiter((s.first_seen_ms for s in states), dtype=np.float64, count=n)
    last_seen = np.fromiter((s.last_seen_ms for s in states), dtype=np.float64, count=n)
    first_purchase = np.fromiter((s.first_purchase_ms for s in states), dtype=np.float64, count=n)
    last_purchase = np.fromiter((s.last_purchase_ms for s in states), dtype=np.float64, count=n)
    totals = np.array([s.totals for s in states], dtype=np.float64)
    half_lives = np.array(HALF_LIVES_DAYS, dtype=np.float64) * DAY_MS
    factors = np.exp2(-(now - anchor)[:, None] / half_lives)
    decayed = np.array([s.decayed for s in states], dtype=np.float64).reshape(n, len(SIGNALS), N_HALF_LIVES)
    decayed *= factors[:, None, :]

    def dec(on: str, half_life: int) -> np.ndarray:
        return decayed[:, _INDEX[on], _HL[half_life]]

    def tot(on: str) -> np.ndarray:
        return totals[:, _INDEX[on]]

    seen = first_seen != 0
    recency = np.where(seen, np.maximum(0.0, (now - last_seen) / DAY_MS), 0.0)
    tenure = np.where(seen, np.maximum(0.0, (now - first_seen) / DAY_MS), 0.0)
    purchases = tot("purchases")
    has_purchased = first_purchase != 0
    purchase_recency = np.where(has_purchased, np.maximum(0.0, (now - last_purchase) / DAY_MS), tenure)
    purchase_age = np.where(has_purchased, np.maximum(0.0, (now - first_purchase) / DAY_MS), 0.0)
    t_x = np.where(has_purchased, (last_purchase - first_purchase) / DAY_MS, 0.0)
    mean_gap = np.where(purchases >= 2, _ratios(t_x, purchases - 1.0), 0.0)
    mean_rating = _ratios(tot("rating"), tot("reviews"))
    x = np.maximum(0.0, purchases - 1.0)
    cart_adds_30 = dec("cart_adds", 30)
    zeros = 64.0 - np.fromiter((s.category_bits.bit_count() for s in states), dtype=np.float64, count=n)
    distinct = np.where(zeros == 0, 64.0 * math.log(64.0), -64.0 * np.log(np.maximum(zeros, 1.0) / 64.0))

    derived = {
        "recency_days": recency,
        "purchase_recency_days": purchase_recency,
        "tenure_days": tenure,
        "has_purchased": has_purchased.astype(np.float64),
        "purchase_frequency_30d": np.where(
            has_purchased, _ratios(purchases * 30.0, np.maximum(purchase_age, 1.0)), 0.0
        ),
        "avg_order_value": _ratios(tot("spend"), purchases),
        "avg_item_price": _ratios(tot("spend"), tot("items")),
        "sessions_trend_7d_30d": _ratios(dec("sessions", 7) / 7.0, dec("sessions", 30) / 30.0),
        "views_trend_7d_30d": _ratios(dec("views", 7) / 7.0, dec("views", 30) / 30.0),
        "purchases_trend_30d_90d": _ratios(dec("purchases", 30) / 30.0, dec("purchases", 90) / 90.0),
        "spend_trend_30d_90d": _ratios(dec("spend", 30) / 30.0, dec("spend", 90) / 90.0),
        "cart_abandonment_30d": np.where(
            cart_adds_30 > 0, np.maximum(0.0, 1.0 - _ratios(dec("purchases", 30), cart_adds_30)), 0.0
        ),
        "cancel_rate": _ratios(tot("cancels"), purchases),
        "return_rate": _ratios(tot("returns"), purchases),
        "mean_rating": mean_rating,
        "low_rating": ((mean_rating > 0) & (mean_rating < 3.0)).astype(np.float64),
        "coupon_share": _ratios(tot("coupon_purchases"), purchases),
        "mean_gap_days": mean_gap,
        "gap_std_days": _gap_std_days([s.recent_purchases_ms for s in states]),
        "overdue_ratio": _ratios(purchase_recency, mean_gap),
        "btyd_x": x,
        "btyd_t_x_days": t_x,
        "btyd_T_days": purchase_age,
        "btyd_p_alive": np.where(has_purchased, bgnbd_p_alive(x, t_x, purchase_age), 0.0),
        "btyd_p_purchase_30d": np.where(has_purchased, bgnbd_p_purchase(x, t_x, purchase_age), 0.0),
        "distinct_categories": distinct,
    }
    matrix = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    signal_block = matrix[:, : len(SIGNALS) * (1 + N_HALF_LIVES)].reshape(n, len(SIGNALS), 1 + N_HALF_LIVES)
    signal_block[:, :, 0] = totals
    signal_block[:, :, 1:] = decayed
    if derived.keys() != _DERIVED_COLUMNS.keys():
        missing, extra = _DERIVED_COLUMNS.keys() - derived.keys(), derived.keys() - _DERIVED_COLUMNS.keys()
        raise RuntimeError(f"derived features out of step with DERIVED_FEATURES: missing {missing}, extra {extra}")
    for name, values in derived.items():
        matrix[:, _DERIVED_COLUMNS[name]] = values
    return matrix


def feature_dict(state: UserState, now_ms: int) -> dict[str, float]:
    """Named features, for people and the state endpoint."""
    return dict(zip(FEATURE_NAMES, feature_vector(state, now_ms)))
