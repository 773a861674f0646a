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
