"""``retention report model``: PSI by feature from an event log, and the report as Markdown and a plot.

The worker exports ``retention_feature_psi`` over its last event-triggered scores,
but no topic carries the distributions behind it, so the report recomputes PSI
from an event log: the features after each event in the last ``days`` days of the
log, drawn by the same :class:`~training.drift_reference.ReferenceBuilder` that drew
the bundle's training reference, counted into that reference's bins and turned
into PSI by the same :meth:`FeatureReference.psi` the worker calls. One
definition, so a figure here reads against the worker's gauge directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retention_model.errors import BundleError, EventLogError
from retention_model.features.state import DAY_MS
from retention_model.model.bundle import HOW_TO_RETRAIN, check_feature_spec, read_bundle_meta
from retention_model.monitoring.drift import PSI_ALERT, FeatureReference, bundle_reference
from retention_model.policy.policy import iso_ms
from training.drift_reference import REFERENCE_DAYS, ReferenceBuilder
from training.replay import EventSource, chunks_of, summarise

__all__ = ["PSI_SHOWN", "bundle_feature_reference", "log_feature_psi", "model_markdown", "plot_model"]

#: Features listed in the Markdown and drawn in the plot, highest PSI first (the JSON has all).
PSI_SHOWN = 15


def bundle_feature_reference(model_path: str | Path) -> tuple[str, FeatureReference]:
    """The bundle's version and training reference; BundleError (one line) when it has none to compare with."""
    meta = read_bundle_meta(model_path)
    check_feature_spec(meta)  # the log's rows are built by this code: its features must be the bundle's
    try:
        reference = bundle_reference(meta.extras, meta.feature_names)
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"bundle {meta.path}: its feature reference is malformed ({exc}); retrain it: {HOW_TO_RETRAIN}"
        raise BundleError(msg) from exc
    if reference is None:
        msg = (
            f"bundle {meta.path} has no feature reference (trained before drift monitoring), so no PSI: "
            f"retrain it ({HOW_TO_RETRAIN}) or leave out --events"
        )
        raise BundleError(msg)
    return meta.version, reference


