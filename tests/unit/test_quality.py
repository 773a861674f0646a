"""Live quality figures: the metric maths against scikit-learn and training, and the sliding window."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, roc_auc_score

from retention_model.monitoring.quality import (
    QualityWindow,
    brier_score,
    expected_calibration_error,
    live_quality,
    roc_auc,
    top_tier_lift,
)
from training.metrics import expected_calibration_error as training_ece

# Risks on a coarse grid, so ties (which midranks must count one half) are common.
risks = st.lists(st.integers(0, 20).map(lambda i: i / 20), min_size=2, max_size=200)


@given(risks, st.data())
def test_roc_auc_equals_scikit_learns_with_ties(scores: list[float], data: st.DataObject) -> None:
    labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    y, s = np.array(labels, dtype=float), np.array(scores)
    if 0 < y.sum() < len(y):
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    else:  # one class only: undefined, not a number that looks like one
        assert roc_auc(y, s) is None


@given(risks, st.data())
def test_brier_and_ece_equal_scikit_learn_and_the_training_figures(scores: list[float], data: st.DataObject) -> None:
    labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    y, s = np.array(labels, dtype=float), np.array(scores)
    assert brier_score(y, s) == pytest.approx(brier_score_loss(y, s), abs=1e-12)
    # The bundle's test ECE comes from training.metrics: live must be the same figure.
    assert expected_calibration_error(y, s) == pytest.approx(training_ece(y, s), abs=1e-12)


def test_top_tier_lift_is_the_tiers_churn_rate_over_the_base_rate() -> None:
    churned = np.array([1, 1, 0, 1, 0, 0, 0, 0])  # base rate 3/8
    top = np.array([True, True, True, False, False, False, False, False])  # 2 of 3 churned
    assert top_tier_lift(churned, top) == pytest.approx((2 / 3) / (3 / 8))
    assert top_tier_lift(churned, np.zeros(8, dtype=bool)) is None  # no top-tier score: no figure
    assert top_tier_lift(np.zeros(8), top) is None  # nobody churned: no base rate


def test_live_quality_of_nothing_is_all_none() -> None:
    assert live_quality([], [], []).as_dict() == {
        "n": 0,
        "roc_auc": None,
        "brier": None,
        "ece": None,
        "top_tier_lift": None,
        "churn_rate": None,
    }


DAY = 86_400_000


def test_the_window_slides_on_event_time_and_keeps_its_count_bound() -> None:
    window = QualityWindow(span_ms=10 * DAY, max_outcomes=3)
    window.add(0, 0.9, True, True)
    window.add(5 * DAY, 0.1, False, False)
    assert len(window) == 2
    # Day 10 closes the window over day 0: (0, 10 days] keeps day 5 and day 10.
    window.add(10 * DAY, 0.8, True, True)
    assert len(window) == 2
    figures = window.figures()
    assert figures.n == 2 and figures.roc_auc == 1.0
    for day in (11, 12, 13):  # more than max_outcomes inside the span: the oldest go
        window.add(day * DAY, 0.5, False, False)
    assert len(window) == 3


def test_the_window_refuses_a_nonsense_size() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        QualityWindow(span_ms=0)
