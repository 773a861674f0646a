"""What several ``retention`` commands share: settings from flags, logging, common flags, report printing."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streams.settings import Settings

__all__ = [
    "add_broker_wait",
    "add_fit_flags",
    "add_skip_invalid",
    "load_settings",
    "print_report",
    "report_skipped",
    "setup_logging",
    "silence_days",
]


def load_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, overridden by the flags given on the command line."""
    overrides = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
    return Settings.load(os.environ, overrides)


def setup_logging(level: str) -> None:
    """Log to stderr, so stdout keeps only what a command prints for a person or a pipe."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def add_broker_wait(p: argparse.ArgumentParser, default: float = 10.0) -> None:
    """How long a tool waits for the broker before it gives up with one line (exit 3)."""
    p.add_argument(
        "--broker-wait-s",
        type=float,
        default=default,
        help=f"how long to wait for the broker before giving up, in s (default {default:g})",
    )


def add_skip_invalid(p: argparse.ArgumentParser) -> None:
    """``--skip-invalid``: a real log with a few bad rows can still be used, its losses reported."""
    p.add_argument(
        "--skip-invalid", action="store_true", help="count and report rows that break the schema instead of stopping"
    )


def add_fit_flags(p: argparse.ArgumentParser) -> None:
    """Label horizon, epochs and seed: the same for training and for the sequence comparison."""
    p.add_argument("--horizon-days", type=int, default=30)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=42)


def silence_days(text: str) -> int | None:
    """``--max-silence-days``: a number of days, or ``none`` to keep every row."""
    if text.lower() == "none":
        return None
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        msg = f"--max-silence-days must be a whole number of days >= 1 or 'none'; got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return days


def report_skipped(path: str, skipped: Mapping[str, int]) -> None:
    """One stderr line for the rows ``--skip-invalid`` left out of a log, by reason (nothing when none)."""
    if skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in Counter(skipped).most_common())
        print(f"skipped {sum(skipped.values())} invalid rows of {path} ({reasons})", file=sys.stderr)


def print_report(report: dict[str, Any], json_path: str | None) -> None:
    """Print a JSON report, and write it to ``json_path`` too when one is given."""
    import json

    text = json.dumps(report, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n")
    print(text)
