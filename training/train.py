"""Offline training: event log -> labelled feature rows -> Keras model -> bundle.

Features come from :func:`retention_model.features.offline.features_at`, the same
code the worker runs. Labels look only forward of each cutoff, features only
back, and the split is by time: training labels end before the validation
cutoff, validation labels before the test cutoff, so the future never leaks.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from retention_model.events import Event, EventType
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.offline import events_by_user, features_at
from retention_model.features.state import DAY_MS
from retention_model.model.bundle import normalise, write_bundle
from retention_model.policy.recommend import learn_recommendations

__all__ = ["Dataset", "TrainConfig", "build_dataset", "choose_cutoffs", "train"]

log = logging.getLogger(__name__)

SECONDARY_DAYS = 7


@dataclass(frozen=True)
class TrainConfig:
    """How to cut, label and fit."""

    horizon_days: int = 30
    cutoff_step_days: int = 14
    min_history_days: int = 28
    #: Users silent for longer than this at a cutoff are left out of its rows:
    #: long-gone users are trivially "churned" and would flatter every metric.
    max_silence_days: int = 120
    epochs: int = 40
    batch_size: int = 512
    seed: int = 42
    hidden: tuple[int, ...] = (64, 32)


@dataclass
class Dataset:
    """Feature rows with labels, one per (user, cutoff)."""

    keys: list[tuple[str, int]]
    features: np.ndarray
    churn: np.ndarray
    purchase_7d: np.ndarray
    cancel_7d: np.ndarray
    review_7d: np.ndarray
    spend_h: np.ndarray

    def take(self, mask: np.ndarray) -> Dataset:
        """Rows where ``mask`` is true."""
        idx = np.flatnonzero(mask)
        return Dataset(
            [self.keys[i] for i in idx],
            self.features[idx],
            self.churn[idx],
            self.purchase_7d[idx],
            self.cancel_7d[idx],
            self.review_7d[idx],
            self.spend_h[idx],
        )

    @property
    def cutoffs(self) -> np.ndarray:
        """Cutoff time of every row."""
        return np.asarray([c for _, c in self.keys], dtype=np.int64)


def choose_cutoffs(first_ms: int, last_ms: int, config: TrainConfig) -> list[int]:
    """Cutoffs every ``cutoff_step_days``, with a full label horizon after each."""
    start = first_ms + config.min_history_days * DAY_MS
    end = last_ms - config.horizon_days * DAY_MS
    start -= start % DAY_MS
    return list(range(start, end + 1, config.cutoff_step_days * DAY_MS))


def build_dataset(events: list[Event], cutoffs: list[int], config: TrainConfig) -> Dataset:
    """Labelled feature rows at every cutoff for every user seen before it."""
    per_user = events_by_user(events)
    points = []
    for user_id, user_events in per_user.items():
        first = min(e.ts_ms for e in user_events)
        points.extend((user_id, c) for c in cutoffs if first <= c)
    keys, matrix = features_at(per_user, points)
    recency = matrix[:, FEATURE_NAMES.index("recency_days")]
    keep = recency <= config.max_silence_days
    keys = [k for k, kept in zip(keys, keep) if kept]
    matrix = matrix[keep]

    horizon = config.horizon_days * DAY_MS
    short = SECONDARY_DAYS * DAY_MS
    labels = np.zeros((len(keys), 5))
    purchase_times = {
        u: sorted((e.ts_ms, e.amount) for e in ev if e.type is EventType.PURCHASE) for u, ev in per_user.items()
    }
    typed_times = {
        kind: {u: sorted(e.ts_ms for e in ev if e.type is kind) for u, ev in per_user.items()}
        for kind in (EventType.CANCEL_ORDER, EventType.REVIEW)
    }

    def any_in(times: list[int], lo: int, hi: int) -> bool:
        idx = np.searchsorted(times, lo, side="right")
        return idx < len(times) and times[idx] <= hi

    for row, (user_id, cutoff) in enumerate(keys):
        purchases = purchase_times[user_id]
        ts = [t for t, _ in purchases]
        spend = sum(a for t, a in purchases if cutoff < t <= cutoff + horizon)
        labels[row] = (
            0.0 if any_in(ts, cutoff, cutoff + horizon) else 1.0,
            1.0 if any_in(ts, cutoff, cutoff + short) else 0.0,
            1.0 if any_in(typed_times[EventType.CANCEL_ORDER][user_id], cutoff, cutoff + short) else 0.0,
            1.0 if any_in(typed_times[EventType.REVIEW][user_id], cutoff, cutoff + short) else 0.0,
            spend,
        )
    return Dataset(keys, matrix, *(labels[:, i] for i in range(5)))


@dataclass
class TimeSplit:
    """Rows at earlier cutoffs to train on, the next to validate, the last to test.

    Each later set's cutoff is at least one horizon after the rows before it were
    labelled, so no label window overlaps a later set's features.
    """

    train: Dataset
    validation: Dataset
    test: Dataset
    train_cutoffs: list[int]
    val_cutoff: int
    test_cutoff: int


def time_split(events: list[Event], config: TrainConfig) -> TimeSplit:
    """Cut, label and split an event log by time (the split ``train`` uses)."""
    first_ms = min(e.ts_ms for e in events)
    last_ms = max(e.ts_ms for e in events)
    cutoffs = choose_cutoffs(first_ms, last_ms, config)
    horizon = config.horizon_days * DAY_MS
    test_cutoff = cutoffs[-1] if cutoffs else 0
    val_cutoff = max((c for c in cutoffs if c <= test_cutoff - horizon), default=0)
    train_cutoffs = [c for c in cutoffs if c <= val_cutoff - horizon]
    if not train_cutoffs:
        msg = (
            f"the event log spans {(last_ms - first_ms) / DAY_MS:.0f} days; a time split with a "
            f"{config.horizon_days}-day horizon needs at least {config.min_history_days + 4 * config.horizon_days} days"
        )
        raise ValueError(msg)
    data = build_dataset(events, cutoffs, config)
    at = data.cutoffs
    return TimeSplit(
        train=data.take(at <= val_cutoff - horizon),
        validation=data.take(at == val_cutoff),
        test=data.take(at == test_cutoff),
        train_cutoffs=train_cutoffs,
        val_cutoff=val_cutoff,
        test_cutoff=test_cutoff,
    )


def _build_model(n_features: int, config: TrainConfig) -> Any:
    import keras

    inputs = keras.Input(shape=(n_features,), name="features")
    x = inputs
    for width in config.hidden:
        x = keras.layers.Dense(width, activation="relu")(x)
        x = keras.layers.Dropout(0.1)(x)
    outputs = {
        "churn": keras.layers.Dense(1, activation="sigmoid", name="churn")(x),
        "purchase_7d": keras.layers.Dense(1, activation="sigmoid", name="purchase_7d")(x),
        "cancel_7d": keras.layers.Dense(1, activation="sigmoid", name="cancel_7d")(x),
        "review_7d": keras.layers.Dense(1, activation="sigmoid", name="review_7d")(x),
        "spend_h": keras.layers.Dense(1, activation="softplus", name="spend_h")(x),
    }
    model = keras.Model(inputs, outputs, name="churn_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={
            "churn": "binary_crossentropy",
            "purchase_7d": "binary_crossentropy",
            "cancel_7d": "binary_crossentropy",
            "review_7d": "binary_crossentropy",
            "spend_h": "mse",
        },
        loss_weights={"churn": 1.0, "purchase_7d": 0.3, "cancel_7d": 0.1, "review_7d": 0.1, "spend_h": 0.05},
    )
    return model


def _targets(data: Dataset) -> dict[str, np.ndarray]:
    return {
        "churn": data.churn,
        "purchase_7d": data.purchase_7d,
        "cancel_7d": data.cancel_7d,
        "review_7d": data.review_7d,
        # log1p spend keeps the regression head from dominating the loss
        "spend_h": np.log1p(data.spend_h),
    }


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier, log loss and expected calibration error (10 bins)."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    clipped = np.clip(scores, 1e-6, 1 - 1e-6)
    bins = np.minimum((scores * 10).astype(int), 9)
    ece = sum(
        abs(labels[bins == b].mean() - scores[bins == b].mean()) * (bins == b).mean()
        for b in range(10)
        if (bins == b).any()
    )
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "brier": float(brier_score_loss(labels, scores)),
        "log_loss": float(log_loss(labels, clipped)),
        "ece": float(ece),
        "rows": len(labels),
        "positive_rate": float(labels.mean()),
    }


def train(
    events: list[Event],
    registry: str | Path,
    config: TrainConfig,
    *,
    source: str = "",
    treatment_log: list[Any] | None = None,
) -> Path:
    """Fit the churn model on an event log and write a bundle into ``registry``.

    The bundle also carries the co-purchase table for recommendation payloads
    and, given a randomised ``treatment_log`` (see :mod:`training.uplift`), a
    coupon uplift model for expected-value targeting.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    keras.utils.set_random_seed(config.seed)
    first_ms = min(e.ts_ms for e in events)
    last_ms = max(e.ts_ms for e in events)
    split = time_split(events, config)
    train_set, val_set, test_set = split.train, split.validation, split.test
    train_cutoffs, val_cutoff, test_cutoff = split.train_cutoffs, split.val_cutoff, split.test_cutoff
    log.info("rows: train %d, validation %d, test %d", len(train_set.keys), len(val_set.keys), len(test_set.keys))

    transformed = np.sign(train_set.features) * np.log1p(np.abs(train_set.features))
    mean = transformed.mean(axis=0)
    std = transformed.std(axis=0)
    std[std < 1e-9] = 1.0
    x_train = normalise(train_set.features, mean, std)
    x_val = normalise(val_set.features, mean, std)
    x_test = normalise(test_set.features, mean, std)

    model = _build_model(len(FEATURE_NAMES), config)
    model.fit(
        x_train,
        _targets(train_set),
        validation_data=(x_val, _targets(val_set)),
        epochs=config.epochs,
        batch_size=config.batch_size,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_churn_loss", mode="min", patience=4, restore_best_weights=True)
        ],
        verbose=2,
    )

    def churn_scores(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False)["churn"]).reshape(-1).astype(np.float64)

    isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    isotonic.fit(churn_scores(x_val), val_set.churn)
    raw_test = churn_scores(x_test)
    calibrated_test = isotonic.predict(raw_test)

    baseline = LogisticRegression(max_iter=2000)
    baseline.fit(x_train, train_set.churn)
    metrics = {
        "test": classification_metrics(test_set.churn, calibrated_test),
        "test_uncalibrated": classification_metrics(test_set.churn, raw_test),
        "test_logistic_regression": classification_metrics(test_set.churn, baseline.predict_proba(x_test)[:, 1]),
        "validation": classification_metrics(val_set.churn, isotonic.predict(churn_scores(x_val))),
    }
    log.info("test metrics: %s", metrics["test"])
    categories: Counter[str] = Counter(e.category for e in events if e.type is EventType.PURCHASE and e.category)
    extras: dict[str, Any] = {
        "heads": ["churn", "purchase_7d", "cancel_7d", "review_7d", "spend_h"],
        "popular_categories": [c for c, _ in categories.most_common(10)],
        "recommendations": learn_recommendations(events),
    }
    if treatment_log:
        extras["uplift"], metrics["uplift"] = _fit_uplift(events, treatment_log, mean, std, config.seed)
    return write_bundle(
        registry,
        model,
        mean=mean,
        std=std,
        created_at=datetime.now(tz=UTC).isoformat(timespec="seconds"),
        calibration={
            "method": "isotonic",
            "x": [float(v) for v in isotonic.X_thresholds_],
            "y": [float(v) for v in isotonic.y_thresholds_],
        },
        metrics=metrics,
        training_data={
            "source": source,
            "events": len(events),
            "users": len({e.user_id for e in events}),
            "first_event": datetime.fromtimestamp(first_ms / 1000, tz=UTC).isoformat(),
            "last_event": datetime.fromtimestamp(last_ms / 1000, tz=UTC).isoformat(),
            "horizon_days": config.horizon_days,
            "label": f"churn = no purchase within {config.horizon_days} days after the cutoff",
            "cutoffs": {
                "train": [datetime.fromtimestamp(c / 1000, tz=UTC).date().isoformat() for c in train_cutoffs],
                "validation": datetime.fromtimestamp(val_cutoff / 1000, tz=UTC).date().isoformat(),
                "test": datetime.fromtimestamp(test_cutoff / 1000, tz=UTC).date().isoformat(),
            },
            "rows": {"train": len(train_set.keys), "validation": len(val_set.keys), "test": len(test_set.keys)},
        },
        extras=extras,
    )


