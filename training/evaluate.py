"""``retention evaluate model``: how good is a bundle on an event log, beside its references?

Builds labelled rows with the shared feature code at one cutoff (given, or the last
the log labels in full), scores them with the bundle (the serving code path), and
puts two references beside it on the very same rows: an RFM logistic regression
fitted on the preceding period of the same log (cutoffs whose labels closed by the
cutoff) and BG/NBD fitted on the users' histories. Every difference from the model
comes with a paired bootstrap 95% interval. Also reported: PR-AUC, log loss,
expected calibration error, lift and capture in the top 10% and 20%, a calibration
table and permutation feature importance. Writes ``evaluation.json``,
``evaluation.md``, with matplotlib PNG plots, and on request one row per scored user.

Everything that can refuse (a bundle for other features, a cutoff the log cannot
label, the bundle's own training period) is checked before TensorFlow loads.

The log is read as training reads it (:class:`~training.replay.EventLog`, in chunks):
one pass for its summary, which the plan needs, and one for the rows; a log larger
than memory evaluates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from retention_model.errors import TrainingDataError
from retention_model.events import Event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.state import DAY_MS
from retention_model.model.bundle import BundleMeta, check_feature_spec, read_bundle_meta
from retention_model.model.scorer import ChurnModel
from training.baselines import bgnbd_churn, rfm_logistic_regression_churn
from training.dataset import Dataset, TrainConfig, build_dataset, day
from training.metrics import classification_metrics, paired_differences
from training.replay import EventSource, LogSummary, summarise

__all__ = [
    "EvaluationPlan",
    "evaluate_model",
    "lift_and_capture",
    "plan_evaluation",
    "write_evaluation_report",
    "write_scores",
]

log = logging.getLogger(__name__)

PLOTS = ("roc", "precision_recall", "calibration", "lift", "feature_importance")
BASELINES = ("rfm_logistic_regression", "bgnbd")


def lift_and_capture(labels: np.ndarray, scores: np.ndarray, top: float) -> dict[str, float]:
    """Churn rate in the top share by score over the base rate, and the share of churners caught."""
    k = max(1, round(top * len(labels)))
    chosen = labels[np.argsort(-scores, kind="stable")[:k]]
    base = labels.mean()
    return {
        "lift": float(chosen.mean() / base) if base > 0 else float("nan"),
        "capture": float(chosen.sum() / labels.sum()) if labels.sum() > 0 else float("nan"),
    }


def calibration_table(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted vs observed churn per score decile bin (empty bins left out)."""
    index = np.minimum((scores * bins).astype(int), bins - 1)
    return [
        {
            "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
            "rows": int((index == b).sum()),
            "mean_predicted": float(scores[index == b].mean()),
            "observed": float(labels[index == b].mean()),
        }
        for b in range(bins)
        if (index == b).any()
    ]


def _permutation_importance(
    model: ChurnModel, features: np.ndarray, labels: np.ndarray, top: int, seed: int
) -> list[dict[str, float]]:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    base = roc_auc_score(labels, model.score_many(features))
    drops = []
    for column, name in enumerate(FEATURE_NAMES):
        shuffled = features.copy()
        shuffled[:, column] = rng.permutation(shuffled[:, column])
        drops.append((base - roc_auc_score(labels, model.score_many(shuffled)), name))
    drops.sort(reverse=True)
    return [{"feature": name, "roc_auc_drop": float(drop)} for drop, name in drops[:top]]


@dataclass(frozen=True)
class EvaluationPlan:
    """Where to evaluate, decided (and checked) before TensorFlow loads."""

    meta: BundleMeta
    config: TrainConfig
    cutoff: int
    #: Earlier cutoffs, labels closed by ``cutoff``: the reference regression's rows.
    prior: tuple[int, ...]
    warnings: list[str] = field(default_factory=list)
    #: The log's summary (times, counts, late users), so the rows need one more pass only.
    summary: LogSummary | None = None


