"""The references a churn model must beat: RFM logistic regression and BG/NBD.

Both score the same rows as the model, from the same stream features, so a side
by side is paired row by row.

* RFM logistic regression: fitted on the rows of the preceding period (earlier
  cutoffs whose labels have closed), on the bundle-style normalised RFM columns.
* BG/NBD (Fader, Hardie & Lee 2005): fitted by maximum likelihood on the scored
  users' own purchase histories up to the cutoff (it needs no labels); churn is
  P(no purchase within the horizon). A user with no purchase yet enters as if
  their first event were a first purchase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from retention_model.features.definitions import FEATURE_NAMES
from retention_model.model.bundle import normalise
from training.candidates import fit_rfm_reference, linear_churn

if TYPE_CHECKING:
    from training.dataset import Dataset

__all__ = ["BgNbd", "bgnbd_churn", "fit_bgnbd", "fit_normalisation", "rfm_logistic_regression_churn"]

_WEEK_DAYS = 7.0


def fit_normalisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of signed-log1p features: the bundle's normalisation, fitted on these rows."""
    transformed = np.sign(features) * np.log1p(np.abs(features))
    mean = transformed.mean(axis=0)
    std = transformed.std(axis=0)
    std[std < 1e-9] = 1.0
    return mean, std


def rfm_logistic_regression_churn(prior: Dataset, rows: Dataset) -> np.ndarray:
    """P(churn) for ``rows`` from an RFM logistic regression fitted on ``prior`` rows."""
    mean, std = fit_normalisation(prior.features)
    weights = fit_rfm_reference(normalise(prior.features, mean, std).astype(np.float64), prior.churn)
    return linear_churn(normalise(rows.features, mean, std).astype(np.float64), weights, "rfm")


class BgNbd:
    """Fitted BG/NBD parameters (time in weeks)."""

    def __init__(self, r: float, alpha: float, a: float, b: float) -> None:
        self.r, self.alpha, self.a, self.b = r, alpha, a, b

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        """P(still active at T) given x repeats, the last at t_x."""
        log_odds = np.log(self.a / (self.b + np.maximum(x, 1.0) - 1.0)) + (self.r + x) * np.log(
            (self.alpha + big_t) / (self.alpha + t_x)
        )
        return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700.0))), 1.0)

    def p_purchase(self, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, t: float) -> np.ndarray:
        """P(at least one purchase in (T, T + t]): alive, and a Poisson purchase given the rate's posterior."""
        none_if_alive = ((self.alpha + big_t) / (self.alpha + big_t + t)) ** (self.r + x)
        return self.p_alive(x, t_x, big_t) * (1.0 - none_if_alive)

    def expected_purchases(self, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, t: float) -> np.ndarray:
        """Expected purchases in (T, T + t] (Fader, Hardie & Lee 2005, eq. 10)."""
        from scipy.special import hyp2f1

        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        ratio = (alpha + big_t) / (alpha + big_t + t)
        hyper = hyp2f1(r + x, b + x, a + b + x - 1.0, t / (alpha + big_t + t))
        numerator = (a + b + x - 1.0) / (a - 1.0) * (1.0 - ratio ** (r + x) * hyper)
        odds = np.where(x > 0, a / (b + np.maximum(x, 1.0) - 1.0) * ((alpha + big_t) / (alpha + t_x)) ** (r + x), 0.0)
        return numerator / (1.0 + odds)


def _negative_log_likelihood(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> float:
    from scipy.special import gammaln

    r, alpha, a, b = np.exp(log_params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + big_t)
    a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1.0, 1e-12)) - (r + x) * np.log(alpha + t_x), -np.inf)
    return float(-(a1 + a2 + np.logaddexp(a3, a4)).sum())


def fit_bgnbd(x: np.ndarray, t_x_days: np.ndarray, t_days: np.ndarray) -> BgNbd:
    """Maximum-likelihood BG/NBD on repeat purchases, recency and age (days), as lifetimes fits it.

    Examples:
        >>> model = fit_bgnbd(np.array([0.0, 2.0, 5.0, 1.0]), np.array([0.0, 30.0, 80.0, 10.0]), np.full(4, 90.0))
        >>> 0 < model.r and 0 < model.alpha
        True
    """
    from scipy.optimize import minimize

    data = (np.asarray(x, float), np.asarray(t_x_days, float) / _WEEK_DAYS, np.asarray(t_days, float) / _WEEK_DAYS)
    result = minimize(
        _negative_log_likelihood,
        np.zeros(4),
        args=data,
        method="Nelder-Mead",
        options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-8},
    )
    r, alpha, a, b = np.exp(result.x)
    return BgNbd(float(r), float(alpha), float(a), float(b))


def _history(rows: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(repeat purchases, t_x, T) in days; a user with no purchase from their first event."""
    column = {name: rows.features[:, FEATURE_NAMES.index(name)] for name in FEATURE_NAMES}
    purchased = column["has_purchased"] > 0
    big_t = np.where(purchased, column["btyd_T_days"], column["tenure_days"])
    return column["btyd_x"], column["btyd_t_x_days"], big_t


def bgnbd_churn(rows: Dataset, horizon_days: float) -> tuple[np.ndarray, BgNbd]:
    """P(no purchase within the horizon) for every row, from BG/NBD fitted on these rows' histories."""
    x, t_x, big_t = _history(rows)
    model = fit_bgnbd(x, t_x, big_t)
    return 1.0 - model.p_purchase(x, t_x / _WEEK_DAYS, big_t / _WEEK_DAYS, horizon_days / _WEEK_DAYS), model
