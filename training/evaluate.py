"""``retention evaluate model``: how good is a bundle on an event log it has not seen?

Builds labelled rows with the shared feature code at the log's last cutoff that
still has a full horizon after it, scores them with the bundle (the serving code
path), fits a logistic-regression reference on the earlier cutoffs, and reports
every figure a reviewer asks for: ROC-AUC, PR-AUC, Brier, log loss, expected
calibration error, lift and capture in the top 10% and 20%, a calibration table,
and permutation feature importance. Writes ``evaluation.json``, ``evaluation.md``
and, with matplotlib, PNG plots.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from retention_model.events import Event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.model.bundle import normalise
from retention_model.model.scorer import ChurnModel
from training.train import TrainConfig, build_dataset, choose_cutoffs, classification_metrics

__all__ = ["evaluate_model", "lift_and_capture", "write_evaluation_report"]

log = logging.getLogger(__name__)

PLOTS = ("roc", "precision_recall", "calibration", "lift", "feature_importance")


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


def evaluate_model(
    events: list[Event], model_path: str | Path, config: TrainConfig | None = None, *, seed: int = 42
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Figures of the bundle and of a logistic-regression reference on the same test rows."""
    from sklearn.linear_model import LogisticRegression

    config = config or TrainConfig()
    model = ChurnModel(model_path, device="cpu").load()
    meta = model.meta_
    assert meta is not None
    first_ms = min(e.ts_ms for e in events)
    last_ms = max(e.ts_ms for e in events)
    cutoffs = choose_cutoffs(first_ms, last_ms, config)
    if len(cutoffs) < 2:
        msg = f"the log spans {(last_ms - first_ms) / 86_400_000:.0f} days: too short for a test cutoff"
        raise ValueError(msg)
    data = build_dataset(events, cutoffs, config)
    test_cutoff = cutoffs[-1]
    earlier = data.take(data.cutoffs <= test_cutoff - config.horizon_days * 86_400_000)
    test = data.take(data.cutoffs == test_cutoff)
    if len(earlier.keys) == 0 or len(np.unique(test.churn)) < 2:
        msg = "the log has no earlier rows to fit the reference on, or the test rows are all one class"
        raise ValueError(msg)
    mean, std = np.asarray(meta.mean), np.asarray(meta.std)
    scores = model.score_many(test.features)
    reference = LogisticRegression(max_iter=2000).fit(normalise(earlier.features, mean, std), earlier.churn)
    reference_scores = reference.predict_proba(normalise(test.features, mean, std))[:, 1]

    def figures(s: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = classification_metrics(test.churn, s)
        for top in (0.1, 0.2):
            for key, value in lift_and_capture(test.churn, s, top).items():
                out[f"{key}_top_{int(top * 100)}"] = value
        out["calibration"] = calibration_table(test.churn, s)
        return out

    report = {
        "model_version": meta.version,
        "test_cutoff": np.datetime64(test_cutoff, "ms").astype(str) + "Z",
        "horizon_days": config.horizon_days,
        "rows": {"test": len(test.keys), "reference_fit": len(earlier.keys)},
        "model": figures(scores),
        "logistic_regression": figures(reference_scores),
        "feature_importance": _permutation_importance(model, test.features, test.churn, 15, seed),
    }
    return report, {"labels": test.churn, "model": scores, "logistic_regression": reference_scores}


def write_evaluation_report(report: dict[str, Any], curves: dict[str, np.ndarray], out_dir: str | Path) -> list[Path]:
    """``evaluation.json``, ``evaluation.md`` and, with matplotlib, one PNG per plot."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    written = [out / "evaluation.json"]
    names = ("model", "logistic_regression")
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
    lines = [
        f"# Evaluation of model {report['model_version']}",
        "",
        f"Test rows: {report['rows']['test']} users at {report['test_cutoff']}; label: no purchase within "
        f"{report['horizon_days']} days. Reference: logistic regression fitted on earlier cutoffs of the same log.",
        "",
        "| figure | model | logistic regression |",
        "|---|---:|---:|",
        *(f"| {r} | {report['model'][r]:.4f} | {report['logistic_regression'][r]:.4f} |" for r in rows),
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
