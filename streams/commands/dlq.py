"""``retention dlq``: dead letters listed by reason, exported, and re-published once fixed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.commands.common import add_broker_wait, load_settings
from streams.settings import add_settings_flags

__all__ = ["register"]


def cmd_dlq(args: argparse.Namespace) -> int:
    """List dead letters by reason, export them, or re-publish fixed ones."""
    from streams.dlq import export_dead_letters, read_dead_letters, republish, summarise
    from streams.preflight import require_broker

    settings = load_settings(args)
    require_broker(settings, args.broker_wait_s)
    if args.action == "republish":
        if not args.file:
            print(
                "retention dlq republish: give --file with the fixed records (from `retention dlq export`)",
                file=sys.stderr,
            )
            return 2
        n = republish(settings, Path(args.file))
        print(f"re-published {n} records to {settings.events_topic}")
        return 0
    letters = [letter for letter in read_dead_letters(settings) if args.reason in (None, letter["reason"])]
    if args.action == "export":
        if not args.file:
            print("retention dlq export: give --file to write to", file=sys.stderr)
            return 2
        n = export_dead_letters(letters, Path(args.file))
        print(f"exported {n} dead letters to {args.file}; fix the value fields, then `retention dlq republish`")
        return 0
    print(summarise(letters))
    return 0


def register(sub: Any) -> None:
    """Add ``retention dlq``."""
    p = sub.add_parser("dlq", help="dead letters: list by reason, export, re-publish fixed ones")
    p.add_argument("action", choices=("list", "export", "republish"))
    p.add_argument("--reason", help="only dead letters with this reason")
    p.add_argument("--file", help="JSONL file to export to, or to re-publish from")
    add_settings_flags(p, ("broker", "dlq_topic", "events_topic"))
    add_broker_wait(p)
    p.set_defaults(func=cmd_dlq)
