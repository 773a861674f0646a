"""Turn a plain transaction log into schema-v1 events, so the whole pipeline runs on it.

Input: a CSV with one row per transaction: a user column, a timestamp column and an
amount column; optionally an order id and a cancelled flag. Output: purchase events (and
cancel_order events for cancelled rows) as JSONL, in time order.

A *line-level* CSV (one row per order line, given an item column and an order column)
becomes one purchase per order carrying its lines as ``items``: counting each line as
a purchase would inflate purchase counts and lose the basket that co-purchase learning
needs. The event's ``price`` stays the order total.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from retention_model.events import MAX_ORDER_LINES, Event, EventType, OrderLine, encode_event
from retention_model.schema import MAX_PRICE, MAX_QUANTITY, MAX_STRING_LEN

__all__ = ["TransactionColumns", "convert_frame", "convert_transactions"]

_log = logging.getLogger(__name__)
_TRUE = frozenset({"1", "true", "yes", "y"})


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
    #: Set, the CSV is line-level: rows sharing an order id become one purchase with lines.
    item: str | None = None
    category: str | None = None
    quantity: str | None = None
    #: A line's unit price; the order total is the sum of the amount column when the CSV
    #: has one, else the sum of unit price x quantity.
    unit_price: str | None = None


def convert_transactions(source: str | Path, target: str | Path, columns: TransactionColumns) -> int:
    """Write ``target`` (.jsonl) from the CSV ``source``; return the number of events written.

    A row whose amount is negative becomes a ``return`` of that amount; a row flagged
    cancelled also yields a ``cancel_order`` one minute after its purchase.
    """
    dtypes = {c: str for c in (columns.user, columns.order, columns.item, columns.category) if c}
    frame = pd.read_csv(source, dtype=dtypes)
    events = convert_frame(frame, columns, source=str(source))
    with Path(target).open("wb") as handle:
        for event in events:
            handle.write(encode_event(event) + b"\n")
    return len(events)


def convert_frame(frame: pd.DataFrame, columns: TransactionColumns, source: str = "frame") -> list[Event]:
    """Events, in time order, of a transaction frame (see :func:`convert_transactions`)."""
    line_level = columns.item is not None
    if line_level and columns.order is None:
        msg = f"{source}: a line-level log (--item-column) needs --order-column to group its lines into orders"
        raise ValueError(msg)
    wanted = [columns.user, columns.timestamp, columns.order, columns.cancelled]
    wanted += [columns.item, columns.category, columns.quantity, columns.unit_price]
    # Line-level totals may come from unit prices instead of an amount column.
    if not line_level or columns.unit_price is None or columns.amount in frame:
        wanted.append(columns.amount)
    missing = [c for c in wanted if c and c not in frame]
    if missing:
        msg = f"{source}: no column {', '.join(missing)}; columns are {', '.join(map(str, frame.columns))}"
        raise ValueError(msg)

    def epoch_ms(value: object) -> int:
        stamp = pd.Timestamp(str(value))
        if stamp.tzinfo is None:  # a log may mix zoned and unzoned times
            stamp = stamp.tz_localize(columns.assume_tz)
        return int(stamp.tz_convert("UTC").value // 1_000_000)

    frame = frame.assign(event_ts_ms=frame[columns.timestamp].map(epoch_ms)).sort_values("event_ts_ms", kind="stable")
    rows = [row._asdict() for row in frame.rename(columns=str).itertuples(index=False)]
    if line_level:
        return _orders_with_lines(rows, columns)
    events: list[Event] = []
    for i, data in enumerate(rows):
        user, ts, amount = str(data[columns.user]), int(data["event_ts_ms"]), float(data[columns.amount])
        order = str(data[columns.order]) if columns.order else f"{user}-{i}"
        if amount < 0:
            events.append(Event(f"t{i}-r", user, EventType.RETURN, ts, order_id=order, price=-amount))
            continue
        events.append(Event(f"t{i}", user, EventType.PURCHASE, ts, order_id=order, price=amount))
        if columns.cancelled and _flagged(data[columns.cancelled]):
            events.append(Event(f"t{i}-c", user, EventType.CANCEL_ORDER, ts + 60_000, order_id=order, price=amount))
    return events


def _flagged(value: object) -> bool:
    return str(value).strip().lower() in _TRUE


def _number(value: object) -> float | None:
    """A cell as a float; None when empty or not a number."""
    try:
        number = float(value)  # type: ignore[arg-type]  # cells are str, int, float or NaN
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


@dataclass
class _Order:
    """An order's rows gathered in time order: the lines keep their first appearance."""

    user: str
    order: str
    ts_ms: int
    total: float = 0.0
    cancelled: bool = False
    #: item -> [category, unit price, quantity]
    lines: dict[str, list[Any]] | None = None


