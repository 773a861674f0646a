"""``retention forget USER_ID...``: ask the workers to erase users, and optionally wait for their confirmations.

The request goes to the events topic, keyed by the user like their events, so it
reaches the worker that owns the user in order with everything the user sent
(see :mod:`retention_model.pipeline.erase`). That worker deletes the user's state,
timers and policy memory, writes changelog tombstones and publishes a
confirmation to the erasures topic (``RETENTION_ERASURES_TOPIC``).
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import orjson

from retention_model.pipeline.erase import erase_request
from streams.commands.common import add_broker_wait, load_settings
from streams.settings import Settings, add_settings_flags

__all__ = ["register", "wait_for_confirmations"]


def wait_for_confirmations(settings: Settings, request_ids: set[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Read the erasures topic until every request id is confirmed or ``timeout_s`` passes: id -> confirmation."""
    from streams.kafka import client_config, read_topic

    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for message in read_topic(client_config(settings), settings.erasures_topic, idle_s=1.0):
            confirmation = orjson.loads(message.value() or b"{}")
            if confirmation.get("request_id") in request_ids:
                found[confirmation["request_id"]] = confirmation
        if set(found) >= request_ids or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


def cmd_forget(args: argparse.Namespace) -> int:
    """Publish one erasure request per user; with ``--wait-s``, print each confirmation."""
    from streams.preflight import require_broker
    from streams.producer import produce_records

    settings = load_settings(args)
    require_broker(settings, args.broker_wait_s)
    now_ms = int(time.time() * 1000)
    prefix = args.request_id or f"forget-{uuid.uuid4().hex[:12]}"
    requests = {user: prefix if len(args.user_ids) == 1 else f"{prefix}-{n}" for n, user in enumerate(args.user_ids)}
    records = [
        (user.encode(), erase_request(user, request_id=request_id, requested_ms=now_ms), "valid")
        for user, request_id in requests.items()
    ]
    produce_records(settings, records)
    for user, request_id in requests.items():
        print(f"erasure requested: user {user}, request {request_id} (on {settings.events_topic})")
    if args.wait_s <= 0:
        print(f"confirmations will appear on {settings.erasures_topic}")
        return 0
    found = wait_for_confirmations(settings, set(requests.values()), args.wait_s)
    for user, request_id in requests.items():
        confirmation = found.get(request_id)
        if confirmation is None:
            print(f"not confirmed within {args.wait_s:g} s: user {user}, request {request_id}")
            continue
        removed = confirmation["removed"]
        print(
            f"erased: user {user}, request {request_id}: {removed['state_bytes']} bytes of state and"
            f" {removed['silence_timer_entries']} silence-timer entries removed"
        )
    return 0 if len(found) == len(requests) else 1


def register(sub: Any) -> None:
    """Add ``retention forget``."""
    p = sub.add_parser(
        "forget",
        help="erase users: state, timers and policy memory, with changelog tombstones and a confirmation",
        description="Publishes an erasure request per user to the events topic; the worker that owns the user "
        "erases it and confirms on RETENTION_ERASURES_TOPIC. Events of the user after the request start a new, "
        "empty history. Output topics (scores, decisions, interventions, dead letters) keep their records until "
        "their retention.ms passes.",
    )
    p.add_argument("user_ids", nargs="+", metavar="USER_ID", help="the users to erase")
    p.add_argument("--request-id", default="", help="your id for the request, echoed in the confirmation")
    p.add_argument(
        "--wait-s", type=float, default=0.0, help="wait this long for the confirmations (exit 1 if any is missing)"
    )
    add_settings_flags(p, ("broker", "events_topic", "erasures_topic"))
    add_broker_wait(p)
    p.set_defaults(func=cmd_forget)
