"""``retention broker`` and ``retention topics``: a broker to develop against, and the topics the worker uses."""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

from streams.commands.common import add_broker_wait, load_settings
from streams.settings import add_settings_flags

__all__ = ["register"]


def cmd_broker(args: argparse.Namespace) -> int:
    """Run the embedded broker in the foreground until Ctrl-C or SIGTERM."""
    from streams.kafka import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port, host=args.host).start()
    print(
        f"embedded Kafka-protocol broker (Tansu) listening on {broker.bootstrap}, in memory; Ctrl-C stops it\n"
        "In another terminal:\n"
        f"  export RETENTION_BROKER={broker.bootstrap}\n"
        "  retention worker          # recognises the embedded broker and sets itself up for it\n"
        "  retention simulate --users 400 --days 90 --rate 2000 --live\n"
        "  retention tail scores     # or: decisions, coupons, recommendations, dlq, events",
        flush=True,
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping and broker.process is not None and broker.process.poll() is None:
            time.sleep(0.2)
    finally:
        broker.stop()
    print("broker stopped", flush=True)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    """Create the topics the worker uses (existing ones are kept)."""
    from streams.kafka import ensure_topics
    from streams.preflight import check_events_topic, require_broker

    settings = load_settings(args)
    require_broker(settings, args.broker_wait_s)
    check_events_topic(settings)
    created = ensure_topics(settings)
    print(f"created: {', '.join(created) if created else 'nothing (all topics exist)'}")
    return 0


def register(sub: Any) -> None:
    """Add ``retention broker`` and ``retention topics``."""
    p = sub.add_parser(
        "broker", help="the embedded Kafka-protocol broker (Tansu) on 127.0.0.1, in memory, until Ctrl-C or SIGTERM"
    )
    p.add_argument("--port", type=int, default=9092)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "topics", help="create the topics the worker uses (existing ones are kept; a mismatched one refused)"
    )
    add_settings_flags(
        p,
        (
            "broker",
            "app_id",
            "events_topic",
            "dlq_topic",
            "scores_topic",
            "coupon_topic",
            "recommendation_topic",
            "partitions",
        ),
    )
    add_broker_wait(p)
    p.set_defaults(func=cmd_topics)