def plan_evaluation(
    events: EventSource | LogSummary,
    model_path: str | Path,
    *,
    cutoff_ms: int | None = None,
    horizon_days: int | None = None,
    max_silence_days: int | str | None = "bundle",
    config: TrainConfig | None = None,
) -> EvaluationPlan:
    """Check the bundle and the cutoff; pick the horizon (the bundle's by default) and the reference rows.

    ``events``: a log read in chunks, events in memory, or a log's summary (what the plan reads).
    """
    meta = read_bundle_meta(model_path)
    check_feature_spec(meta)
    trained = meta.training_data
    warnings = []
    bundle_horizon = trained.get("horizon_days")
    horizon = horizon_days or bundle_horizon or 30
    if bundle_horizon and horizon != bundle_horizon:
        warnings.append(
            f"the bundle was trained for a {bundle_horizon}-day horizon; evaluating it on {horizon} days "
            "judges it on a question it was not asked"
        )
    silence = (
        trained.get("filters", {}).get("max_silence_days", 120) if max_silence_days == "bundle" else max_silence_days
    )
    base = config or TrainConfig()
    config = replace(base, horizon_days=int(horizon), max_silence_days=silence)  # type: ignore[arg-type]
    summary = events if isinstance(events, LogSummary) else summarise(events)
    if not summary.events:
        raise TrainingDataError("the event log has no events")
    first_ms, last_ms = summary.first_ms, summary.last_ms
    h = config.horizon_days * DAY_MS
    cutoff = cutoff_ms if cutoff_ms is not None else (last_ms - h) - (last_ms - h) % DAY_MS
    if cutoff + h > last_ms:
        msg = (
            f"the log ends {day(last_ms)}: the {config.horizon_days}-day labels after the cutoff {day(cutoff)} "
            f"need events up to {day(cutoff + h)}; give a cutoff on or before {day(last_ms - h)}"
        )
        raise TrainingDataError(msg)
    earliest = first_ms + config.min_history_days * DAY_MS
    step = config.cutoff_step_days * DAY_MS
    prior = tuple(sorted(c for c in range(cutoff - step, earliest - 1, -step) if c + h <= cutoff))
    if not prior or cutoff <= first_ms:
        needed = config.min_history_days + config.horizon_days + config.cutoff_step_days
        msg = (
            f"the log starts {day(first_ms)}: the reference regression needs labelled rows before the cutoff "
            f"{day(cutoff)}, so at least {needed} days of log before it"
        )
        raise TrainingDataError(msg)
    through = trained.get("cutoff_ms")
    same_log = (
        trained.get("events") == summary.events
        and trained.get("users") == summary.users
        and str(trained.get("first_event", "")).startswith(day(first_ms - first_ms % DAY_MS))
    )
    if same_log and through is not None and cutoff < int(through):
        msg = (
            f"the bundle was trained on this log with labels up to {day(int(through))}, after the cutoff "
            f"{day(cutoff)}: its figures here would be flattered. Evaluate at {day(int(through))} or later, "
            "or train with --cutoff at the evaluation cutoff"
        )
        raise TrainingDataError(msg)
    return EvaluationPlan(meta, config, cutoff, prior, warnings, summary)


