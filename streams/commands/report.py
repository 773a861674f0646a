"""``retention report ...``: reports on what the worker did."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.commands.common import add_broker_wait, load_settings
from streams.settings import add_settings_flags

__all__ = ["register"]


def cmd_report_effect(args: argparse.Namespace) -> int:
    """Treated vs holdout retention, uplift with its interval, redemption and click-through."""
    import json

    import orjson

    from retention_model.events import Event, decode_event
    from training.effect import effect_report, write_effect_report
    from training.eventlog import read_event_log

    if args.from_kafka:
        from streams.kafka import read_topic_values
        from streams.preflight import require_broker

        settings = load_settings(args)
        require_broker(settings, args.broker_wait_s)
        decisions = [orjson.loads(v) for v in read_topic_values(settings, settings.decisions_topic)]
        events = [
            e for e in map(decode_event, read_topic_values(settings, settings.events_topic)) if isinstance(e, Event)
        ]
    else:
        if not (args.decisions and args.events):
            print("retention report effect: give --decisions and --events files, or --from-kafka", file=sys.stderr)
            return 2
        decisions = [orjson.loads(line) for line in Path(args.decisions).read_bytes().splitlines() if line.strip()]
        events = read_event_log(args.events)
    report = effect_report(decisions, events, horizon_days=args.horizon_days)
    written = write_effect_report(report, args.out)
    for note in report["notes"]:
        print(f"note: {note}")
    if "overall" in report["groups"]:
        print(json.dumps(report["groups"]["overall"], indent=2))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_report_model(args: argparse.Namespace) -> int:
    """Live model quality from the outcomes topic (or a file of its records): figures, per version, calibration."""
    import json

    import orjson

    from retention_model.monitoring.quality import quality_report

    if args.outcomes:
        values: Any = Path(args.outcomes).read_bytes().splitlines()
    else:
        from streams.kafka import read_topic_values
        from streams.preflight import require_broker

        settings = load_settings(args)
        require_broker(settings, args.broker_wait_s)
        values = read_topic_values(settings, settings.outcomes_topic)
    outcomes = [orjson.loads(v) for v in values if v.strip()]
    report = quality_report(outcomes, window_days=args.window_days)
    print(_model_markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot and report["model_live"]["n"]:
        _plot_model(report, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


def _plot_model(report: dict[str, Any], path: Path) -> None:
    """Calibration (observed vs mean risk per bin, with its count) and lift by risk decile, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (calibration, lift) = plt.subplots(1, 2, figsize=(11, 4.5))
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
    deciles = report["lift_by_decile"]
    lift.bar([d["decile"] for d in deciles], [d["lift"] or 0 for d in deciles])
    lift.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    lift.set(xlabel="risk decile (1: highest risk)", ylabel="churn rate / base rate", title="Lift by decile")
    live = report["model_live"]
    fig.suptitle(f"Live quality over {live['n']} outcomes (ROC-AUC {live['roc_auc']}, Brier {live['brier']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _model_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables: figures per version (and the holdout), then calibration by risk bin."""
    names = ("n", "roc_auc", "brier", "ece", "top_tier_lift", "churn_rate")
    rows = [("all", report["model_live"]), *report["by_version"].items(), ("holdout only", report["holdout"])]
    lines = ["| outcomes | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(_cell(figures[n]) for n in names) + " |" for label, figures in rows]
    if not report["model_live"]["n"]:
        lines.append("\nno outcome yet: no sampled score's horizon has closed (see RETENTION_OUTCOME_SAMPLE)")
    lines += ["", "| risk decile | n | churned | lift |", "|---|---|---|---|"]
    lines += [
        f"| {d['decile']} | {d['n']} | {d['churn_rate']:.3f} | {_cell(d['lift'])} |" for d in report["lift_by_decile"]
    ]
    lines += ["", "| risk bin | n | mean risk | churned |", "|---|---|---|---|"]
    lines += [
        f"| {b['risk_from']:.1f}-{b['risk_to']:.1f} | {b['n']} | {b['mean_risk']:.3f} | {b['churn_rate']:.3f} |"
        for b in report["calibration"]
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def register(sub: Any) -> None:
    """Add ``retention report`` and its reports."""
    p = sub.add_parser("report", help="reports on what the worker did")
    report = p.add_subparsers(dest="report", required=True)
    p = report.add_parser(
        "effect",
        help="treated vs holdout retention, uplift with its 95%% interval, redemption, click-through, "
        "cost per retained user (from files or --from-kafka)",
    )
    p.add_argument("--decisions", help="JSONL of retention.decisions records")
    p.add_argument("--events", help="event log (.jsonl, .parquet, .csv)")
    p.add_argument("--from-kafka", action="store_true", help="read the decisions and events topics instead")
    p.add_argument("--horizon-days", type=int, default=30)
    p.add_argument("--out", default="effect-report", help="folder for effect.md, effect.json, effect.png")
    add_settings_flags(p, ("broker", "events_topic", "decisions_topic"))
    add_broker_wait(p)
    p.set_defaults(func=cmd_report_effect)
    p = report.add_parser(
        "model",
        help="live model quality from the outcomes topic (or --outcomes FILE): ROC-AUC, Brier, calibration, "
        "top-tier lift, per model version and for the holdout, calibration by risk bin, lift by decile",
    )
    p.add_argument("--outcomes", help="JSONL of retention.outcomes records (default: read the topic)")
    p.add_argument("--window-days", type=float, help="only outcomes resolved this many days before the latest")
    p.add_argument("--json", help="also write the figures as JSON here")
    p.add_argument("--plot", help="also write a PNG here: calibration with counts per bin, lift by risk decile")
    add_settings_flags(p, ("broker", "outcomes_topic"))
    add_broker_wait(p)
    p.set_defaults(func=cmd_report_model)