def _fit_uplift(
    events: list[Event], log_records: list[Any], mean: np.ndarray, std: np.ndarray, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Served uplift model from a treatment log, with its Qini on a held-out 30%."""
    from sklearn.model_selection import train_test_split

    from training.uplift import fit_served_uplift, qini

    per_user = events_by_user(events)
    outcome = {(r.user_id, r.decision_ms): r for r in log_records}
    keys, matrix = features_at(per_user, list(outcome))
    if len(keys) < 100:
        msg = f"the treatment log matches only {len(keys)} users with events before their decision; need 100"
        raise ValueError(msg)
    treated = np.array([outcome[k].treated for k in keys])
    retained = np.array([outcome[k].retained for k in keys])
    x = normalise(matrix, mean, std).astype(np.float64)
    idx_fit, idx_eval = train_test_split(
        np.arange(len(keys)), test_size=0.3, random_state=seed, stratify=treated * 2 + retained
    )
    held_out, _ = fit_served_uplift(x[idx_fit], treated[idx_fit], retained[idx_fit], seed)
    evaluation = qini(held_out.predict(x[idx_eval]), treated[idx_eval], retained[idx_eval])
    served, cv_qini = fit_served_uplift(x, treated, retained, seed)
    log.info("uplift model: %d rows, held-out %s", len(keys), evaluation)
    return served.as_dict(), {"rows": len(keys), "held_out_30pct": evaluation, "cv_qini": cv_qini}
