"""Feature definitions, declared once as data.

The stream worker and offline training both read these tables; a feature name is
derived from its definition (``spend_sum_30d``), so names cannot drift from what
they compute. Changing anything here changes :data:`FEATURE_CODE_VERSION`, and a
model bundle trained on another version is refused at load time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal

from retention_model.events import EventType

__all__ = [
    "DERIVED_FEATURES",
    "FEATURE_CODE_VERSION",
    "FEATURE_NAMES",
    "FORMULA_CHANGES",
    "FORMULA_REVISION",
    "HALF_LIVES_DAYS",
    "SIGNALS",
    "Signal",
]

#: Half-lives of the time-decayed aggregates. A decayed sum with half-life h
#: weighs an event h days old by one half: a smooth "last h days" window that
#: needs one float per signal instead of a ring of buckets.
HALF_LIVES_DAYS: Final = (1, 7, 30, 90)

Measure = Literal["one", "amount", "quantity", "rating", "with_coupon"]


@dataclass(frozen=True)
class Signal:
    """One per-user quantity accumulated from events of one type.

    ``on`` names the quantity, ``how`` is ``count`` or ``sum``; the feature names
    are ``{on}_{how}_total`` and ``{on}_{how}_{h}d`` for each half-life.
    """

    on: str
    how: Literal["count", "sum"]
    event_type: EventType
    measure: Measure

    @property
    def total_name(self) -> str:
        """Name of the exact, undecayed running total."""
        return f"{self.on}_{self.how}_total"

    def decayed_name(self, half_life_days: int) -> str:
        """Name of the decayed aggregate with the given half-life."""
        return f"{self.on}_{self.how}_{half_life_days}d"


SIGNALS: Final = (
    Signal("sessions", "count", EventType.SESSION_START, "one"),
    Signal("views", "count", EventType.VIEW, "one"),
    Signal("searches", "count", EventType.SEARCH, "one"),
    Signal("cart_adds", "count", EventType.ADD_TO_CART, "one"),
    Signal("cart_removes", "count", EventType.REMOVE_FROM_CART, "one"),
    Signal("purchases", "count", EventType.PURCHASE, "one"),
    Signal("spend", "sum", EventType.PURCHASE, "amount"),
    Signal("items", "sum", EventType.PURCHASE, "quantity"),
    Signal("coupon_purchases", "count", EventType.PURCHASE, "with_coupon"),
    Signal("cancels", "count", EventType.CANCEL_ORDER, "one"),
    Signal("returns", "count", EventType.RETURN, "one"),
    Signal("reviews", "count", EventType.REVIEW, "one"),
    Signal("rating", "sum", EventType.REVIEW, "rating"),
    Signal("coupon_redeems", "count", EventType.COUPON_REDEEM, "one"),
)

#: Features computed at scoring time from the state, in model input order after
#: the signal aggregates. Each entry is (name, what it means); the formulas live
#: in :mod:`retention_model.features.derive` next to the names.
DERIVED_FEATURES: Final = (
    ("recency_days", "days since the last event of any type"),
    ("purchase_recency_days", "days since the last purchase (tenure when none)"),
    ("tenure_days", "days since the first event"),
    ("has_purchased", "1 when the user has purchased at least once"),
    ("purchase_frequency_30d", "purchases per 30 days of purchase age"),
    ("avg_order_value", "spend / purchases over the whole history"),
    ("avg_item_price", "spend / items over the whole history"),
    ("sessions_trend_7d_30d", "daily session rate, 7-day over 30-day"),
    ("views_trend_7d_30d", "daily view rate, 7-day over 30-day"),
    ("purchases_trend_30d_90d", "daily purchase rate, 30-day over 90-day"),
    ("spend_trend_30d_90d", "daily spend rate, 30-day over 90-day"),
    ("cart_abandonment_30d", "share of cart adds not followed by a purchase, 30-day"),
    ("cancel_rate", "cancelled orders / purchases"),
    ("return_rate", "returns / purchases"),
    ("mean_rating", "mean review rating (0 when no review)"),
    ("low_rating", "1 when the mean review rating is below 3"),
    ("coupon_share", "share of purchases made with a coupon"),
    ("mean_gap_days", "mean days between purchases (0 below two purchases)"),
    ("gap_std_days", "std of the recent gaps between purchases"),
    ("overdue_ratio", "days since last purchase / mean gap (0 below two purchases)"),
    ("btyd_x", "repeat purchases (purchases - 1)"),
    ("btyd_t_x_days", "days from first to last purchase"),
    ("btyd_T_days", "days from first purchase to now"),
    ("btyd_p_alive", "BG/NBD P(alive) under a fixed CDNOW prior"),
    ("btyd_p_purchase_30d", "BG/NBD P(a purchase in the next 30 days): a cold-start score from one purchase on"),
    ("distinct_categories", "estimated number of distinct categories touched"),
)


def _feature_names() -> tuple[str, ...]:
    names: list[str] = []
    for signal in SIGNALS:
        names.append(signal.total_name)
        names.extend(signal.decayed_name(h) for h in HALF_LIVES_DAYS)
    names.extend(name for name, _ in DERIVED_FEATURES)
    return tuple(names)


#: Model input columns, in order.
FEATURE_NAMES: Final = _feature_names()


#: Bump when a formula in ``state.py`` or ``derive.py`` (or a measure such as
#: :attr:`Event.amount`) changes meaning without a change of name, so that old
#: bundles are refused instead of silently skewed; say what changed below.
FORMULA_REVISION: Final = 3

#: What each revision changed: a refused bundle is told why it no longer fits.
FORMULA_CHANGES: Final = {
    3: "a purchase's spend is its price, the order total (it was price x quantity), in every spend feature",
}


def _spec_text(signal: Signal) -> str:
    # Written out rather than left to repr(): the version must not move when only a
    # Python type changes. Event types read as they did when EventType was an IntEnum
    # (name and ordinal), so bundles trained before it became a StrEnum still load.
    ordinal = list(EventType).index(signal.event_type)
    kind = f"<EventType.{signal.event_type.name}: {ordinal}>"
    return f"Signal(on={signal.on!r}, how={signal.how!r}, event_type={kind}, measure={signal.measure!r})"


def _code_version() -> str:
    signals = "(" + ", ".join(_spec_text(signal) for signal in SIGNALS) + ")"
    spec = f"({FORMULA_REVISION!r}, {HALF_LIVES_DAYS!r}, {signals}, {DERIVED_FEATURES!r})"
    return "v1-" + hashlib.sha256(spec.encode()).hexdigest()[:12]


#: Identifies the feature definitions a model bundle was trained on.
FEATURE_CODE_VERSION: Final = _code_version()
