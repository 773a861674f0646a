"""``retention report ...``: reports on what the worker did."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.commands.common import add_broker_wait, add_skip_invalid, load_settings, report_skipped
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
    """Live model quality from the outcomes topic (or a file of its records); PSI by feature from an event log."""
    import json

    import orjson

    from retention_model.monitoring.quality import quality_report
    from training.model_report import bundle_feature_reference, log_feature_psi, model_markdown, plot_model

    # The bundle is checked first: a refusal comes before any reading.
    reference = bundle_feature_reference(load_settings(args).model_path) if args.events else None
    if args.outcomes:
        values: Any = Path(args.outcomes).read_bytes().splitlines()
    else:
        from streams.kafka import read_topic_values
        from streams.preflight import require_broker

        settings = load_settings(args)
        require_broker(settings, args.broker_wait_s)
        values = read_topic_values(settings, settings.outcomes_topic)
    outcomes = [orjson.loads(v) for v in values if v.strip()]
    report = quality_report(outcomes, window_days=args.window_days, period=args.period)
    report["feature_psi"] = None
    if reference is not None:
        from training.drift_reference import REFERENCE_DAYS
        from training.replay import EventLog

        log = EventLog(args.events, skip_invalid=args.skip_invalid)
        days = args.psi_days or REFERENCE_DAYS
        report["feature_psi"] = log_feature_psi(log, args.events, *reference, days=days)
        report_skipped(args.events, log.skipped)
    plot = Path(args.plot) if args.plot and report["model_live"]["n"] else None
    link = None if plot is None else _relative(plot, Path(args.md).parent) if args.md else args.plot
    markdown = model_markdown(report, link)
    print(markdown)
    written = []
    if args.md:
        Path(args.md).write_text(markdown + "\n")
        written.append(args.md)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        written.append(args.json)
    if plot:
        plot_model(report, plot)
        written.append(args.plot)
    if written:
        print("wrote " + ", ".join(written))
    return 0


def _relative(path: Path, start: Path) -> str:
    """``path`` as a Markdown file in ``start`` links to it."""
    import os

    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def _days(text: str) -> int:
    """A whole number of days, at least 1; argparse prints the refusal as one usage line."""
    if not text.strip().isdigit() or int(text) < 1:
        msg = f"expected a whole number of days >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


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
        help="live model quality from the outcomes topic (or --outcomes FILE), per version and for the holdout: "
        "ROC-AUC, Brier, calibration, lift, cumulative gains, scores over time; PSI by feature with --events",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--outcomes", help="JSONL of retention.outcomes records (default: read the topic)")
    source.add_argument("--from-kafka", action="store_true", help="read the outcomes topic (the default)")
    p.add_argument("--window-days", type=float, help="only outcomes resolved this many days before the latest")
    p.add_argument(
        "--period",
        choices=("auto", "day", "week"),
        default="auto",
        help="scores over time per day or week of scored_at (auto: per day over spans up to 14 days)",
    )
    p.add_argument(
        "--events",
        help="event log (.jsonl, .parquet, .csv) for PSI by feature: the features after each event in its last "
        "--psi-days days against the training reference of the bundle (--model-path), in the reference's bins, "
        "with the function the worker's retention_feature_psi uses (no topic carries the live distributions)",
    )
    p.add_argument(
        "--psi-days",
        type=_days,
        help="days before the log's last event PSI covers (default: the span the reference was drawn from, 30)",
    )
    add_skip_invalid(p)
    p.add_argument("--json", help="also write the figures as JSON here")
    p.add_argument("--md", help="also write the Markdown here (it links the --plot PNG)")
    p.add_argument(
        "--plot",
        help="also write a PNG here: calibration with counts per bin, cumulative gains, lift by risk decile, "
        "scores over time, PSI by feature",
    )
    add_settings_flags(p, ("broker", "outcomes_topic", "model_path"))
    add_broker_wait(p)
    p.set_defaults(func=cmd_report_model)
