"""Features, profile and reasons derived from a :class:`UserState` at scoring time.

Everything is computed *as of* an event time passed in (``now_ms``), never the
wall clock, so a replay at any speed gives the result live traffic gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

import numpy as np

from retention_model.features.definitions import FEATURE_NAMES, HALF_LIVES_DAYS, SIGNALS
from retention_model.features.state import DAY_MS, N_HALF_LIVES, UserState, decay_factor

__all__ = [
    "Profile",
    "feature_dict",
    "feature_matrix",
    "feature_vector",
    "profile",
    "reasons",
]

_INDEX: Final = {signal.on: i for i, signal in enumerate(SIGNALS)}
_HL: Final = {h: j for j, h in enumerate(HALF_LIVES_DAYS)}

# BG/NBD parameters fitted on the full CDNOW cohort (weeks; see shared data README).
# Used as a fixed prior so that P(alive) exists for a user from the first purchase.
_BGNBD_R, _BGNBD_ALPHA, _BGNBD_A, _BGNBD_B = 0.2516, 4.789, 0.7234, 2.161
_WEEK_DAYS: Final = 7.0


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _decayed_all(state: UserState, now_ms: int) -> list[float]:
    age = now_ms - state.anchor_ms
    factors = [decay_factor(age, h * DAY_MS) for h in HALF_LIVES_DAYS]
    decayed = state.decayed
    return [decayed[i] * factors[i % N_HALF_LIVES] for i in range(len(decayed))]


def bgnbd_p_alive(x: float, t_x_days: float, t_days: float) -> float:
    """BG/NBD probability that a customer is still active (Fader, Hardie & Lee 2005)."""
    if x <= 0:
        return 1.0
    t_x, big_t = t_x_days / _WEEK_DAYS, t_days / _WEEK_DAYS
    # In log space: with many repeat purchases the odds term overflows a float.
    log_odds = math.log(_BGNBD_A / (_BGNBD_B + x - 1.0)) + (_BGNBD_R + x) * math.log(
        (_BGNBD_ALPHA + big_t) / (_BGNBD_ALPHA + t_x)
    )
    if log_odds > 700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(log_odds))


def bgnbd_p_purchase(x: float, t_x_days: float, t_days: float, horizon_days: float = 30.0) -> float:
    """BG/NBD P(at least one purchase in the next ``horizon_days``).

    P(alive) times P(a Poisson purchase | alive), with the purchase rate's posterior
    Gamma(r + x, alpha + T): meaningful from the first purchase (x = 0), when P(alive)
    alone is 1 for everyone.
    """
    big_t, horizon = t_days / _WEEK_DAYS, horizon_days / _WEEK_DAYS
    no_purchase_if_alive = ((_BGNBD_ALPHA + big_t) / (_BGNBD_ALPHA + big_t + horizon)) ** (_BGNBD_R + x)
    return bgnbd_p_alive(x, t_x_days, t_days) * (1.0 - no_purchase_if_alive)


def feature_vector(state: UserState, now_ms: int) -> list[float]:
    """The model input row for one user as of ``now_ms``, in :data:`FEATURE_NAMES` order."""
    decayed = _decayed_all(state, now_ms)
    totals = state.totals
    row: list[float] = []
    for i in range(len(SIGNALS)):
        row.append(totals[i])
        row.extend(decayed[i * N_HALF_LIVES : (i + 1) * N_HALF_LIVES])

    def dec(on: str, half_life: int) -> float:
        return decayed[_INDEX[on] * N_HALF_LIVES + _HL[half_life]]

    def tot(on: str) -> float:
        return totals[_INDEX[on]]

    recency = max(0.0, (now_ms - state.last_seen_ms) / DAY_MS) if not state.is_empty else 0.0
    tenure = max(0.0, (now_ms - state.first_seen_ms) / DAY_MS) if not state.is_empty else 0.0
    purchases = tot("purchases")
    has_purchased = state.first_purchase_ms != 0
    purchase_recency = max(0.0, (now_ms - state.last_purchase_ms) / DAY_MS) if has_purchased else tenure
    purchase_age = max(0.0, (now_ms - state.first_purchase_ms) / DAY_MS) if has_purchased else 0.0
    t_x = (state.last_purchase_ms - state.first_purchase_ms) / DAY_MS if has_purchased else 0.0
    mean_gap = t_x / (purchases - 1.0) if purchases >= 2 else 0.0
    recent = state.recent_purchases_ms
    gaps = [(b - a) / DAY_MS for a, b in pairwise(recent)]
    if len(gaps) >= 2:
        mean_recent = sum(gaps) / len(gaps)
        gap_std = math.sqrt(sum((g - mean_recent) ** 2 for g in gaps) / (len(gaps) - 1))
    else:
        gap_std = 0.0
    mean_rating = _ratio(tot("rating"), tot("reviews"))
    x = max(0.0, purchases - 1.0)

    row.extend(
        (
            recency,
            purchase_recency,
            tenure,
            1.0 if has_purchased else 0.0,
            _ratio(purchases * 30.0, max(purchase_age, 1.0)) if has_purchased else 0.0,
            _ratio(tot("spend"), purchases),
            _ratio(tot("spend"), tot("items")),
            _ratio(dec("sessions", 7) / 7.0, dec("sessions", 30) / 30.0),
            _ratio(dec("views", 7) / 7.0, dec("views", 30) / 30.0),
            _ratio(dec("purchases", 30) / 30.0, dec("purchases", 90) / 90.0),
            _ratio(dec("spend", 30) / 30.0, dec("spend", 90) / 90.0),
            max(0.0, 1.0 - _ratio(dec("purchases", 30), dec("cart_adds", 30))) if dec("cart_adds", 30) > 0 else 0.0,
            _ratio(tot("cancels"), purchases),
            _ratio(tot("returns"), purchases),
            mean_rating,
            1.0 if 0 < mean_rating < 3.0 else 0.0,
            _ratio(tot("coupon_purchases"), purchases),
            mean_gap,
            gap_std,
            _ratio(purchase_recency, mean_gap),
            x,
            t_x,
            purchase_age,
            bgnbd_p_alive(x, t_x, purchase_age) if has_purchased else 0.0,
            bgnbd_p_purchase(x, t_x, purchase_age) if has_purchased else 0.0,
            _distinct_estimate(state.category_bits),
        )
    )
    return row


def _distinct_estimate(bits: int) -> float:
    """Linear-counting estimate of distinct categories from a 64-bit bitmap."""
    zeros = 64 - bin(bits).count("1")
    if zeros == 0:
        return 64.0 * math.log(64.0)
    return -64.0 * math.log(zeros / 64.0)


def feature_matrix(states: list[UserState], now_ms: list[int]) -> np.ndarray:
    """Stack :func:`feature_vector` rows into a float64 matrix (one row per state)."""
    matrix = np.empty((len(states), len(FEATURE_NAMES)), dtype=np.float64)
    for i, (state, now) in enumerate(zip(states, now_ms)):
        matrix[i] = feature_vector(state, now)
    return matrix


def feature_dict(state: UserState, now_ms: int) -> dict[str, float]:
    """Named features, for people and the state endpoint."""
    return dict(zip(FEATURE_NAMES, feature_vector(state, now_ms)))


@dataclass(frozen=True)
class Profile:
    """A user's profile (画像) for personalisation: who they are, not how risky."""

    rfm_segment: str
    lifecycle_stage: str
    top_categories: tuple[str, ...]
    price_sensitivity: float
    price_band: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "rfm_segment": self.rfm_segment,
            "lifecycle_stage": self.lifecycle_stage,
            "top_categories": list(self.top_categories),
            "price_sensitivity": round(self.price_sensitivity, 3),
            "price_band": self.price_band,
        }


