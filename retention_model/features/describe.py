"""A scored user in words: their profile (segment, stage, tastes, price band) and the reasons for their risk.

Both are rules over a few features, applied to a whole scoring batch at once: each rule
is a comparison over a column, and only the users a rule picks out cost any Python (the
text of their reason). Built user by user, profile and reasons took a quarter of the
decide stage's time. :func:`profile` and :func:`reasons` give the same for one user.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Final, NamedTuple

import numpy as np

from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.state import UserState

__all__ = ["DESCRIBING_FEATURES", "FeatureRow", "Profile", "describe_many", "profile", "reasons"]

#: The features profile, reasons and the policy's expected value read.
DESCRIBING_FEATURES: Final = (
    "avg_item_price",
    "avg_order_value",
    "cancels_count_total",
    "cart_abandonment_30d",
    "cart_adds_count_30d",
    "coupon_share",
    "has_purchased",
    "low_rating",
    "mean_gap_days",
    "mean_rating",
    "overdue_ratio",
    "purchase_frequency_30d",
    "purchase_recency_days",
    "purchases_count_total",
    "recency_days",
    "returns_count_total",
    "sessions_count_30d",
    "sessions_count_total",
    "sessions_trend_7d_30d",
    "tenure_days",
)
_DESCRIBING_COLUMNS: Final = [FEATURE_NAMES.index(name) for name in DESCRIBING_FEATURES]
_COLUMN: Final = {name: i for i, name in enumerate(FEATURE_NAMES)}
_DESCRIBING_POSITION: Final = {name: i for i, name in enumerate(DESCRIBING_FEATURES)}
#: Days since the last purchase at which the recency score drops a point (5 = most recent).
_RECENCY_STEPS: Final = (14, 30, 60, 120)
#: Purchases at which the frequency score rises a point (1 = one purchase or none).
_FREQUENCY_STEPS: Final = (2, 3, 5, 8)
TOP_CATEGORIES_SHOWN: Final = 3


class Profile(NamedTuple):
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


class FeatureRow(Mapping[str, float]):
    """One user's features by name, read from their matrix row only when asked (the policy seldom asks)."""

    __slots__ = ("_row",)

    def __init__(self, row: np.ndarray) -> None:
        self._row = row

    def __getitem__(self, name: str) -> float:
        return float(self._row[_COLUMN[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(FEATURE_NAMES)

    def __len__(self) -> int:
        return len(FEATURE_NAMES)


def describe_many(matrix: np.ndarray, states: Sequence[UserState]) -> tuple[list[dict[str, object]], list[list[str]]]:
    """Each user's profile (JSON-ready, as :meth:`Profile.as_dict`) and reasons, from a feature matrix's rows."""
    columns = _Columns(matrix[:, _DESCRIBING_COLUMNS])
    segments, stages, bands = _profile_labels(columns)
    shares = columns.values("coupon_share")
    profiles = [
        {
            "rfm_segment": segment,
            "lifecycle_stage": stage,
            "top_categories": _top_categories(state),
            "price_sensitivity": round(share, 3),
            "price_band": band,
        }
        for segment, stage, band, share, state in zip(segments, stages, bands, shares, states)
    ]
    return profiles, _reasons(columns)


def profile(features: Mapping[str, float], state: UserState) -> Profile:
    """One user's profile from their features (as of the time they were computed for) and state."""
    columns = _Columns(_one_row(features))
    (segment,), (stage,), (band,) = _profile_labels(columns)
    top = tuple(_top_categories(state))
    return Profile(segment, stage, top, columns.values("coupon_share")[0], band)


def reasons(features: Mapping[str, float], limit: int = 3) -> list[str]:
    """Top contributing risk factors in words a marketer reads, most severe first."""
    return _reasons(_Columns(_one_row(features)), limit)[0]


class _Columns:
    """A batch's describing features by name, as arrays (for the rules) and as Python floats (for the texts)."""

    __slots__ = ("_lists", "matrix")

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix
        self._lists: dict[str, list[float]] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.matrix[:, _DESCRIBING_POSITION[name]]

    def values(self, name: str) -> list[float]:
        found = self._lists.get(name)
        if found is None:
            found = self._lists[name] = self[name].tolist()
        return found

    def __len__(self) -> int:
        return len(self.matrix)


def _one_row(features: Mapping[str, float]) -> np.ndarray:
    return np.array([[float(features[name]) for name in DESCRIBING_FEATURES]], dtype=np.float64)


def _top_categories(state: UserState) -> list[str]:
    # Heaviest first, ties by name. The stored weights share one decay factor to now,
    # so they rank the categories as the decayed weights do, without decaying each.
    categories = state.categories
    return sorted(sorted(categories), key=categories.__getitem__, reverse=True)[:TOP_CATEGORIES_SHOWN]


def _profile_labels(c: _Columns) -> tuple[list[str], list[str], list[str]]:
    """RFM segment, lifecycle stage and price band of every row."""
    has_purchased = c["has_purchased"] > 0
    purchase_recency = c["purchase_recency_days"]
    recency_score = 5 - sum((purchase_recency >= step).astype(np.int8) for step in _RECENCY_STEPS)
    frequency_score = 1 + sum((c["purchases_count_total"] >= step).astype(np.int8) for step in _FREQUENCY_STEPS)
    segment = np.select(
        [
            ~has_purchased,
            (recency_score >= 4) & (frequency_score >= 4),
            (recency_score >= 3) & (frequency_score >= 3),
            recency_score >= 4,
            (recency_score <= 2) & (frequency_score >= 3),
            recency_score <= 2,
        ],
        ["prospect", "champion", "loyal", "promising", "at_risk", "hibernating"],
        "needs_attention",
    )
    recency = c["recency_days"]
    stage = np.select(
        [
            recency > 180,
            recency > 60,
            c["tenure_days"] < 14,
            (c["overdue_ratio"] > 2.0) | (has_purchased & (purchase_recency > 45)),
        ],
        ["churned", "dormant", "new", "at_risk"],
        "active",
    )
    item_price = c["avg_item_price"]
    band = np.select([~has_purchased, item_price < 20, item_price < 80], ["none", "budget", "mid"], "premium")
    return segment.tolist(), stage.tolist(), band.tolist()


def _reasons(c: _Columns, limit: int = 3) -> list[list[str]]:
    """Each row's reasons, most severe first (ties: in the order the rules are listed)."""
    found: list[list[tuple[float, str]]] = [[] for _ in range(len(c))]

    def rows(mask: np.ndarray) -> list[int]:
        return np.flatnonzero(mask).tolist()

    # Rounded as people count orders: a decayed 0.9999999999999999 is one.
    purchases = np.array([round(v, 6) for v in c.values("purchases_count_total")], dtype=np.float64)
    counts = purchases.tolist()
    since = c.values("purchase_recency_days")
    # The purchase rhythm: one of four, the first that applies.
    overdue = (purchases >= 2) & (c["mean_gap_days"] > 0) & (c["overdue_ratio"] > 1.5)
    once = ~overdue & (purchases == 1) & (c["purchase_recency_days"] > 21)
    never = ~overdue & ~once & (purchases == 0)
    browsing = never & (c["tenure_days"] > 14)
    ratio, gap = c.values("overdue_ratio"), c.values("mean_gap_days")
    for i in rows(overdue):
        found[i].append((ratio[i], f"no purchase for {_days(since[i])}; usually buys {_rhythm(gap[i])}"))
    for i in rows(once):
        found[i].append((since[i] / 21, f"one purchase, {since[i]:.0f} days ago, none since"))
    tenure = c.values("tenure_days")
    for i in rows(browsing):
        found[i].append((1.2, f"browsing for {tenure[i]:.0f} days without a purchase"))
    sessions = c.values("sessions_count_total")
    for i in rows(never & ~browsing):
        # Activity without a session start (one lost or dead-lettered upstream) is no "0 visits".
        n = sessions[i]
        visits = f" in {n:.0f} visit{'s' if n != 1 else ''}" if n >= 1 else ""
        found[i].append((0.5, f"no purchase yet{visits}"))
    recency = c.values("recency_days")
    for i in rows(c["recency_days"] > 14):
        found[i].append((recency[i] / 14, f"no visit for {recency[i]:.0f} days"))
    cancels = c.values("cancels_count_total")
    for i in rows(c["cancels_count_total"] >= 1):
        found[i].append((1.0 + cancels[i], f"{cancels[i]:.0f} of {counts[i]:.0f} orders cancelled"))
    returns = c.values("returns_count_total")
    for i in rows(c["returns_count_total"] >= 1):
        found[i].append((0.8 + returns[i], f"returned {returns[i]:.0f} of {counts[i]:.0f} orders"))
    rating = c.values("mean_rating")
    for i in rows(c["low_rating"] > 0):
        found[i].append((3.0 - rating[i] + 1.0, f"rated purchases {rating[i]:.1f}/5 on average"))
    trend = c.values("sessions_trend_7d_30d")
    for i in rows((c["sessions_count_30d"] >= 2) & (c["sessions_trend_7d_30d"] < 0.5)):
        found[i].append((1.0 + (0.5 - trend[i]), f"visits down {100 * (1 - trend[i]):.0f}% against the last month"))
    abandoned = c.values("cart_abandonment_30d")
    for i in rows((c["cart_abandonment_30d"] > 0.7) & (c["cart_adds_count_30d"] >= 2)):
        found[i].append((1.0, f"left carts without buying ({100 * abandoned[i]:.0f}% abandoned)"))
    out: list[list[str]] = []
    for entries in found:
        if len(entries) > 1:
            entries.sort(key=_by_severity)
        out.append([text for _, text in entries[:limit]])
    return out


def _by_severity(entry: tuple[float, str]) -> float:
    return -entry[0]


def _days(value: float) -> str:
    """``41 days``, ``1 day``, ``less than a day``: a marketer reads the reason as written."""
    return _in_days(value, "less than a day", "1 day", "{} days")


def _rhythm(gap_days: float) -> str:
    """How often a user buys: ``every 12 days``, ``every day``, ``more than once a day``."""
    return _in_days(gap_days, "more than once a day", "every day", "every {} days")


def _in_days(value: float, none: str, one: str, many: str) -> str:
    """``value`` days rounded as the reasons print them, in the wording for none, one or ``many``."""
    whole = f"{value:.0f}"
    return none if whole == "0" else one if whole == "1" else many.format(whole)
