"""``retention worker``: the flags, then the start-up in :mod:`streams.startup`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from streams.commands.common import load_settings, setup_logging
from streams.settings import add_settings_flags

__all__ = ["register"]


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the Faust worker."""
    from streams.startup import run_worker

    settings = load_settings(args)
    setup_logging(settings.log_level)
    explicit = "RETENTION_SESSION_TIMEOUT_S" in os.environ or getattr(args, "session_timeout_s", None) is not None
    return run_worker(settings, broker_wait_s=args.broker_wait_s, session_timeout_set=explicit)


def register(sub: Any) -> None:
    """Add ``retention worker``."""
    p = sub.add_parser(
        "worker",
        help="the stream worker; exits 2 on a bad setting, a busy port or an unusable model bundle, "
        "3 when no broker answers within --broker-wait-s (60)",
    )
    add_settings_flags(p)
    p.add_argument("--broker-wait-s", type=float, default=60.0, help="how long to wait for the broker at start")
    p.set_defaults(func=cmd_worker)
