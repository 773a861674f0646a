"""Profile and reasons over a whole batch say what the rules say one user at a time.

The rules below are the specification, written for one user as a reader would check
them (they were the product's code until the batch form replaced it); the batch form
in :mod:`retention_model.features.describe` must agree with them on every row, with
values at and around every threshold.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.describe import DESCRIBING_FEATURES, FeatureRow, Profile, describe_many, profile, reasons
from retention_model.features.state import UserState
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import customer_value

# Each feature's thresholds in the rules (and values that matter to them), a hair either side:
# drawn this often, a rule that moved a threshold or flipped a comparison is caught.
_EDGES = {
    "avg_item_price": (20, 80),
    "avg_order_value": (0, 50),
    "cancels_count_total": (0, 1, 2),
    "cart_abandonment_30d": (0.7,),
    "cart_adds_count_30d": (2,),
    "coupon_share": (0, 0.1235),
    "has_purchased": (0, 1),
    "low_rating": (0, 1),
    "mean_gap_days": (0, 0.5, 1, 1.5, 10),
    "mean_rating": (1, 3, 5),
    "overdue_ratio": (1.5, 2.0),
    "purchase_frequency_30d": (0, 1.5),
    "purchase_recency_days": (0.5, 1, 1.5, 14, 21, 30, 45, 60, 120),
    "purchases_count_total": (0, 1, 2, 3, 5, 8, 0.9999999999999999),
    "recency_days": (14, 60, 180),
    "returns_count_total": (0, 1, 2),
    "sessions_count_30d": (2,),
    "sessions_count_total": (0, 1, 2),
    "sessions_trend_7d_30d": (0.5,),
    "tenure_days": (14,),
}


def _around(values: tuple[float, ...]) -> st.SearchStrategy[float]:
    edges = sorted({max(0.0, v + d) for v in values for d in (0.0, -1e-9, 1e-9)})
    return st.one_of(st.sampled_from(edges), st.floats(min_value=0.0, max_value=400.0))


_ROW = st.fixed_dictionaries({name: _around(_EDGES[name]) for name in DESCRIBING_FEATURES})
_CATEGORIES = st.dictionaries(
    st.sampled_from(["books", "toys", "garden", "shoes", "food"]), st.sampled_from([0.5, 1.0, 2.0, 4.0])
)


def _score(value: float, thresholds: tuple[float, ...], *, higher_is_better: bool = True) -> int:
    """1..5 by how many thresholds ``value`` passes."""
    passed = 0
    for threshold in thresholds:
        if value >= threshold:
            passed += 1
    return 1 + passed if higher_is_better else 5 - passed


def profile_as_written(features: dict[str, float], state: UserState, top_n: int = 3) -> Profile:
    """The profile, one user at a time."""
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

    # Heaviest first, ties by name. The stored weights share one decay factor to now,
    # so they rank the categories as the decayed weights do, without decaying each.
    categories = state.categories
    top = tuple(sorted(sorted(categories), key=categories.__getitem__, reverse=True)[:top_n])
    item_price = features["avg_item_price"]
    band = "none" if not has_purchased else "budget" if item_price < 20 else "mid" if item_price < 80 else "premium"
    return Profile(segment, stage, top, features["coupon_share"], band)


def reasons_as_written(features: dict[str, float], limit: int = 3) -> list[str]:
    """The reasons, one user at a time."""
    found: list[tuple[float, str]] = []
    purchases = round(features["purchases_count_total"], 6)
    purchase_recency = features["purchase_recency_days"]
    gap = features["mean_gap_days"]
    if purchases >= 2 and gap > 0 and features["overdue_ratio"] > 1.5:
        found.append(
            (features["overdue_ratio"], f"no purchase for {_days(purchase_recency)}; usually buys {_rhythm(gap)}")
        )
    elif purchases == 1 and purchase_recency > 21:
        found.append((purchase_recency / 21, f"one purchase, {purchase_recency:.0f} days ago, none since"))
    elif purchases == 0 and features["tenure_days"] > 14:
        found.append((1.2, f"browsing for {features['tenure_days']:.0f} days without a purchase"))
    elif purchases == 0:
        sessions = features["sessions_count_total"]
        # Activity without a session start (one lost or dead-lettered upstream) is no "0 visits".
        visits = f" in {sessions:.0f} visit{'s' if sessions != 1 else ''}" if sessions >= 1 else ""
        found.append((0.5, f"no purchase yet{visits}"))
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


def _days(value: float) -> str:
    n = round(value)
    return "less than a day" if n == 0 else "1 day" if n == 1 else f"{n} days"


def _rhythm(gap_days: float) -> str:
    n = round(gap_days)
    return "more than once a day" if n == 0 else "every day" if n == 1 else f"every {n} days"


def _matrix(rows: list[dict[str, float]]) -> np.ndarray:
    matrix = np.zeros((len(rows), len(FEATURE_NAMES)))
    for i, row in enumerate(rows):
        for name, value in row.items():
            matrix[i, FEATURE_NAMES.index(name)] = value
    return matrix


def _state(categories: dict[str, float]) -> UserState:
    state = UserState()
    state.categories = dict(categories)
    return state


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_ROW, _CATEGORIES), min_size=1, max_size=12))
def test_a_batch_is_described_as_each_user_alone(users: list[tuple[dict[str, float], dict[str, float]]]) -> None:
    rows = [row for row, _ in users]
    states = [_state(categories) for _, categories in users]
    profiles, batch_reasons = describe_many(_matrix(rows), states)
    for row, state, described, said in zip(rows, states, profiles, batch_reasons):
        expected = profile_as_written(row, state)
        assert described == expected.as_dict()
        assert said == reasons_as_written(row)
        assert profile(row, state) == expected
        assert reasons(row) == said


@given(_ROW)
def test_the_policy_reads_a_row_by_name(row: dict[str, float]) -> None:
    matrix = _matrix([row])
    named = FeatureRow(matrix[0])
    assert {name: named[name] for name in DESCRIBING_FEATURES} == row
    assert named.get("no such feature", -1.0) == -1.0
    assert customer_value(named, PolicyConfig()) == customer_value(row, PolicyConfig())
