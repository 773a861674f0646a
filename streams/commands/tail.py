"""``retention tail``: follow a topic and print its records readably.

The tool a newcomer lacks when Debian's ``kcat`` cannot talk to the embedded
broker: our schemas are printed one line each (events, scores, decisions,
interventions, dead letters with their reason), anything else as compact JSON or
the raw bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import Any

import orjson

from streams.settings import Settings, add_settings_flags

__all__ = ["format_record", "register"]

#: Short names for the project's topics (the configured names are used).
ALIASES = {
    "events": "events_topic",
    "dlq": "dlq_topic",
    "scores": "scores_topic",
    "decisions": "decisions_topic",
    "coupons": "coupon_topic",
    "recommendations": "recommendation_topic",
    "outcomes": "outcomes_topic",
}


def _event_line(body: dict[str, Any]) -> str:
    from retention_model.policy.policy import iso_ms

    ts = body.get("ts")
    when = iso_ms(ts) if isinstance(ts, int) else str(ts)
    extras = " ".join(
        f"{name}={body[name]}"
        for name in ("item_id", "category", "price", "quantity", "order_id", "rating", "coupon_id", "intervention_id")
        if body.get(name) is not None
    )
    return f"{when} {body.get('user_id')} {body.get('type')} {extras}".rstrip()


def _schema_line(body: dict[str, Any]) -> str:
    schema = str(body.get("schema", ""))
    user = body.get("user_id")
    if schema.startswith("retention.score/"):
        reasons = "; ".join(body.get("reasons", []))
        return (
            f"{body.get('event_time')} score {user} risk={body.get('risk')} tier={body.get('tier')} "
            f"trigger={body.get('trigger', 'event')} model={body.get('model_version')} | {reasons}"
        )
    if schema.startswith("retention.decision/"):
        return (
            f"{body.get('event_time')} decision {user} {body.get('kind')} {body.get('action')} "
            f"rule={body.get('rule')} | {body.get('reason')}"
        )
    if schema.startswith("retention.intervention/"):
        offer = body.get("offer") or body.get("recommendation") or {}
        return (
            f"{body.get('event_time')} {body.get('kind')} {user} tier={body.get('tier')} "
            f"id={body.get('intervention_id')} | {orjson.dumps(offer).decode()[:160]}"
        )
    if schema.startswith("retention.outcome/"):
        what = "churned" if body.get("churned") else f"retained (bought {body.get('purchased_at')})"
        return (
            f"{body.get('resolved_at')} outcome {user} {what} | scored {body.get('scored_at')} "
            f"risk={body.get('risk')} tier={body.get('tier')} model={body.get('model_version')}"
            f"{' holdout' if body.get('holdout') else ''}"
        )
    return orjson.dumps(body).decode()


def format_record(value: bytes | None, headers: dict[str, bytes] | None = None) -> str:
    """One readable line for a record value (schema-aware for this project's topics)."""
    headers = headers or {}
    prefix = ""
    reason = headers.get("retention.dlq.reason")
    if reason is not None:
        detail = headers.get("retention.dlq.detail", b"").decode(errors="replace")
        prefix = f"[dead letter: {reason.decode(errors='replace')}: {detail}] "
    if value is None:
        return prefix + "(tombstone)"
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return prefix + repr(value[:200])
    if isinstance(body, dict):
        if "schema" in body:
            return prefix + _schema_line(body)
        if "type" in body and "user_id" in body and "ts" in body:
            return prefix + _event_line(body)
    return prefix + orjson.dumps(body).decode()[:400]


def cmd_tail(args: argparse.Namespace) -> int:
    """Print records of a topic as they arrive (or from the beginning), until --count or Ctrl-C."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

    from retention_model.errors import RetentionError
    from streams.kafka import client_config
    from streams.preflight import require_broker

    overrides = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
    settings = Settings.load(os.environ, overrides)
    topic = getattr(settings, ALIASES[args.topic]) if args.topic in ALIASES else args.topic
    require_broker(settings, args.broker_wait_s)
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"retention-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    shown = 0
    try:
        metadata = consumer.list_topics(timeout=10).topics.get(topic)  # by name could create it
        if metadata is None or metadata.error is not None or not metadata.partitions:
            msg = f"no topic {topic} on {settings.broker}; `retention topics` creates the project's topics"
            raise RetentionError(msg)
        start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(metadata.partitions)])
        key = args.key.encode() if args.key else None
        idle_since = time.monotonic()
        while args.count is None or shown < args.count:
            if args.idle_s and time.monotonic() - idle_since > args.idle_s:
                break
            for message in consumer.consume(num_messages=500, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                idle_since = time.monotonic()
                if key is not None and message.key() != key:
                    continue
                headers = {name: value or b"" for name, value in (message.headers() or [])}
                record_key = (message.key() or b"").decode(errors="replace")
                line = format_record(message.value(), headers) if not args.raw else repr(message.value())
                print(f"{message.partition()}@{message.offset()} {record_key}: {line}", flush=True)
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    if shown == 0 and args.from_beginning:
        print(f"(no records in {topic})", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add ``retention tail`` to the command's sub-parsers."""
    p = sub.add_parser(
        "tail",
        help="follow a topic and print its records readably",
        description="TOPIC is a topic name, or one of: " + ", ".join(ALIASES) + " (the configured topics).",
    )
    p.add_argument("topic", help="topic name, or events, dlq, scores, decisions, coupons, recommendations")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record, not at new ones")
    p.add_argument("--count", type=int, help="stop after this many records")
    p.add_argument("--key", help="only records with this key (a user id)")
    p.add_argument("--idle-s", type=float, default=0.0, help="stop when nothing arrived for this long (0: never)")
    p.add_argument("--raw", action="store_true", help="print values as bytes, not parsed")
    p.add_argument(
        "--broker-wait-s", type=float, default=10.0, help="how long to wait for the broker before giving up, in s"
    )
    add_settings_flags(p, ("broker", *ALIASES.values()))
    p.set_defaults(func=cmd_tail)
