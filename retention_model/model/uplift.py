"""Serving the uplift model shipped in a bundle: predicted effect of a coupon.

The bundle stores a two-model logistic regression as plain numbers (no pickle):
one model of P(retained | coupon), one of P(retained | no coupon), on the bundle's
normalised features. The uplift is their difference, in numpy, per micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from retention_model.errors import BundleError

__all__ = ["UpliftModel"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


@dataclass(frozen=True)
class UpliftModel:
    """P(retained | coupon) − P(retained | none) from two linear models."""

    treated_coef: np.ndarray
    treated_intercept: float
    control_coef: np.ndarray
    control_intercept: float
    method: str = "two_model_logistic"

    @classmethod
    def from_dict(cls, data: dict[str, Any], n_features: int) -> UpliftModel:
        """Read the ``uplift`` entry of a bundle's extras; refuse a wrong shape."""
        try:
            model = cls(
                np.asarray(data["treated"]["coef"], dtype=np.float64),
                float(data["treated"]["intercept"]),
                np.asarray(data["control"]["coef"], dtype=np.float64),
                float(data["control"]["intercept"]),
                str(data.get("method", "two_model_logistic")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"bundle uplift model is malformed ({type(exc).__name__}: {exc})"
            raise BundleError(msg) from exc
        for coef in (model.treated_coef, model.control_coef):
            if coef.shape != (n_features,):
                msg = f"bundle uplift model has {coef.shape} coefficients, the feature spec has {n_features}"
                raise BundleError(msg)
        return model

    def as_dict(self) -> dict[str, Any]:
        """JSON form, stored under ``extras["uplift"]``."""
        return {
            "method": self.method,
            "treated": {"coef": self.treated_coef.tolist(), "intercept": self.treated_intercept},
            "control": {"coef": self.control_coef.tolist(), "intercept": self.control_intercept},
        }

    def predict(self, normalised: np.ndarray) -> np.ndarray:
        """Uplift per row of a normalised feature matrix."""
        treated = _sigmoid(normalised @ self.treated_coef + self.treated_intercept)
        control = _sigmoid(normalised @ self.control_coef + self.control_intercept)
        return treated - control
