"""Offline training: event log -> labelled rows at every cutoff -> the best candidate -> bundle.

Features come from :func:`retention_model.features.offline.features_at`, the same
code the worker runs. The time line is cut for one *test cutoff* D (given with
``--cutoff``, or the last the log labels in full; see :mod:`training.dataset`):
the shipped model is fitted on every cutoff whose labels closed by D and calibrated
on the most recent of them; the candidates (:mod:`training.candidates`) are
compared at rolling origins before D (:mod:`training.selection`), and the one with
the lowest mean log loss ships. When the log covers D's own label window, the
bundle also carries the test figures at D beside the RFM logistic regression and
BG/NBD, with paired intervals.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from retention_model.errors import TrainingDataError
from retention_model.events import Event, EventType
from retention_model.features.offline import events_by_user, features_at
from retention_model.model.bundle import normalise, write_bundle
from retention_model.policy.recommend import learn_recommendations
from training.baselines import bgnbd_churn, fit_normalisation, rfm_logistic_regression_churn
from training.candidates import (
    CANDIDATES,
    HEADS,
    CandidateSpec,
    apply_calibration,
    churn_raw,
    fit_candidate,
    platt_calibration,
)
from training.dataset import (
    CutoffPlan,
    Dataset,
    TimeSplit,
    TrainConfig,
    build_dataset,
    choose_cutoffs,
    day,
    plan_cutoffs,
    time_split,
)
from training.drift_reference import feature_reference
from training.metrics import classification_metrics, side_by_side
from training.selection import REFERENCE, compare_candidates

__all__ = [
    "Dataset",
    "TimeSplit",
    "TrainConfig",
    "build_dataset",
    "choose_cutoffs",
    "classification_metrics",
    "plan_training",
    "time_split",
    "train",
]

log = logging.getLogger(__name__)


def plan_training(events: list[Event], config: TrainConfig) -> CutoffPlan:
    """The cutoff plan for a log; raises :class:`TrainingDataError` (before TensorFlow) when it cannot train."""
    if not events:
        msg = "the event log has no events"
        raise TrainingDataError(msg)
    return plan_cutoffs(min(e.ts_ms for e in events), max(e.ts_ms for e in events), config)


def _require_both_classes(name: str, data: Dataset, cutoffs: tuple[int, ...]) -> None:
    if len(data.keys) == 0 or data.churn.min() == data.churn.max():
        rate = f"{data.churn.mean():.0%} churn" if len(data.keys) else "none"
        msg = (
            f"the {name} rows ({len(data.keys)} at {', '.join(day(c) for c in cutoffs[:3])}"
            f"{'...' if len(cutoffs) > 3 else ''}) have {rate}: a model needs churners and stayers; "
            "use a longer log, a different --horizon-days or --max-silence-days"
        )
        raise TrainingDataError(msg)


def filter_report(data: Dataset, plan: CutoffPlan, config: TrainConfig) -> dict[str, Any]:
    """Rows kept and removed by each filter, per role: every report shows it."""
    roles = {"fit": plan.fit, "calibration": plan.calibration}
    if plan.test_labelled:
        roles["test"] = (plan.test,)
    for i, origin in enumerate(plan.origins, start=1):
        roles[f"origin_{i}"] = (origin.at,)
    return {
        "max_silence_days": config.max_silence_days,
        "not_yet_seen": "users with no event at or before a cutoff have no row there",
        **{role: data.counts(cutoffs) for role, cutoffs in roles.items()},
    }


def test_figures(
    model: Any,
    calibration: dict[str, Any],
    data: Dataset,
    plan: CutoffPlan,
    config: TrainConfig,
    mean: np.ndarray,
    std: np.ndarray,
) -> dict[str, Any]:
    """The shipped model at the test cutoff (``test``) beside the RFM logistic regression and BG/NBD.

    ``test`` keeps the shape it always had (the model's figures), so readers of older
    bundles read these too; the references and the paired differences sit beside it.
    """
    test = data.at((plan.test,))
    if len(test.keys) == 0 or test.churn.min() == test.churn.max():
        return {"test_skipped": f"the {len(test.keys)} test rows at {day(plan.test)} are of one class"}
    raw = churn_raw(model, normalise(test.features, mean, std).astype(np.float64))
    prior = data.at((*plan.fit, *plan.calibration))
    scores = {
        "model": apply_calibration(raw, calibration),
        REFERENCE: rfm_logistic_regression_churn(prior, test),
        "bgnbd": bgnbd_churn(test, config.horizon_days)[0],
    }
    compared = side_by_side(test.churn, scores, seed=config.seed)
    figures = compared["figures"]
    return {
        "test": figures.pop("model"),
        "test_uncalibrated": classification_metrics(test.churn, raw),
        "test_baselines": figures,
        "test_model_minus_baseline": compared["differences"],
    }


def train(
    events: list[Event],
    registry: str | Path,
    config: TrainConfig,
    *,
    source: str = "",
    treatment_log: list[Any] | None = None,
    candidates: tuple[CandidateSpec, ...] = CANDIDATES,
    skipped_rows: dict[str, int] | None = None,
) -> Path:
    """Fit the best candidate on an event log and write a bundle into ``registry``.

    Everything the model learns from precedes the test cutoff. The bundle also
    carries the co-purchase table for recommendation payloads and, given a
    randomised ``treatment_log`` (see :mod:`training.uplift`), a coupon uplift
    model for expected-value targeting.
    """
    plan = plan_training(events, config)
    data = build_dataset(events, plan.all_cutoffs, config)
    fit, calibration_rows = data.at(plan.fit), data.at(plan.calibration)
    _require_both_classes("training", fit, plan.fit)
    _require_both_classes("calibration", calibration_rows, plan.calibration)
    filters = filter_report(data, plan, config)
    log.info("rows and filters: %s", filters)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    selection = compare_candidates(data, plan, config, candidates)
    chosen = next(spec for spec in candidates if spec.name == selection["chosen"])
    log.info("rolling origins chose %s (%s)", chosen.name, selection.get("mean", {}).get(chosen.name))

    mean, std = fit_normalisation(fit.features)
    x_fit = normalise(fit.features, mean, std).astype(np.float64)
    x_cal = normalise(calibration_rows.features, mean, std).astype(np.float64)
    model = fit_candidate(chosen, x_fit, fit, x_cal, calibration_rows, config, all_heads=True)
    calibration = platt_calibration(churn_raw(model, x_cal), calibration_rows.churn)
    metrics: dict[str, Any] = {"selection": selection}
    if plan.test_labelled:
        metrics.update(test_figures(model, calibration, data, plan, config, mean, std))
        log.info("test at %s: %s", day(plan.test), metrics.get("test"))

    seen = [e for e in events if e.ts_ms <= plan.test]  # the bundle learns nothing after its cutoff
    categories: Counter[str] = Counter(e.category for e in seen if e.type is EventType.PURCHASE and e.category)
    extras: dict[str, Any] = {
        "heads": list(HEADS),
        "candidate": chosen.name,
        "popular_categories": [c for c, _ in categories.most_common(10)],
        "recommendations": learn_recommendations(seen),
    }
    reference = feature_reference(seen, plan.test, seed=config.seed)
    if reference is not None:  # for drift monitoring in the worker (retention_model.monitoring.drift)
        extras["feature_reference"] = reference.to_dict()
    if treatment_log:
        extras["uplift"], metrics["uplift"] = _fit_uplift(seen, treatment_log, mean, std, config.seed)
    first_ms, last_ms = min(e.ts_ms for e in events), max(e.ts_ms for e in events)
    return write_bundle(
        registry,
        model,
        mean=mean,
        std=std,
        created_at=datetime.now(tz=UTC).isoformat(timespec="seconds"),
        calibration=calibration,
        metrics=metrics,
        training_data={
            "source": source,
            "events": len(events),
            "users": len({e.user_id for e in events}),
            "first_event": datetime.fromtimestamp(first_ms / 1000, tz=UTC).isoformat(),
            "last_event": datetime.fromtimestamp(last_ms / 1000, tz=UTC).isoformat(),
            "skipped_invalid_rows": dict(skipped_rows or {}),
            "horizon_days": config.horizon_days,
            "label": f"churn = no purchase within {config.horizon_days} days after the cutoff",
            "cutoff": day(plan.test),
            "cutoff_ms": plan.test,
            "cutoff_chosen": "given" if config.cutoff_ms is not None else "the last cutoff the log labels in full",
            "cutoffs": plan.describe(),
            "cutoff_step_days": config.cutoff_step_days,
            "filters": filters,
            "rows": {"fit": len(fit.keys), "calibration": len(calibration_rows.keys)},
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
