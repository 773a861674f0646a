"""Turn a plain transaction log into schema-v1 events, so the whole pipeline runs on it.

Input: a CSV with one row per transaction: a user column, a timestamp column and an
amount column; optionally an order id and a cancelled flag. Output: purchase events (and
cancel_order events for cancelled rows) as JSONL, in time order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from retention_model.events import Event, EventType, encode_event

__all__ = ["TransactionColumns", "convert_transactions"]


@dataclass(frozen=True)
class TransactionColumns:
    """Which CSV columns hold what."""

    user: str = "user_id"
    timestamp: str = "timestamp"
    amount: str = "amount"
    order: str | None = None
    cancelled: str | None = None
    #: Time zone of timestamps that carry none.
    assume_tz: str = "UTC"


def convert_transactions(source: str | Path, target: str | Path, columns: TransactionColumns) -> int:
    """Write ``target`` (.jsonl) from the CSV ``source``; return the number of events written.

    A row whose amount is negative becomes a ``return`` of that amount; a row flagged
    cancelled also yields a ``cancel_order`` one minute after its purchase.
    """
    frame = pd.read_csv(source, dtype={columns.user: str})
    missing = [
        c
        for c in (columns.user, columns.timestamp, columns.amount, columns.order, columns.cancelled)
        if c and c not in frame
    ]
    if missing:
        msg = f"{source}: no column {', '.join(missing)}; columns are {', '.join(frame.columns)}"
        raise ValueError(msg)

    def epoch_ms(value: object) -> int:
        stamp = pd.Timestamp(str(value))
        if stamp.tzinfo is None:  # a log may mix zoned and unzoned times
            stamp = stamp.tz_localize(columns.assume_tz)
        return int(stamp.tz_convert("UTC").value // 1_000_000)

    frame = frame.assign(event_ts_ms=frame[columns.timestamp].map(epoch_ms)).sort_values("event_ts_ms", kind="stable")
    events: list[Event] = []
    for i, row in enumerate(frame.itertuples(index=False)):
        data = row._asdict()
        user, ts, amount = str(data[columns.user]), int(data["event_ts_ms"]), float(data[columns.amount])
        order = str(data[columns.order]) if columns.order else f"{user}-{i}"
        if amount < 0:
            events.append(Event(f"t{i}-r", user, EventType.RETURN, ts, order_id=order, price=-amount))
            continue
        events.append(Event(f"t{i}", user, EventType.PURCHASE, ts, order_id=order, price=amount))
        if columns.cancelled and str(data[columns.cancelled]).strip().lower() in {"1", "true", "yes", "y"}:
            events.append(Event(f"t{i}-c", user, EventType.CANCEL_ORDER, ts + 60_000, order_id=order, price=amount))
    with Path(target).open("wb") as handle:
        for event in events:
            handle.write(encode_event(event) + b"\n")
    return len(events)
