"""Uplift learners: two-model and class transformation, and the served two-model logistic regression."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from retention_model.model.uplift import UpliftModel
from training.uplift.qini_curve import qini

__all__ = ["APPROACHES", "BASES", "SERVED_C_GRID", "Predict", "fit_served_uplift", "fit_uplift"]

APPROACHES = ("two_model", "class_transformation")
BASES = ("logistic", "gradient_boosting")

Predict = Callable[[np.ndarray], np.ndarray]


def _classifier(base: str, seed: int) -> Any:
    if base == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=2000, C=0.5)
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, max_leaf_nodes=15, random_state=seed)


def fit_uplift(x: np.ndarray, treated: np.ndarray, y: np.ndarray, approach: str, base: str, seed: int = 42) -> Predict:
    """Fit one uplift learner on a randomised log; return its predict function."""
    treated = treated.astype(bool)
    y = y.astype(int)
    if approach == "two_model":
        model_t = _classifier(base, seed).fit(x[treated], y[treated])
        model_c = _classifier(base, seed).fit(x[~treated], y[~treated])
        return lambda z: model_t.predict_proba(z)[:, 1] - model_c.predict_proba(z)[:, 1]
    if approach == "class_transformation":
        share = treated.mean()
        weight = np.where(treated, 0.5 / share, 0.5 / (1.0 - share))  # balance the arms
        z = np.where(treated, y, 1 - y)
        model = _classifier(base, seed)
        model.fit(x, z, sample_weight=weight)
        return lambda q: 2.0 * model.predict_proba(q)[:, 1] - 1.0
    msg = f"unknown uplift approach {approach!r}; use one of {APPROACHES}"
    raise ValueError(msg)


#: Inverse regularisation strengths tried for the served model; the uplift signal
#: is a small difference of two noisy fits, so strong regularisation usually wins.
SERVED_C_GRID = (0.003, 0.01, 0.03, 0.1, 0.5)


def _two_model_logistic(x: np.ndarray, treated: np.ndarray, y: np.ndarray, c: float) -> UpliftModel:
    from sklearn.linear_model import LogisticRegression

    arms = {}
    for name, mask in (("treated", treated), ("control", ~treated)):
        model = LogisticRegression(max_iter=3000, C=c).fit(x[mask], y[mask].astype(int))
        arms[name] = (model.coef_[0].astype(np.float64), float(model.intercept_[0]))
    return UpliftModel(arms["treated"][0], arms["treated"][1], arms["control"][0], arms["control"][1])


def fit_served_uplift(
    x_normalised: np.ndarray, treated: np.ndarray, y: np.ndarray, seed: int = 42
) -> tuple[UpliftModel, dict[str, float]]:
    """The two-model logistic learner as plain coefficients for a model bundle.

    Its regularisation is chosen by 3-fold cross-validated Qini coefficient on
    the log itself; returns the model and the mean Qini per candidate.
    """
    from sklearn.model_selection import StratifiedKFold

    treated = treated.astype(bool)
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    strata = treated.astype(int) * 2 + y.astype(int)
    scores: dict[str, float] = {}
    for c in SERVED_C_GRID:
        found = []
        for fit_idx, eval_idx in folds.split(x_normalised, strata):
            model = _two_model_logistic(x_normalised[fit_idx], treated[fit_idx], y[fit_idx], c)
            found.append(
                qini(model.predict(x_normalised[eval_idx]), treated[eval_idx], y[eval_idx])["qini_coefficient"]
            )
        scores[f"C={c:g}"] = float(np.mean(found))
    best = max(SERVED_C_GRID, key=lambda c: scores[f"C={c:g}"])
    return _two_model_logistic(x_normalised, treated, y, best), scores