def _orders_with_lines(rows: list[dict[str, Any]], columns: TransactionColumns) -> list[Event]:
    """One purchase (or return) per (user, order), its rows merged by item into lines."""
    orders: dict[tuple[str, str], _Order] = {}
    for data in rows:
        user, order_id = str(data[columns.user]), str(data[columns.order])
        order = orders.get((user, order_id))
        if order is None:
            order = orders[user, order_id] = _Order(user, order_id, int(data["event_ts_ms"]), lines={})
        assert order.lines is not None
        quantity = _number(data[columns.quantity]) if columns.quantity else None
        unit = _number(data[columns.unit_price]) if columns.unit_price else None
        count = 1 if quantity is None else abs(round(quantity))
        amount = _number(data[columns.amount]) if columns.amount in data else None
        if amount is None:
            amount = (unit or 0.0) * (quantity if quantity is not None else 1.0)
        order.total += amount
        if columns.cancelled and _flagged(data[columns.cancelled]):
            order.cancelled = True
        item = _text(data[columns.item])
        if item is None or count == 0:
            continue
        if len(item) > MAX_STRING_LEN:
            msg = f"item id {item[:40]!r}... is longer than {MAX_STRING_LEN} characters (order {order_id})"
            raise ValueError(msg)
        category = _text(data[columns.category]) if columns.category else None
        line = order.lines.setdefault(item, [category, None, 0])
        line[0] = line[0] or category
        if unit is not None and line[1] is None:
            line[1] = min(abs(unit), MAX_PRICE)
        line[2] += count
    events: list[Event] = []
    truncated = 0
    for i, order in enumerate(sorted(orders.values(), key=lambda o: o.ts_ms)):
        assert order.lines is not None
        truncated += len(order.lines) > MAX_ORDER_LINES
        lines = [
            OrderLine(item, category, price, min(quantity, MAX_QUANTITY))
            for item, (category, price, quantity) in list(order.lines.items())[:MAX_ORDER_LINES]
        ]
        categories = Counter(line.category for line in lines if line.category is not None)
        main = categories.most_common(1)[0][0] if categories else None  # ties: the first line's
        fields: dict[str, Any] = {
            "order_id": order.order,
            "price": min(abs(round(order.total, 2)), MAX_PRICE),
            "items": lines or None,
            "category": main,
        }
        if order.total < 0:  # a negative order (a credit note) returns its lines
            events.append(Event(f"t{i}-r", order.user, EventType.RETURN, order.ts_ms, **fields))
            continue
        count = min(sum(line.quantity or 1 for line in lines), MAX_QUANTITY) if lines else None
        events.append(Event(f"t{i}", order.user, EventType.PURCHASE, order.ts_ms, quantity=count, **fields))
        if order.cancelled:
            events.append(Event(f"t{i}-c", order.user, EventType.CANCEL_ORDER, order.ts_ms + 60_000, **fields))
    if truncated:
        _log.warning("%d orders had more than %d lines; their first %d were kept", truncated, *(MAX_ORDER_LINES,) * 2)
    return events