def _score(value: float, thresholds: tuple[float, ...], *, higher_is_better: bool = True) -> int:
    """1..5 by how many thresholds ``value`` passes."""
    passed = sum(1 for t in thresholds if value >= t)
    return 1 + passed if higher_is_better else 5 - passed


def profile(features: dict[str, float], state: UserState, now_ms: int, top_n: int = 3) -> Profile:
    """Derive the profile from features already computed for ``now_ms``."""
    has_purchased = features["has_purchased"] > 0
    recency_score = _score(features["purchase_recency_days"], (14, 30, 60, 120), higher_is_better=False)
    frequency_score = _score(features["purchases_count_total"], (2, 3, 5, 8))
    if not has_purchased:
        segment = "prospect"
    elif recency_score >= 4 and frequency_score >= 4:
        segment = "champion"
    elif recency_score >= 3 and frequency_score >= 3:
        segment = "loyal"
    elif recency_score >= 4:
        segment = "promising"
    elif recency_score <= 2 and frequency_score >= 3:
        segment = "at_risk"
    elif recency_score <= 2:
        segment = "hibernating"
    else:
        segment = "needs_attention"

    recency = features["recency_days"]
    if recency > 180:
        stage = "churned"
    elif recency > 60:
        stage = "dormant"
    elif features["tenure_days"] < 14:
        stage = "new"
    elif features["overdue_ratio"] > 2.0 or (has_purchased and features["purchase_recency_days"] > 45):
        stage = "at_risk"
    else:
        stage = "active"

    weights = state.category_weights(now_ms)
    top = tuple(sorted(weights, key=lambda k: (-weights[k], k))[:top_n])
    item_price = features["avg_item_price"]
    band = "none" if not has_purchased else "budget" if item_price < 20 else "mid" if item_price < 80 else "premium"
    return Profile(segment, stage, top, features["coupon_share"], band)


