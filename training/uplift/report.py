"""``retention evaluate policy``'s report on disk: ``policy.json``, ``policy.md`` and the Qini plot.

The plot draws the curves :func:`~training.uplift.evaluation.evaluate_policy` put in
the report (the Qini curve of ``retention report effect``, one per ranking), so
the picture and the JSON cannot disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["QINI_PLOT", "write_policy_report"]

#: File name of the Qini plot inside ``--out``.
QINI_PLOT = "policy-qini.png"

_RULES = (
    ("random", "random"),
    ("top_risk", "top risk (the churn model)"),
    ("uplift", "uplift (as shipped in bundles)"),
    ("oracle", "oracle (knows the truth)"),
)
#: Hillstrom outcomes the report lists.
_OUTCOMES = ("visit", "conversion")


def write_policy_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``policy.json``, ``policy.md`` and, with matplotlib, the Qini plot the Markdown shows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "policy.json"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    setup = report["setup"]
    lines = [
        "# Targeting policy on simulated ground truth",
        "",
        f"{setup['coupons']} coupons ({setup['budget_share']:.0%} of {setup['eligible_users']} eligible users) "
        f"by each rule; the simulator knows both outcomes of every user. Churn model {setup['churn_model']}.",
        "",
        "| targeting | incremental retained users per 1,000 coupons |",
        "|---|---:|",
        *(f"| {label} | {report[key]} |" for key, label in _RULES),
        "",
        "Qini coefficient (mean gap between the Qini curve and random targeting, as a share of users) "
        "and uplift in the top 30%:",
        "",
        "| ranking | simulation | Hillstrom visit | Hillstrom conversion |",
        "|---|---|---|---|",
    ]
    hillstrom = report["hillstrom"]
    for name, figures in report["simulation_qini"].items():
        cells = [_qini_cell(figures)]
        cells += [_qini_cell(hillstrom[outcome].get(name)) if outcome in hillstrom else "n/a" for outcome in _OUTCOMES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "skipped" in hillstrom:
        lines += ["", f"Hillstrom: {hillstrom['skipped']}."]
    if _plot_qini(report, out / QINI_PLOT):
        written.append(out / QINI_PLOT)
        lines += [
            "",
            "Qini curves (`simulation_qini_curves` and `hillstrom.qini_curves` in the JSON): incremental "
            "retained users when targeting the top share of each ranking, beside random targeting.",
            "",
            f"![Qini curves of the uplift approaches and top risk vs random]({QINI_PLOT})",
        ]
    else:
        lines += ["", "(Install the `report` extra for the Qini plot.)"]
    markdown = out / "policy.md"
    markdown.write_text("\n".join(lines) + "\n")
    written.append(markdown)
    return written


def _qini_cell(figures: dict[str, float] | None) -> str:
    if not figures:
        return "n/a"
    return f"{figures['qini_coefficient']:.4f}, {100 * figures['uplift_at_30']:.1f} pts"


def _plot_qini(report: dict[str, Any], path: Path) -> bool:
    """The simulation's curves, and Hillstrom's visits' beside them when it ran; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [("Simulated campaign", "incremental retained users", report["simulation_qini_curves"])]
    hillstrom = report["hillstrom"].get("qini_curves", {}).get("visit")
    if hillstrom:
        panels.append(("Hillstrom e-mail (test split)", "incremental visits", hillstrom))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, ylabel, curves) in zip(axes[0], panels, strict=True):
        for name, curve in curves.items():
            points = [p for p in curve if p["incremental_retained"] is not None]
            ax.plot([0] + [p["share"] for p in points], [0] + [p["incremental_retained"] for p in points], label=name)
        last = next(iter(curves.values()))[-1]
        if last["random"] is not None:
            ax.plot([0, 1], [0, last["random"]], color="grey", linestyle="--", linewidth=1, label="random")
        ax.set(xlabel="share of users targeted, highest score first", ylabel=ylabel, title=title, xlim=(0, 1))
        ax.legend(fontsize=7)
    fig.suptitle("Qini curves: uplift approaches and top risk vs random targeting")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