def log_feature_psi(
    log: EventSource, label: str, version: str, reference: FeatureReference, *, days: int = REFERENCE_DAYS
) -> dict[str, Any]:
    """PSI per feature of the features after each event in the ``days`` days before the log's last event."""
    summary = summarise(log)
    if not summary.events:
        msg = f"{label} holds no event: PSI by feature needs the events of the period to judge"
        raise EventLogError(msg)
    builder = ReferenceBuilder.for_log(summary.last_ms, summary.events, summary.first_ms, summary.last_ms, days=days)
    for chunk in chunks_of(log):
        builder.feed(chunk)
    rows = builder.rows()
    if rows is None:
        msg = f"{label}: no event in the last {days} days was sampled; give a longer --psi-days"
        raise EventLogError(msg)
    values = reference.psi(reference.bin_counts(rows))
    ranked = sorted(zip(reference.names, values.tolist(), strict=True), key=lambda kv: -kv[1])
    return {
        "computed_from": (
            f"features after each event in the {days} days before the last event of {label} ({len(rows)} rows), "
            f"against bundle {version}'s training reference ({reference.source}), in its bins, "
            "with the function the worker's retention_feature_psi uses"
        ),
        "model_version": version,
        "from": iso_ms(max(summary.first_ms, summary.last_ms - days * DAY_MS)),
        "until": iso_ms(summary.last_ms),
        "rows": len(rows),
        "alert": PSI_ALERT,
        "features": [{"feature": name, "psi": round(value, 6)} for name, value in ranked],
    }


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def model_markdown(report: dict[str, Any], plot: str | None = None) -> str:
    """The report as Markdown: figures per version, lift, gains, calibration, scores over time, PSI, the plot."""
    names = ("n", "roc_auc", "brier", "ece", "top_tier_lift", "churn_rate")
    shadows = set(report.get("shadow_versions") or ())
    versions = [(f"{v} (shadow)" if v in shadows else v, figures) for v, figures in report["by_version"].items()]
    rows = [("all", report["model_live"]), *versions, ("holdout only", report["holdout"])]
    lines = ["| outcomes | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(_cell(figures[n]) for n in names) + " |" for label, figures in rows]
    if not report["model_live"]["n"]:
        lines.append("\nno outcome yet: no sampled score's horizon has closed (see RETENTION_OUTCOME_SAMPLE)")
    lines += ["", "| risk decile | n | churned | lift |", "|---|---|---|---|"]
    lines += [
        f"| {d['decile']} | {d['n']} | {d['churn_rate']:.3f} | {_cell(d['lift'])} |" for d in report["lift_by_decile"]
    ]
    lines += ["", "| riskiest | churners captured (gain) | random |", "|---|---|---|"]
    lines += [
        f"| {_pct(g['top_share'])} | {g['churners']} ({_pct(g['gain'])}) | {_pct(g['random'])} |"
        for g in report["cumulative_gains"]
    ]
    lines += ["", "| risk bin | n | mean risk | churned |", "|---|---|---|---|"]
    lines += [
        f"| {b['risk_from']:.1f}-{b['risk_to']:.1f} | {b['n']} | {b['mean_risk']:.3f} | {b['churn_rate']:.3f} |"
        for b in report["calibration"]
    ]
    over_time = report["score_distribution"]
    lines += [
        "",
        f"Scores per {over_time['period']} of `{over_time['time']}` (UTC):",
        "",
        f"| {over_time['period']} from | n | mean risk | p10 | p50 | p90 | churned |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {b['start']} | {b['n']} | {b['mean_risk']:.3f} | {b['p10']:.3f} | {b['p50']:.3f} | {b['p90']:.3f} "
        f"| {b['churn_rate']:.3f} |"
        for b in over_time["buckets"]
    ]
    lines += ["", *_psi_markdown(report.get("feature_psi"))]
    if plot:
        lines += ["", f"![Calibration, gains, lift, scores over time, PSI by feature]({plot})"]
    return "\n".join(lines)


def _psi_markdown(drift: dict[str, Any] | None) -> list[str]:
    if drift is None:
        return ["PSI by feature: not computed (give --events LOG: the event log of the period to judge)."]
    features = drift["features"]
    above = [f["feature"] for f in features if f["psi"] > drift["alert"]]
    lines = [
        f"PSI by feature: {drift['computed_from']}; {drift['from']} to {drift['until']}. "
        f"{len(above)} of {len(features)} above {drift['alert']} (a shift the model was not trained on).",
        "",
        "| feature | PSI |",
        "|---|---|",
    ]
    lines += [f"| {f['feature']} | {f['psi']:.3f} |" for f in features[:PSI_SHOWN]]
    if len(features) > PSI_SHOWN:
        lines.append(f"\n(the {PSI_SHOWN} highest; all {len(features)} in the JSON's `feature_psi`)")
    return lines


def plot_model(report: dict[str, Any], path: Path) -> None:
    """Calibration with counts, cumulative gains, lift by decile, scores over time and PSI by feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (calibration, gains, lift), (over_time, psi, spare) = axes
    bins = report["calibration"]
    calibration.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    calibration.plot([b["mean_risk"] for b in bins], [b["churn_rate"] for b in bins], marker="o", label="live")
    for b in bins:
        calibration.annotate(
            f"n={b['n']}", (b["mean_risk"], b["churn_rate"]), fontsize=7, xytext=(3, -10), textcoords="offset points"
        )
    calibration.set(
        xlabel="mean risk in bin", ylabel="churned within the horizon", title="Calibration", xlim=(0, 1), ylim=(0, 1)
    )
    calibration.legend()
    points = [g for g in report["cumulative_gains"] if g["gain"] is not None]
    gains.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="random")
    gains.plot([0] + [g["top_share"] for g in points], [0] + [g["gain"] for g in points], marker="o", label="model")
    gains.set(
        xlabel="share scored, riskiest first",
        ylabel="share of churners captured",
        title="Cumulative gains",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    gains.legend()
    deciles = report["lift_by_decile"]
    lift.bar([d["decile"] for d in deciles], [d["lift"] or 0 for d in deciles])
    lift.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    lift.set(xlabel="risk decile (1: highest risk)", ylabel="churn rate / base rate", title="Lift by decile")
    _plot_over_time(over_time, report["score_distribution"])
    _plot_psi(psi, report.get("feature_psi"))
    spare.axis("off")
    live = report["model_live"]
    fig.suptitle(f"Live quality over {live['n']} outcomes (ROC-AUC {live['roc_auc']}, Brier {live['brier']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_over_time(ax: Any, over_time: dict[str, Any]) -> None:
    buckets = over_time["buckets"]
    xs = range(len(buckets))
    ax.fill_between(xs, [b["p10"] for b in buckets], [b["p90"] for b in buckets], alpha=0.2, label="risk p10-p90")
    ax.plot(xs, [b["p50"] for b in buckets], label="risk p50")
    ax.plot(xs, [b["mean_risk"] for b in buckets], linestyle="--", label="mean risk")
    ax.plot(xs, [b["churn_rate"] for b in buckets], marker="o", linestyle="none", label="churned")
    ax.set_xticks(list(xs), [b["start"][5:] for b in buckets], rotation=45, fontsize=7)
    ax.set(xlabel=f"{over_time['period']} of {over_time['time']}", ylim=(0, 1), title="Scores over time")
    ax.legend(fontsize=7)


def _plot_psi(ax: Any, drift: dict[str, Any] | None) -> None:
    if drift is None:
        ax.text(0.5, 0.5, "PSI by feature: give --events LOG", ha="center", va="center")
        ax.set(title="PSI by feature", xticks=[], yticks=[])
        return
    shown = drift["features"][:PSI_SHOWN][::-1]
    ax.barh([f["feature"] for f in shown], [f["psi"] for f in shown])
    ax.axvline(drift["alert"], color="red", linestyle="--", linewidth=1, label=f"alert {drift['alert']}")
    ax.tick_params(axis="y", labelsize=7)
    ax.set(xlabel="PSI against the training reference", title=f"PSI by feature (highest {len(shown)})")
    ax.legend(fontsize=7)
