"""``retention simulate``: seeded simulated behaviour to a file, or produced to the broker."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.commands.common import add_broker_wait, load_settings
from streams.settings import add_settings_flags

if TYPE_CHECKING:
    from retention_model.events import Event

__all__ = ["register", "stamped_now"]


def stamped_now(events: Iterator[Event]) -> Iterator[Event]:
    """The same events in the same order, each stamped with the wall clock as it is produced.

    Event time then passes as fast as it would live: a replay of months at thousands of
    events per second otherwise makes every silence timer of those months fall due
    within seconds.
    """
    import msgspec

    for event in events:
        yield msgspec.structs.replace(event, ts_ms=int(time.time() * 1000))


def cmd_simulate(args: argparse.Namespace) -> int:
    """Generate simulated behaviour to a file, or produce it to Kafka."""
    from training.simulator import SimConfig, encode_stream, simulate

    if args.live and args.out:
        print("retention simulate: --live stamps events as they are produced; drop --out", file=sys.stderr)
        return 2
    if args.respond and (args.out or args.live):
        msg = (
            "retention simulate: --respond answers the worker's interventions on the broker, on the simulated "
            "clock (users come back days later in event time); drop --out and --live"
        )
        print(msg, file=sys.stderr)
        return 2
    config = SimConfig(users=args.users, days=args.days, seed=args.seed)
    if args.treatment_log:
        from training.simulator import simulate_users
        from training.uplift import CampaignConfig, campaign_from_simulation, write_treatment_log

        per_user, truth = simulate_users(config)
        campaign = campaign_from_simulation(
            per_user, truth, config, CampaignConfig(decision_day=min(120, args.days * 2 // 3), seed=args.seed)
        )
        n = write_treatment_log(campaign, args.treatment_log)
        print(f"wrote {n} randomised treatment records to {args.treatment_log}")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix == ".parquet":
        import pandas as pd

        if args.malformed_rate or args.unknown_rate:
            msg = "retention simulate: Parquet holds valid events only; drop --malformed-rate/--unknown-rate"
            print(msg, file=sys.stderr)
            return 2
        rows = [_event_row(event) for event in simulate(config)]
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(out, index=False)
        print(f"wrote {len(rows)} events to {out}")
        return 0
    if args.respond:
        return _simulate_responding(args, config)
    events = simulate(config)
    if args.rate > 0 and out is None:
        # Simulate everything first: generating while producing made the offered rate
        # bursty (the producer fell behind, then caught up), adding ~20 ms to the p99 of
        # record age at a consumer, before any worker was involved.
        events = iter(list(events))
    if args.live:
        events = stamped_now(events)
    records = encode_stream(events, seed=args.seed, malformed_rate=args.malformed_rate, unknown_rate=args.unknown_rate)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with out.open("wb") as handle:
            for _, value, _ in records:
                handle.write(value + b"\n")
                n += 1
        print(f"wrote {n} records to {out}")
        return 0
    from streams.kafka import ensure_topics
    from streams.preflight import check_events_topic, require_broker
    from streams.producer import produce_records

    settings = load_settings(args)
    require_broker(settings, args.broker_wait_s)
    check_events_topic(settings)
    created = ensure_topics(settings)  # with the worker's partition count, before any record goes out
    if created:
        print(f"created topics ({settings.partitions} partitions): {', '.join(created)}")
    counts = produce_records(settings, records, rate=args.rate)
    print(f"produced {sum(counts.values())} records to {settings.events_topic}: {dict(counts)}")
    return 0


def _simulate_responding(args: argparse.Namespace, config: Any) -> int:
    """Produce the simulation while its users answer the worker's interventions (the closed loop)."""
    from streams.kafka import ensure_topics
    from streams.preflight import check_events_topic, require_broker
    from streams.producer import produce_records
    from streams.responder import ClosedLoop, effect_rows
    from training.simulator import simulate_users

    settings = load_settings(args)
    require_broker(settings, args.broker_wait_s)
    check_events_topic(settings)
    created = ensure_topics(settings)
    if created:
        print(f"created topics ({settings.partitions} partitions): {', '.join(created)}")
    since_ms = int(time.time() * 1000)  # interventions of earlier runs on these topics are not ours to answer
    loop = ClosedLoop(
        settings,
        *simulate_users(config),
        config,
        since_ms=since_ms,
        horizon_days=args.horizon_days,
        tail_s=args.respond_tail_s,
    ).start()
    try:
        records = loop.records(seed=args.seed, malformed_rate=args.malformed_rate, unknown_rate=args.unknown_rate)
        counts = produce_records(settings, records, rate=args.rate)
        effect = loop.finish(idle_s=args.respond_tail_s, timeout_s=args.respond_tail_s + 10)
    finally:
        loop.close()
    print(f"produced {sum(counts.values())} records to {settings.events_topic}: {dict(counts)}")
    for label, text in effect_rows(effect):
        print(f"{label}: {text}")
    return 0


def _event_row(event: Any) -> dict[str, Any]:
    from msgspec import structs

    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "type": event.type.wire_name,
        "ts": event.ts_ms,
        "item_id": event.item_id,
        "category": event.category,
        "price": event.price,
        "quantity": event.quantity,
        "order_id": event.order_id,
        "rating": event.rating,
        "session_id": event.session_id,
        "coupon_id": event.coupon_id,
        "intervention_id": event.intervention_id,
        "items": [structs.asdict(line) for line in event.items] if event.items else None,
    }


def register(sub: Any) -> None:
    """Add ``retention simulate``."""
    p = sub.add_parser(
        "simulate",
        help="seeded simulated behaviour to a .jsonl/.parquet file, or produced to the broker at --rate "
        "(--live stamps each event as it is produced; --respond lets the simulated users answer the worker's "
        "interventions); creates the topics first",
    )
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=180)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", help="write to this .jsonl or .parquet file instead of Kafka")
    p.add_argument("--rate", type=float, default=0.0, help="events per second when producing (0: as fast as possible)")
    p.add_argument("--malformed-rate", type=float, default=0.0)
    p.add_argument("--unknown-rate", type=float, default=0.0)
    p.add_argument(
        "--live",
        action="store_true",
        help="stamp each event with the time it is produced (event time passes as fast as wall time)",
    )
    p.add_argument(
        "--respond",
        action="store_true",
        help="closed loop: read the intervention topics and let the simulated users answer (redeem, click, "
        "come back if persuadable); prints the measured uplift against the holdout and the simulator's true one",
    )
    p.add_argument("--horizon-days", type=int, default=30, help="with --respond: retention horizon of the effect")
    p.add_argument(
        "--respond-tail-s",
        type=float,
        default=5.0,
        help="with --respond: after the last simulated event, keep answering until none came for this long",
    )
    p.add_argument(
        "--treatment-log", help="also write a randomised coupon campaign on these users (JSONL, for uplift training)"
    )
    add_settings_flags(p, ("broker", "events_topic", "partitions", "app_id"))
    add_broker_wait(p)
    p.set_defaults(func=cmd_simulate)
