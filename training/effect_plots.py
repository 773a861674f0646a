"""The effect report's plots: retention by tier, retention by day, and the Qini curve (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_curve", "plot_qini", "plot_tiers"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt: Any, fig: Any, ax: Any, title: str, path: Path) -> Path:
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_tiers(report: dict[str, Any], path: Path) -> Path:
    """Treated and holdout retention per risk tier, side by side."""
    plt = _pyplot()
    tiers = list(report["groups"])
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(tiers))
    treated = [report["groups"][t]["treated_retention"] or 0 for t in tiers]
    control = [report["groups"][t]["holdout_retention"] or 0 for t in tiers]
    ax.bar([x - 0.2 for x in xs], treated, 0.4, label="treated")
    ax.bar([x + 0.2 for x in xs], control, 0.4, label="holdout")
    ax.set_xticks(list(xs), tiers)
    ax.set_ylabel(f"retained within {report['horizon_days']} days")
    return _finish(plt, fig, ax, "Retention: treated vs holdout", path)


def plot_curve(curve: list[dict[str, Any]], path: Path) -> Path:
    """Treated and holdout retention by day, each with its 95% band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for group in ("treated", "holdout"):
        points = [p for p in curve if p[f"{group}_retention"] is not None]
        days = [p["day"] for p in points]
        ax.plot(days, [p[f"{group}_retention"] for p in points], label=group)
        ax.fill_between(
            days, [p[f"{group}_ci95"][0] for p in points], [p[f"{group}_ci95"][1] for p in points], alpha=0.2
        )
    ax.set_xlabel("days after the decision")
    ax.set_ylabel("retained (purchased) by then")
    return _finish(plt, fig, ax, "Retention by day: treated vs holdout (95% bands)", path)


def plot_qini(qini: list[dict[str, Any]], path: Path) -> Path:
    """Incremental retained users when targeting the riskiest share first, beside random targeting."""
    plt = _pyplot()
    points = [p for p in qini if p["incremental_retained"] is not None]
    shares = [0.0, *(p["share"] for p in points)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(shares, [0.0, *(p["incremental_retained"] for p in points)], marker="o", label="riskiest first")
    ax.plot(shares, [0.0, *(p["random"] for p in points)], linestyle="--", color="grey", label="random")
    ax.set_xlabel("share of counted users targeted, riskiest first")
    ax.set_ylabel("incremental retained users")
    return _finish(plt, fig, ax, "Qini curve: what targeting by risk adds over random", path)
