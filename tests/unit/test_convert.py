"""A plain transaction CSV becomes schema-v1 events the pipeline reads."""

from __future__ import annotations

from pathlib import Path

from retention_model.events import EventType
from retention_model.features.definitions import SIGNALS
from retention_model.features.offline import replay_states
from streams.cli import main as cli
from training.eventlog import read_event_log


def test_csv_transactions_convert_to_events(tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_text(
        "customer,when,total,order,cancelled\n"
        "c1,2025-01-03 10:00:00,30.0,o1,no\n"
        "c1,2025-01-01 09:00:00,20.0,o0,no\n"
        "c2,2025-01-02T08:00:00+01:00,15.5,o2,yes\n"
        "c1,2025-01-05 12:00:00,-10.0,o1,no\n"
    )
    target = tmp_path / "events.jsonl"
    args = ["convert", str(source), "--out", str(target), "--user-column", "customer", "--time-column", "when"]
    args += ["--amount-column", "total", "--order-column", "order", "--cancelled-column", "cancelled"]
    assert cli(args) == 0
    events = read_event_log(target)
    assert [e.type for e in events] == [
        EventType.PURCHASE,  # c1, Jan 1 (time order, not file order)
        EventType.PURCHASE,  # c2, Jan 2 07:00 UTC
        EventType.CANCEL_ORDER,
        EventType.PURCHASE,  # c1, Jan 3
        EventType.RETURN,  # the negative row
    ]
    assert events[1].ts_ms == 1_735_801_200_000  # 2025-01-02T07:00:00Z
    states = replay_states(events)
    spend = [signal.on for signal in SIGNALS].index("spend")
    assert states["c1"].totals[spend] == 50.0


def test_missing_columns_are_named(tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_text("user_id,ts,amount\nu1,2025-01-01,1\n")
    assert cli(["convert", str(source), "--out", str(tmp_path / "e.jsonl")]) == 2


def test_a_line_level_csv_becomes_one_purchase_per_order_with_its_lines(tmp_path: Path) -> None:
    from training.convert import TransactionColumns, convert_transactions

    source = tmp_path / "lines.csv"
    source.write_text(
        "customer,when,order,sku,aisle,qty,unit,cancelled\n"
        "c1,2025-01-03 10:00:00,o2,milk,dairy,2,1.5,no\n"
        "c1,2025-01-01 09:00:00,o1,milk,dairy,1,1.5,no\n"
        "c1,2025-01-01 09:00:00,o1,bread,bakery,1,2.0,no\n"
        "c1,2025-01-01 09:00:00,o1,butter,dairy,1,3.0,no\n"
        "c1,2025-01-01 09:00:00,o1,milk,dairy,1,1.5,no\n"  # the same item again: one line, quantity 2
        "c2,2025-01-02 08:00:00,o3,cake,bakery,1,9.0,yes\n"
        "c1,2025-01-04 08:00:00,o4,bread,bakery,-1,2.0,no\n"  # a credit note returns its line
    )
    target = tmp_path / "events.jsonl"
    columns = TransactionColumns(
        user="customer",
        timestamp="when",
        amount="total",
        order="order",
        cancelled="cancelled",
        item="sku",
        category="aisle",
        quantity="qty",
        unit_price="unit",
    )
    assert convert_transactions(source, target, columns) == 5
    events = read_event_log(target)
    assert [(e.type, e.order_id) for e in events] == [
        (EventType.PURCHASE, "o1"),
        (EventType.PURCHASE, "o3"),
        (EventType.CANCEL_ORDER, "o3"),
        (EventType.PURCHASE, "o2"),
        (EventType.RETURN, "o4"),
    ]
    first = events[0]
    assert first.price == 8.0  # the order total (no amount column: unit price x quantity), not a line's
    assert first.category == "dairy"  # the order's most common category
    assert first.quantity == 4
    assert [(line.item_id, line.category, line.price, line.quantity) for line in first.items or []] == [
        ("milk", "dairy", 1.5, 2),
        ("bread", "bakery", 2.0, 1),
        ("butter", "dairy", 3.0, 1),
    ]
    assert events[4].price == 2.0 and [line.item_id for line in events[4].items or []] == ["bread"]
    signals = [signal.on for signal in SIGNALS]
    c1 = replay_states(events)["c1"]
    assert c1.totals[signals.index("purchases")] == 2  # two orders, not five lines
    assert c1.totals[signals.index("spend")] == 8.0 + 3.0


def test_a_line_level_csv_needs_its_order_column(tmp_path: Path) -> None:
    import pytest

    from training.convert import TransactionColumns, convert_transactions

    source = tmp_path / "lines.csv"
    source.write_text("user_id,timestamp,amount,sku\nu1,2025-01-01,1,milk\n")
    with pytest.raises(ValueError, match="needs --order-column"):
        convert_transactions(source, tmp_path / "e.jsonl", TransactionColumns(item="sku"))
