"""Rolling-origin comparison: which candidate to ship, judged the way it will be used.

At each origin before the test cutoff, every candidate is fitted on the cutoffs
whose labels closed before the origin, calibrated on the most recent of them, and
scored on the users at the origin. The candidate with the lowest mean log loss
over the origins is shipped; every candidate's figures go into ``bundle.json``,
with the paired difference from the RFM logistic regression on the pooled origin
rows, so a reader sees whether the shipped model earns its place.

On a large log an origin's candidates are fitted on a sample of its fit rows
(``TrainConfig.selection_max_rows``, seeded, each cutoff and class keeping its
share): the comparison ranks candidates, and the shipped model, fitted on every
row, does not need it to see them all. The report says how many rows each
origin had and used.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from retention_model.model.bundle import normalise
from training.baselines import fit_normalisation
from training.candidates import (
    CandidateSpec,
    apply_calibration,
    churn_raw,
    fit_candidate,
    fit_linear,
    fit_rfm_reference,
    linear_churn,
    platt_calibration,
)
from training.dataset import CutoffPlan, Dataset, TrainConfig, day
from training.metrics import classification_metrics, paired_differences

__all__ = ["REFERENCE", "compare_candidates", "stratified_sample"]

log = logging.getLogger(__name__)

#: The candidate every other is measured against.
REFERENCE = "rfm_logistic_regression"


def stratified_sample(data: Dataset, size: int, seed: int) -> Dataset:
    """About ``size`` rows of ``data`` drawn without replacement, each (cutoff, churn) keeping its share.

    Examples:
        >>> import numpy as np
        >>> rows = Dataset([("u", i % 4) for i in range(100)], np.zeros((100, 1)), np.arange(100) % 2.0,
        ...                *(np.zeros(100),) * 4)
        >>> part = stratified_sample(rows, 20, seed=1)
        >>> len(part.keys), float(part.churn.mean()), np.bincount(part.cutoffs).tolist()
        (20, 0.5, [5, 5, 5, 5])
    """
    if len(data.keys) <= size:
        return data
    strata = data.cutoffs * 2 + data.churn.astype(np.int64)
    rng = np.random.default_rng(seed)
    chosen = []
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        chosen.append(rng.choice(rows, size=round(len(rows) * size / len(strata)), replace=False))
    mask = np.zeros(len(strata), dtype=bool)
    mask[np.concatenate(chosen)] = True
    return data.take(mask)


def _one_class(*sets: Dataset) -> bool:
    return any(len(s.keys) == 0 or s.churn.min() == s.churn.max() for s in sets)


def _scores_at_origin(
    spec: CandidateSpec,
    sets: tuple[Dataset, Dataset, Dataset],
    xs: tuple[np.ndarray, np.ndarray, np.ndarray],
    config: TrainConfig,
    reference: tuple[np.ndarray, float],
) -> np.ndarray:
    """Calibrated churn scores of one candidate for the origin's rows."""
    (fit, cal, _), (x_fit, x_cal, x_at) = sets, xs
    if spec.kind == "linear":
        weights = fit_linear(spec, x_fit, fit, all_heads=False)["churn"]
        raw_cal, raw_at = linear_churn(x_cal, weights, spec.columns), linear_churn(x_at, weights, spec.columns)
    else:
        model = fit_candidate(spec, x_fit, fit, x_cal, cal, config, reference=reference, all_heads=True)
        raw_cal, raw_at = churn_raw(model, x_cal), churn_raw(model, x_at)
    return apply_calibration(raw_at, platt_calibration(raw_cal, cal.churn))


def compare_candidates(
    data: Dataset, plan: CutoffPlan, config: TrainConfig, candidates: tuple[CandidateSpec, ...]
) -> dict[str, Any]:
    """Every candidate's figures at every origin, their means, and the chosen one."""
    per_origin: list[dict[str, Any]] = []
    pooled: dict[str, list[np.ndarray]] = {spec.name: [] for spec in candidates}
    pooled_labels: list[np.ndarray] = []
    cap = config.selection_max_rows
    for origin in plan.origins:
        available = data.at(origin.fit)
        fit = available if cap is None else stratified_sample(available, cap, config.seed)
        sets = (fit, data.at(origin.calibration), data.at((origin.at,)))
        entry: dict[str, Any] = {
            "at": day(origin.at),
            "rows": {k: len(s.keys) for k, s in zip(("fit", "calibration", "scored"), sets, strict=True)},
        }
        if len(fit.keys) < len(available.keys):
            entry["rows"]["fit_available"] = len(available.keys)
        if _one_class(*sets):
            entry["skipped"] = "a set has rows of one class only"
            per_origin.append(entry)
            continue
        mean, std = fit_normalisation(sets[0].features)
        xs = tuple(normalise(s.features, mean, std).astype(np.float64) for s in sets)
        reference = fit_rfm_reference(xs[0], sets[0].churn)
        labels = sets[2].churn
        pooled_labels.append(labels)
        entry["candidates"] = {}
        for spec in candidates:
            scores = _scores_at_origin(spec, sets, xs, config, reference)  # type: ignore[arg-type]
            pooled[spec.name].append(scores)
            figures = classification_metrics(labels, scores)
            entry["candidates"][spec.name] = figures
            log.info(
                "origin %s %-24s log loss %.4f ROC-AUC %.4f",
                day(origin.at),
                spec.name,
                figures["log_loss"],
                figures["roc_auc"],
            )
        per_origin.append(entry)
    judged = [e for e in per_origin if "candidates" in e]
    if not judged:
        return {"origins": per_origin, "chosen": REFERENCE, "reason": "no origin had both classes: the reference ships"}
    means = {
        spec.name: {
            key: float(np.mean([e["candidates"][spec.name][key] for e in judged]))
            for key in ("log_loss", "roc_auc", "brier", "ece")
        }
        for spec in candidates
    }
    chosen = min(means, key=lambda name: means[name]["log_loss"])
    summary: dict[str, Any] = {
        "origins": per_origin,
        "mean": means,
        "chosen": chosen,
        "criterion": "mean log loss over the rolling origins",
        "fit_rows_per_origin": f"at most {cap:,}, a sample stratified by cutoff and churn (seed {config.seed})"
        if cap is not None
        else "all",
    }
    if REFERENCE in pooled:
        labels = np.concatenate(pooled_labels)
        reference_scores = np.concatenate(pooled[REFERENCE])
        summary[f"against_{REFERENCE}"] = {
            name: paired_differences(labels, np.concatenate(scores), reference_scores, seed=config.seed)
            for name, scores in pooled.items()
            if name != REFERENCE
        }
    return summary
