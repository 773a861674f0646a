"""A plain transaction CSV becomes schema-v1 events the pipeline reads."""

from __future__ import annotations

from pathlib import Path

from retention_model.events import EventType
from retention_model.features.definitions import SIGNALS
from retention_model.features.offline import read_event_log, replay_states
from streams.cli import main as cli


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
