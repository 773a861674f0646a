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
from retention_model.features.state import DAY_MS
from retention_model.model.bundle import normalise

__all__ = ["CDNOW_HELP", "CdnowSplit", "evaluate_cdnow", "load_cdnow"]

log = logging.getLogger(__name__)

CDNOW_HELP = (
    "CDNOW_master.txt was not found. It ships in the lifetimes wheel on PyPI: "
    "`pip download --no-deps lifetimes==0.11.3` and unzip lifetimes/datasets/CDNOW_master.txt, "
    "then pass --data PATH (in this repository's workspace it lies at ../shared/data/cdnow/)."
)


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


def _project_network(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    n_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_val: np.ndarray,
    seed: int,
) -> Any:
    """The MLP with a P(purchase) head and a Poisson count head (expected holdout purchases)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(x_fit.shape[1],))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    hidden = keras.layers.Dense(16, activation="relu")(hidden)
    outputs = {
        "purchase": keras.layers.Dense(1, activation="sigmoid", name="purchase")(hidden),
        "count": keras.layers.Dense(1, activation="exponential", name="count")(hidden),
    }
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={"purchase": "binary_crossentropy", "count": "poisson"})
    model.fit(
        x_fit,
        {"purchase": y_fit, "count": n_fit},
        validation_data=(x_val, {"purchase": y_val, "count": n_val}),
        epochs=60,
        batch_size=256,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=5, restore_best_weights=True)
        ],
        verbose=0,
    )
    return model


def _project_fold(
    x_train: np.ndarray, y_train: np.ndarray, n_train: np.ndarray, x_test: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """The project's pipeline on one fold: P(purchase in holdout), expected holdout purchases, the candidate chosen.

    As ``retention train`` does, the candidates (RFM logistic regression, logistic
    regression, the MLP, wide & deep) are compared on held-out rows (15% of the
    fold's customers: the split has one cutoff, so no rolling origins) and the one
    with the lowest log loss scores the test customers. The count comes from the
    MLP's Poisson head.
    """
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split

    from training.baselines import fit_normalisation
    from training.candidates import CANDIDATES, churn_raw, fit_candidate, fit_linear, linear_churn
    from training.dataset import Dataset, TrainConfig

    mean, std = fit_normalisation(x_train)
    x, x_out = normalise(x_train, mean, std).astype(np.float64), normalise(x_test, mean, std).astype(np.float64)
    fit_idx, val_idx = train_test_split(np.arange(len(y_train)), test_size=0.15, random_state=seed, stratify=y_train)

    def rows(idx: np.ndarray) -> Dataset:
        zeros = np.zeros(len(idx))
        return Dataset([("", 0)] * len(idx), x_train[idx], 1.0 - y_train[idx], zeros, zeros, zeros, zeros)

    fit, val = rows(fit_idx), rows(val_idx)
    config = TrainConfig(seed=seed, hidden=(32, 16), epochs=60, batch_size=256)
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # P(purchase) on validation and test rows
    network = _project_network(
        x[fit_idx], y_train[fit_idx], n_train[fit_idx], x[val_idx], y_train[val_idx], n_train[val_idx], seed
    )
    out = network(x_out, training=False)
    count = np.asarray(out["count"]).reshape(-1).astype(np.float64)
    predictions["mlp"] = (
        np.asarray(network(x[val_idx], training=False)["purchase"]).reshape(-1).astype(np.float64),
        np.asarray(out["purchase"]).reshape(-1).astype(np.float64),
    )
    for spec in CANDIDATES:
        if spec.name == "mlp":
            continue
        if spec.kind == "linear":
            weights = fit_linear(spec, x[fit_idx], fit, all_heads=False)["churn"]
            predictions[spec.name] = (
                1.0 - linear_churn(x[val_idx], weights, spec.columns),
                1.0 - linear_churn(x_out, weights, spec.columns),
            )
        else:
            model = fit_candidate(spec, x[fit_idx], fit, x[val_idx], val, config)
            predictions[spec.name] = (1.0 - churn_raw(model, x[val_idx]), 1.0 - churn_raw(model, x_out))
    losses = {name: log_loss(y_train[val_idx], np.clip(v, 1e-6, 1 - 1e-6)) for name, (v, _) in predictions.items()}
    chosen = min(losses, key=lambda name: losses[name])
    log.info("candidates' validation log loss: %s; chosen %s", {k: round(v, 4) for k, v in losses.items()}, chosen)
    return predictions[chosen][1], count, chosen


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
    chosen_per_fold: list[str] = []
    for fold, (train, test) in enumerate(folder.split(features, labels)):
        log.info("fold %d/%d: %d train, %d test customers", fold + 1, folds, len(train), len(test))
        probability, count, chosen = _project_fold(
            features[train], labels[train], holdout_counts[train], features[test], seed
        )
        chosen_per_fold.append(chosen)
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
        _btyd_fold(scores, rfm, train, test, holdout_days, pareto=btyd)

    actual = int(holdout_counts.sum())
    models: dict[str, Any] = {}
    for name, predicted in scores.items():
        if name == "pareto_nbd" and not btyd:
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
    from training.metrics import paired_differences

    # Paired intervals of the project's P(purchase) against each baseline's, row by row.
    against = {
        name: paired_differences(labels, scores["project"]["probability"], scores[name]["probability"], seed=seed)
        for name in ("logistic_regression", "gradient_boosting", "bgnbd", "history_ceiling")
    }
    return {
        "models": models,
        "project_minus_baseline": against,
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
            "project_candidate_per_fold": chosen_per_fold,
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
        log.warning("lifetimes is not installed: Pareto/NBD is skipped (pip install -e '.[bench]')")
        return False
    return True


def _btyd_fold(
    scores: dict[str, dict[str, np.ndarray]],
    rfm: pd.DataFrame,
    train: np.ndarray,
    test: np.ndarray,
    horizon_days: float,
    *,
    pareto: bool,
) -> None:
    """BG/NBD (training.baselines, no extra needed) and, with lifetimes, Pareto/NBD."""
    from training.baselines import fit_bgnbd

    weeks = rfm[["frequency", "recency", "T"]].to_numpy(dtype=np.float64) / np.array([1.0, 7.0, 7.0])
    t = horizon_days / 7.0
    f_te, r_te, big_t_te = weeks[test].T
    days = rfm[["frequency", "recency", "T"]].to_numpy(dtype=np.float64)[train].T
    bgnbd = fit_bgnbd(*days)
    scores["bgnbd"]["count"][test] = bgnbd.expected_purchases(f_te, r_te, big_t_te, t)
    scores["bgnbd"]["probability"][test] = bgnbd.p_purchase(f_te, r_te, big_t_te, t)
    if not pareto:
        return
    from lifetimes import ParetoNBDFitter

    f_tr, r_tr, big_t_tr = weeks[train].T
    pareto_nbd = ParetoNBDFitter(penalizer_coef=0.0).fit(f_tr, r_tr, big_t_tr)
    scores["pareto_nbd"]["count"][test] = pareto_nbd.conditional_expected_number_of_purchases_up_to_time(
        t, f_te, r_te, big_t_te
    )
    scores["pareto_nbd"]["probability"][test] = 1.0 - np.array(
        [
            pareto_nbd.conditional_probability_of_n_purchases_up_to_time(0, t, f, r, tt)
            for f, r, tt in zip(f_te, r_te, big_t_te)
        ]
    )
