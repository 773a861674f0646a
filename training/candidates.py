"""The candidate churn models, each a Keras model the worker serves unchanged.

Every candidate takes the bundle's normalised :data:`FEATURE_NAMES` row and has the
same output heads, so ``scorer.py`` loads any of them the same way:

* ``rfm_logistic_regression``: the textbook reference, a logistic regression on
  recency, frequency, monetary value and tenure of purchases (:data:`RFM_FEATURES`);
* ``logistic_regression``: the same on all the features, L2-regularised;
* ``mlp``: a multi-task network on all the features;
* ``wide_deep``: the MLP's logit plus a linear part on the RFM features (Cheng et
  al. 2016, "Wide & Deep Learning"), started at the fitted RFM logistic regression,
  so training begins where the reference ends.

The linear candidates are fitted by scikit-learn (exact, fast) and written into
Dense layers; a fixed, untrainable Dense layer picks the RFM columns, so a bundle
holds nothing but standard layers and loads in Keras safe mode.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from retention_model.features.definitions import FEATURE_NAMES

if TYPE_CHECKING:
    from training.dataset import Dataset, TrainConfig

__all__ = [
    "CANDIDATES",
    "HEADS",
    "RFM_FEATURES",
    "CandidateSpec",
    "apply_calibration",
    "churn_raw",
    "fit_candidate",
    "fit_rfm_reference",
    "platt_calibration",
]

log = logging.getLogger(__name__)

#: Purchase recency, frequency, monetary value and age, and whether there was a purchase at all.
RFM_FEATURES = ("purchase_recency_days", "purchases_count_total", "avg_order_value", "btyd_T_days", "has_purchased")
RFM_COLUMNS = [FEATURE_NAMES.index(name) for name in RFM_FEATURES]
#: Output heads, in the order the bundle lists them; the worker reads ``churn``.
HEADS = ("churn", "purchase_7d", "cancel_7d", "review_7d", "spend_h")
_BINARY = HEADS[:4]


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate: its kind and the hyper-parameters it is compared with."""

    name: str
    kind: Literal["linear", "mlp", "wide_deep"]
    #: Linear candidates: which columns (``rfm`` or ``all``) and the inverse L2 strength.
    columns: Literal["rfm", "all"] = "all"
    c: float = 1.0


CANDIDATES = (
    CandidateSpec("rfm_logistic_regression", "linear", columns="rfm", c=1.0),
    CandidateSpec("logistic_regression", "linear", columns="all", c=0.05),
    CandidateSpec("mlp", "mlp"),
    CandidateSpec("wide_deep", "wide_deep"),
)


def targets(data: Dataset) -> dict[str, np.ndarray]:
    """Every head's label; spend as log1p so its regression loss cannot dominate."""
    return {
        "churn": data.churn,
        "purchase_7d": data.purchase_7d,
        "cancel_7d": data.cancel_7d,
        "review_7d": data.review_7d,
        "spend_h": np.log1p(data.spend_h),
    }


def _columns(spec_columns: str) -> list[int]:
    return RFM_COLUMNS if spec_columns == "rfm" else list(range(len(FEATURE_NAMES)))


def _linear_head(x: np.ndarray, y: np.ndarray, c: float, binary: bool) -> tuple[np.ndarray, float]:
    """(coefficients, intercept) of a logistic (or, for spend, ridge) regression."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if not binary:
        ridge = Ridge(alpha=1.0).fit(x, y)
        return np.asarray(ridge.coef_, dtype=np.float64), float(ridge.intercept_)
    rate = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
    if y.min() == y.max():  # a label that never (or always) happens: its base rate
        return np.zeros(x.shape[1]), float(np.log(rate / (1 - rate)))
    fitted = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    return np.asarray(fitted.coef_[0], dtype=np.float64), float(fitted.intercept_[0])


def fit_rfm_reference(x: np.ndarray, churn: np.ndarray) -> tuple[np.ndarray, float]:
    """The RFM logistic regression's churn head on normalised rows (coefficients, intercept)."""
    return _linear_head(x[:, RFM_COLUMNS], churn, 1.0, True)


def linear_churn(x: np.ndarray, weights: tuple[np.ndarray, float], columns: str) -> np.ndarray:
    """P(churn) of a fitted linear churn head, as the exported Keras model computes it."""
    coef, intercept = weights
    return 1.0 / (1.0 + np.exp(-(x[:, _columns(columns)] @ coef + intercept)))


def _selector(keras: Any, columns: list[int], name: str) -> Any:
    """A fixed Dense layer that passes through the chosen input columns."""
    layer = keras.layers.Dense(len(columns), use_bias=False, trainable=False, name=name)
    layer.build((None, len(FEATURE_NAMES)))
    matrix = np.zeros((len(FEATURE_NAMES), len(columns)), dtype=np.float32)
    matrix[columns, np.arange(len(columns))] = 1.0
    layer.set_weights([matrix])
    return layer


def _linear_model(keras: Any, columns: str, heads: dict[str, tuple[np.ndarray, float]], name: str) -> Any:
    inputs = keras.Input(shape=(len(FEATURE_NAMES),), name="features")
    x = inputs if columns == "all" else _selector(keras, RFM_COLUMNS, "rfm_columns")(inputs)
    outputs = {}
    for head in HEADS:
        dense = keras.layers.Dense(1, activation="sigmoid" if head in _BINARY else "relu", name=head)
        outputs[head] = dense(x)
        coef, intercept = heads[head]
        dense.set_weights([coef.reshape(-1, 1).astype(np.float32), np.array([intercept], dtype=np.float32)])
    return keras.Model(inputs, outputs, name=name)