def evaluate_model(
    events: EventSource | Iterable[Event], plan: EvaluationPlan, *, seed: int = 42
) -> tuple[dict[str, Any], dict[str, np.ndarray], Dataset]:
    """The bundle, the RFM logistic regression and BG/NBD on the same rows, with paired intervals.

    ``events``: an :class:`~training.replay.EventLog` (read once more, in chunks) or events in memory.
    """
    config, cutoff = plan.config, plan.cutoff
    for warning in plan.warnings:
        log.warning("%s", warning)
    data = build_dataset(events, [*plan.prior, cutoff], config, summary=plan.summary)
    test, prior = data.at((cutoff,)), data.at(plan.prior)
    if len(test.keys) == 0 or test.churn.min() == test.churn.max() or prior.churn.min() == prior.churn.max():
        msg = (
            f"{len(test.keys)} users at {day(cutoff)} ({test.churn.mean() if len(test.keys) else 0:.0%} churn), "
            f"{len(prior.keys)} earlier rows: both need churners and stayers; try another --cutoff or --horizon-days"
        )
        raise TrainingDataError(msg)
    model = ChurnModel(plan.meta.path, device="cpu").load()
    scores = {
        "model": model.score_many(test.features),
        "rfm_logistic_regression": rfm_logistic_regression_churn(prior, test),
    }
    scores["bgnbd"], bgnbd = bgnbd_churn(test, config.horizon_days)

    def figures(s: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = classification_metrics(test.churn, s)
        for top in (0.1, 0.2):
            for key, value in lift_and_capture(test.churn, s, top).items():
                out[f"{key}_top_{int(top * 100)}"] = value
        out["calibration"] = calibration_table(test.churn, s)
        return out

    report = {
        "model_version": plan.meta.version,
        "model_candidate": plan.meta.extras.get("candidate", "mlp"),
        "test_cutoff": day(cutoff),
        "horizon_days": config.horizon_days,
        "warnings": plan.warnings,
        "rows": {
            "test": len(test.keys),
            "reference_fit": len(prior.keys),
            "reference_cutoffs": [day(c) for c in plan.prior],
            "filters": {
                "max_silence_days": config.max_silence_days,
                "test": data.counts((cutoff,)),
                "reference_fit": data.counts(plan.prior),
            },
        },
        "model": figures(scores["model"]),
        **{name: figures(scores[name]) for name in BASELINES},
        "model_minus_baseline": {
            name: paired_differences(test.churn, scores["model"], scores[name], seed=seed) for name in BASELINES
        },
        "bgnbd_parameters": {"r": bgnbd.r, "alpha": bgnbd.alpha, "a": bgnbd.a, "b": bgnbd.b},
        "feature_importance": _permutation_importance(model, test.features, test.churn, 15, seed),
    }
    return report, {"labels": test.churn, **scores}, test


def write_scores(path: str | Path, test: Dataset, curves: dict[str, np.ndarray]) -> Path:
    """One row per scored user: user_id, churned (1/0), model, and one column per baseline."""
    import pandas as pd

    path = Path(path)
    frame = pd.DataFrame(
        {
            "user_id": [user for user, _ in test.keys],
            "churned": curves["labels"].astype(np.int8),
            "model": curves["model"],
            **{name: curves[name] for name in BASELINES},
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def write_evaluation_report(report: dict[str, Any], curves: dict[str, np.ndarray], out_dir: str | Path) -> list[Path]:
    """``evaluation.json``, ``evaluation.md`` and, with matplotlib, one PNG per plot."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    written = [out / "evaluation.json"]
    names = ("model", *BASELINES)
    rows = [
        "roc_auc",
        "pr_auc",
        "brier",
        "log_loss",
        "ece",
        "lift_top_10",
        "capture_top_10",
        "lift_top_20",
        "capture_top_20",
    ]
    filters = report["rows"]["filters"]
    lines = [
        f"# Evaluation of model {report['model_version']} ({report['model_candidate']})",
        "",
        f"Test rows: {report['rows']['test']} users at {report['test_cutoff']}; label: no purchase within "
        f"{report['horizon_days']} days. Rows of users silent over {filters['max_silence_days']} days left out: "
        f"{filters['test']['removed_silent']}. References on the same rows: an RFM logistic regression fitted on "
        f"{report['rows']['reference_fit']} rows at the earlier cutoffs of this log, and BG/NBD.",
        *(f"\n**Warning:** {w}." for w in report["warnings"]),
        "",
        "| figure | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        *(f"| {r} | " + " | ".join(f"{report[n][r]:.4f}" for n in names) + " |" for r in rows),
        "",
        "## Model minus baseline (paired bootstrap, 95% interval)",
        "",
        "| baseline | ROC-AUC | Brier | log loss |",
        "|---|---|---|---|",
        *(
            f"| {name} | "
            + " | ".join(
                f"{d['difference']:+.4f} ({d['ci95_low']:+.4f} to {d['ci95_high']:+.4f}, {d['verdict']})"
                for d in (report["model_minus_baseline"][name][k] for k in ("roc_auc", "brier", "log_loss"))
            )
            + " |"
            for name in BASELINES
        ),
        "",
        "## Calibration (model)",
        "",
        "| score bin | rows | mean predicted | observed |",
        "|---|---:|---:|---:|",
        *(
            f"| {c['bin']} | {c['rows']} | {c['mean_predicted']:.3f} | {c['observed']:.3f} |"
            for c in report["model"]["calibration"]
        ),
        "",
        "## Feature importance (drop in ROC-AUC when a feature is shuffled)",
        "",
        *(f"- `{f['feature']}`: {f['roc_auc_drop']:.4f}" for f in report["feature_importance"]),
    ]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import precision_recall_curve, roc_curve
    except ImportError:
        lines += ["", "(Install the `report` extra for the plots.)"]
    else:
        labels = curves["labels"]
        plots: dict[str, Any] = {}
        fig, ax = plt.subplots(figsize=(5, 5))
        for name in names:
            fpr, tpr, _ = roc_curve(labels, curves[name])
            ax.plot(fpr, tpr, label=f"{name} ({report[name]['roc_auc']:.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        plots["roc"] = fig
        fig, ax = plt.subplots(figsize=(5, 5))
        for name in names:
            precision, recall, _ = precision_recall_curve(labels, curves[name])
            ax.plot(recall, precision, label=f"{name} ({report[name]['pr_auc']:.3f})")
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
        plots["precision_recall"] = fig
        fig, ax = plt.subplots(figsize=(5, 5))
        for name in names:
            table = report[name]["calibration"]
            ax.plot([c["mean_predicted"] for c in table], [c["observed"] for c in table], "o-", label=name)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="mean predicted churn", ylabel="observed churn", title="Calibration")
        plots["calibration"] = fig
        fig, ax = plt.subplots(figsize=(5, 5))
        shares = np.linspace(0.05, 1.0, 20)
        for name in names:
            ax.plot(shares, [lift_and_capture(labels, curves[name], s)["lift"] for s in shares], label=name)
        ax.axhline(1.0, linestyle=":", color="grey")
        ax.set(xlabel="share of users targeted (by score)", ylabel="lift", title="Lift")
        plots["lift"] = fig
        fig, ax = plt.subplots(figsize=(6, 5))
        importance = report["feature_importance"][::-1]
        ax.barh([f["feature"] for f in importance], [f["roc_auc_drop"] for f in importance])
        ax.set(xlabel="drop in ROC-AUC when shuffled", title="Feature importance")
        plots["feature_importance"] = fig
        lines.append("")
        for name, fig in plots.items():
            if fig.axes[0].get_legend_handles_labels()[0]:
                fig.axes[0].legend()
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
            lines.append(f"![{name}]({name}.png)")
    (out / "evaluation.md").write_text("\n".join(lines) + "\n")
    written.append(out / "evaluation.md")
    return written