def reasons(features: dict[str, float], limit: int = 3) -> list[str]:
    """Top contributing risk factors in words a marketer reads, most severe first."""
    found: list[tuple[float, str]] = []
    purchases = features["purchases_count_total"]
    purchase_recency = features["purchase_recency_days"]
    gap = features["mean_gap_days"]
    if purchases >= 2 and gap > 0 and features["overdue_ratio"] > 1.5:
        found.append(
            (features["overdue_ratio"], f"no purchase for {purchase_recency:.0f} days; usually buys every {gap:.0f}")
        )
    elif purchases == 1 and purchase_recency > 21:
        found.append((purchase_recency / 21, f"one purchase, {purchase_recency:.0f} days ago, none since"))
    elif purchases == 0 and features["tenure_days"] > 14:
        found.append((1.2, f"browsing for {features['tenure_days']:.0f} days without a purchase"))
    elif purchases == 0:
        sessions = features["sessions_count_total"]
        found.append((0.5, f"no purchase yet in {sessions:.0f} visit{'s' if sessions != 1 else ''}"))
    if features["recency_days"] > 14:
        found.append((features["recency_days"] / 14, f"no visit for {features['recency_days']:.0f} days"))
    cancels = features["cancels_count_total"]
    if cancels >= 1:
        found.append((1.0 + cancels, f"{cancels:.0f} of {purchases:.0f} orders cancelled"))
    returns = features["returns_count_total"]
    if returns >= 1:
        found.append((0.8 + returns, f"returned {returns:.0f} of {purchases:.0f} orders"))
    if features["low_rating"] > 0:
        found.append(
            (3.0 - features["mean_rating"] + 1.0, f"rated purchases {features['mean_rating']:.1f}/5 on average")
        )
    trend = features["sessions_trend_7d_30d"]
    if features["sessions_count_30d"] >= 2 and trend < 0.5:
        found.append((1.0 + (0.5 - trend), f"visits down {100 * (1 - trend):.0f}% against the last month"))
    if features["cart_abandonment_30d"] > 0.7 and features["cart_adds_count_30d"] >= 2:
        found.append((1.0, f"left carts without buying ({100 * features['cart_abandonment_30d']:.0f}% abandoned)"))
    found.sort(key=lambda item: -item[0])
    return [text for _, text in found[:limit]]