def fit_linear(spec: CandidateSpec, x: np.ndarray, data: Dataset, *, all_heads: bool) -> dict[str, Any]:
    """Per-head (coefficients, intercept); secondary heads only with ``all_heads`` (else their base rate)."""
    cols = x[:, _columns(spec.columns)]
    fitted: dict[str, Any] = {}
    for head, y in targets(data).items():
        if head == "churn" or all_heads:
            fitted[head] = _linear_head(cols, y, spec.c, head in _BINARY)
        else:  # compared on churn alone: the other heads stay blank
            fitted[head] = (np.zeros(cols.shape[1]), 0.0)
    return fitted


def _network(keras: Any, spec: CandidateSpec, config: TrainConfig, reference: tuple[np.ndarray, float]) -> Any:
    inputs = keras.Input(shape=(len(FEATURE_NAMES),), name="features")
    x = inputs
    for width in config.hidden:
        x = keras.layers.Dense(width, activation="relu")(x)
        x = keras.layers.Dropout(0.1)(x)
    outputs = {head: keras.layers.Dense(1, activation="sigmoid", name=head)(x) for head in _BINARY[1:]}
    outputs["spend_h"] = keras.layers.Dense(1, activation="softplus", name="spend_h")(x)
    if spec.kind == "mlp":
        outputs["churn"] = keras.layers.Dense(1, activation="sigmoid", name="churn")(x)
    else:
        # The deep logit starts at zero and the wide one at the RFM regression: the
        # untrained network *is* the reference, and training moves it from there.
        deep = keras.layers.Dense(1, kernel_initializer="zeros", name="deep_logit")(x)
        wide_layer = keras.layers.Dense(1, name="wide_logit")
        wide = wide_layer(_selector(keras, RFM_COLUMNS, "rfm_columns")(inputs))
        coef, intercept = reference
        wide_layer.set_weights([coef.reshape(-1, 1).astype(np.float32), np.array([intercept], dtype=np.float32)])
        logit = keras.layers.Add(name="churn_logit")([deep, wide])
        outputs["churn"] = keras.layers.Activation("sigmoid", name="churn")(logit)
    model = keras.Model(inputs, {head: outputs[head] for head in HEADS}, name=f"churn_{spec.kind}")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={head: "mse" if head == "spend_h" else "binary_crossentropy" for head in HEADS},
        loss_weights={"churn": 1.0, "purchase_7d": 0.3, "cancel_7d": 0.1, "review_7d": 0.1, "spend_h": 0.05},
    )
    return model


def fit_candidate(
    spec: CandidateSpec,
    x_fit: np.ndarray,
    fit: Dataset,
    x_val: np.ndarray,
    val: Dataset,
    config: TrainConfig,
    *,
    reference: tuple[np.ndarray, float] | None = None,
    all_heads: bool = True,
) -> Any:
    """A fitted Keras model for ``spec``; networks stop early on the validation rows' churn loss."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(config.seed)
    if spec.kind == "linear":
        return _linear_model(keras, spec.columns, fit_linear(spec, x_fit, fit, all_heads=all_heads), spec.name)
    model = _network(keras, spec, config, reference or fit_rfm_reference(x_fit, fit.churn))
    model.fit(
        x_fit,
        targets(fit),
        validation_data=(x_val, targets(val)),
        epochs=config.epochs,
        batch_size=config.batch_size,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_churn_loss", mode="min", patience=4, restore_best_weights=True)
        ],
        verbose=0,
    )
    return model


def churn_raw(model: Any, x: np.ndarray) -> np.ndarray:
    """Uncalibrated P(churn) of a candidate for normalised rows, in batches."""
    parts = [
        np.asarray(model(x[start : start + 8192], training=False)["churn"]).reshape(-1)
        for start in range(0, len(x), 8192)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.empty(0)


#: Platt scaling is served as a table: raw scores on a fine logit grid and their
#: calibrated values, which the scorer interpolates. Strictly increasing, so it
#: keeps the ranking (isotonic steps tie rows and cost ROC-AUC).
_GRID_LOGITS = np.linspace(-14.0, 14.0, 561)


def platt_calibration(raw: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Platt scaling of raw churn scores, fitted on the calibration rows."""
    from sklearn.linear_model import LogisticRegression

    clipped = np.clip(raw, 1e-7, 1 - 1e-7)
    logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    fitted = LogisticRegression(C=1e6, max_iter=1000).fit(logit, labels)
    slope = max(float(fitted.coef_[0, 0]), 1e-3)  # never reverse the ranking
    intercept = float(fitted.intercept_[0])
    x = 1.0 / (1.0 + np.exp(-_GRID_LOGITS))
    y = 1.0 / (1.0 + np.exp(-(slope * _GRID_LOGITS + intercept)))
    return {
        "method": "platt",
        "slope": slope,
        "intercept": intercept,
        "x": [0.0, *(float(v) for v in x), 1.0],
        "y": [0.0, *(float(v) for v in y), 1.0],
    }


def apply_calibration(raw: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
    """Calibrated scores exactly as the scorer computes them (table interpolation)."""
    return np.interp(raw, np.asarray(calibration["x"]), np.asarray(calibration["y"]))
