"""Offline training: event log -> labelled rows at every cutoff -> the best candidate -> bundle.

Features come from the worker's own code, replayed over the log in chunks
(:mod:`training.replay`), so a log larger than memory trains. The time line is cut
for one *test cutoff* D (given with ``--cutoff``, or the last the log labels in
full; see :mod:`training.dataset`):
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from retention_model.errors import TrainingDataError
from retention_model.events import Event, EventType
from retention_model.model.bundle import normalise, write_bundle
from retention_model.monitoring.drift import FeatureReference
from retention_model.policy.recommend_learn import learn_recommendations
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
    DatasetBuilder,
    TimeSplit,
    TrainConfig,
    build_dataset,
    choose_cutoffs,
    day,
    plan_cutoffs,
    time_split,
)
from training.drift_reference import ReferenceBuilder
from training.metrics import classification_metrics, side_by_side
from training.replay import EventSource, LogSummary, Snapshots, chunks_of, rereadable, summarise
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


def plan_training(events: EventSource | LogSummary, config: TrainConfig) -> CutoffPlan:
    """The cutoff plan for a log or its summary; raises :class:`TrainingDataError` (before TensorFlow) if it cannot."""
    summary = events if isinstance(events, LogSummary) else summarise(events)
    if not summary.events:
        msg = "the event log has no events"
        raise TrainingDataError(msg)
    return plan_cutoffs(summary.first_ms, summary.last_ms, config)


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
    events: EventSource | Iterable[Event],
    registry: str | Path,
    config: TrainConfig,
    *,
    source: str = "",
    treatment_log: list[Any] | None = None,
    candidates: tuple[CandidateSpec, ...] = CANDIDATES,
    skipped_rows: dict[str, int] | None = None,
    summary: LogSummary | None = None,
) -> Path:
    """Fit the best candidate on an event log and write a bundle into ``registry``.

    Everything the model learns from precedes the test cutoff. The bundle also
    carries the co-purchase table for recommendation payloads and, given a
    randomised ``treatment_log`` (see :mod:`training.uplift`), a coupon uplift
    model for expected-value targeting.

    ``events``: in memory, or an :class:`~training.replay.EventLog` read in chunks:
    one pass for its ``summary`` (unless given), one for the rows, the
    recommendations and the uplift rows together; the log is never held whole.
    """
    if summary is None:
        events = rereadable(events)  # two passes: a one-shot iterable is read into a list
        summary = summarise(events)
    plan = plan_training(summary, config)
    data, seen = _one_pass(events, plan, config, summary, treatment_log)
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

    extras: dict[str, Any] = {
        "heads": list(HEADS),
        "candidate": chosen.name,
        "popular_categories": [c for c, _ in seen.categories.most_common(10)],
        "recommendations": seen.recommendations,
    }
    if seen.reference is not None:  # for drift monitoring in the worker (retention_model.monitoring.drift)
        extras["feature_reference"] = seen.reference.to_dict()
    if treatment_log:
        extras["uplift"], metrics["uplift"] = _fit_uplift(seen.uplift_rows, treatment_log, mean, std, config.seed)
    first_ms, last_ms = summary.first_ms, summary.last_ms
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
            "events": summary.events,
            "users": summary.users,
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


@dataclass
class _Seen:
    """What training learns from the events up to the test cutoff, besides the rows."""

    categories: Counter[str]
    recommendations: dict[str, Any]
    #: Feature rows at the treatment log's decisions (keys, matrix), or None.
    uplift_rows: tuple[list[tuple[str, int]], np.ndarray] | None
    #: Feature bins and shares just before the cutoff, for drift monitoring (issue 18), or None.
    reference: FeatureReference | None = None


def _one_pass(
    events: EventSource | Iterable[Event],
    plan: CutoffPlan,
    config: TrainConfig,
    summary: LogSummary,
    treatment_log: list[Any] | None,
) -> tuple[Dataset, _Seen]:
    """The labelled rows, purchase categories, recommendations and uplift rows from one pass over the log.

    Only the events at or before the test cutoff teach the categories, the
    recommendations and the uplift rows: the bundle learns nothing after its cutoff.
    """
    builder = DatasetBuilder(plan.all_cutoffs, config, late=summary.late_users)
    uplift = _uplift_snapshots(treatment_log, plan.test, summary) if treatment_log else None
    categories: Counter[str] = Counter()
    test = plan.test
    reference = ReferenceBuilder.for_log(test, summary.events, summary.first_ms, summary.last_ms, seed=config.seed)

    def seen() -> Iterator[Event]:
        for chunk in chunks_of(events):
            builder.feed(chunk)
            reference.feed(chunk)
            if uplift is not None:
                uplift.feed(chunk)
            for event in chunk:
                if event.ts_ms <= test:
                    if event.type is EventType.PURCHASE and event.category:
                        categories[event.category] += 1
                    yield event

    stream = seen()
    recommendations = learn_recommendations(stream)
    for _ in stream:  # (learn_recommendations reads to the end; the rows need every chunk)
        pass
    uplift_rows = uplift.finish() if uplift is not None else None
    return builder.finish(), _Seen(categories, recommendations, uplift_rows, reference.finish())


def _uplift_snapshots(log_records: list[Any], test: int, summary: LogSummary) -> Snapshots:
    """Rows at each treatment decision from the events up to the test cutoff, in the treatment log's user order."""
    decisions: dict[str, set[int]] = {}
    for record in log_records:
        decisions.setdefault(record.user_id, set()).add(record.decision_ms)
    points = {user: tuple((d, d) for d in sorted(times)) for user, times in decisions.items()}
    order = {user: rank for rank, user in enumerate(decisions)}
    return Snapshots(lambda user: points.get(user, ()), late=summary.late_users, visible_until=test, order=order)


def _fit_uplift(
    rows: tuple[list[tuple[str, int]], np.ndarray] | None,
    log_records: list[Any],
    mean: np.ndarray,
    std: np.ndarray,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Served uplift model from a treatment log, with its Qini on a held-out 30%."""
    from sklearn.model_selection import train_test_split

    from training.uplift import fit_served_uplift, qini

    assert rows is not None
    outcome = {(r.user_id, r.decision_ms): r for r in log_records}
    keys, matrix = rows
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
