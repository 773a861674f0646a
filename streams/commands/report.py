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
    return 0


def _model_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables: figures per version (and the holdout), then calibration by risk bin."""
    names = ("n", "roc_auc", "brier", "ece", "top_tier_lift", "churn_rate")
    rows = [("all", report["model_live"]), *report["by_version"].items(), ("holdout only", report["holdout"])]
    lines = ["| outcomes | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(_cell(figures[n]) for n in names) + " |" for label, figures in rows]
    if not report["model_live"]["n"]:
        lines.append("\nno outcome yet: no sampled score's horizon has closed (see RETENTION_OUTCOME_SAMPLE)")
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
        "top-tier lift, per model version and for the holdout, calibration by risk bin",
    )
    p.add_argument("--outcomes", help="JSONL of retention.outcomes records (default: read the topic)")
    p.add_argument("--window-days", type=float, help="only outcomes resolved this many days before the latest")
    p.add_argument("--json", help="also write the figures as JSON here")
    add_settings_flags(p, ("broker", "outcomes_topic"))
    add_broker_wait(p)
    p.set_defaults(func=cmd_report_model)
