"""``retention export``: scores or decisions to JSONL, user ids optionally pseudonymised with a key."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streams.commands.common import add_broker_wait, load_settings
from streams.settings import add_settings_flags

__all__ = ["register"]


def cmd_export(args: argparse.Namespace) -> int:
    """Scores or decisions to JSONL, user ids optionally pseudonymised with a key."""
    from streams.export import export_records
    from streams.preflight import require_broker

    settings = load_settings(args)
    if args.pseudonymise and not settings.export_key:
        print(
            "retention export: --pseudonymise needs a key: set RETENTION_EXPORT_KEY or RETENTION_EXPORT_KEY_FILE",
            file=sys.stderr,
        )
        return 2
    require_broker(settings, args.broker_wait_s)
    topic = settings.scores_topic if args.what == "scores" else settings.decisions_topic
    try:
        n = export_records(settings, topic, args.out, pseudonymised=args.pseudonymise)
    except ValueError as exc:
        print(f"retention export: {exc}", file=sys.stderr)
        return 2
    shown = " (user ids pseudonymised)" if args.pseudonymise else ""
    print(f"wrote {n} records from {topic} to {args.out}{shown}")
    return 0


def register(sub: Any) -> None:
    """Add ``retention export``."""
    p = sub.add_parser(
        "export",
        help="scores or decisions to JSONL; --pseudonymise replaces user ids by HMAC-SHA256 with "
        "RETENTION_EXPORT_KEY (stable per key, not reversible without it)",
    )
    p.add_argument("what", choices=("scores", "decisions"))
    p.add_argument("--out", required=True, help="the JSONL file to write")
    p.add_argument(
        "--pseudonymise", action="store_true", help="replace user ids by HMAC-SHA256 with RETENTION_EXPORT_KEY"
    )
    add_settings_flags(p, ("broker", "scores_topic", "decisions_topic"))
    add_broker_wait(p)
    p.set_defaults(func=cmd_export)
