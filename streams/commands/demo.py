"""``retention demo``: broker, topics, worker and simulated traffic in one process tree."""

from __future__ import annotations

import argparse
from typing import Any

from streams.commands.common import load_settings
from streams.settings import add_settings_flags

__all__ = ["register"]


def cmd_demo(args: argparse.Namespace) -> int:
    """Broker, topics, worker and simulated traffic in one process tree."""
    from streams.demo import run_demo

    settings = load_settings(args)
    return run_demo(settings, seconds=args.seconds, rate=args.rate, summary_json=args.summary_json, broker=args.broker)


def register(sub: Any) -> None:
    """Add ``retention demo``."""
    p = sub.add_parser(
        "demo",
        help="embedded broker, topics, a worker and simulated traffic with a progress line and a summary; "
        "Ctrl-C stops everything (RETENTION_BROKER: use that cluster instead)",
    )
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=2000.0, help="simulated events per second")
    p.add_argument("--summary-json", help="also write the summary to this file")
    add_settings_flags(p)
    p.set_defaults(func=cmd_demo)
