"""One meaning of ``price`` per event type, the same in every path (issue 20).

A purchase's ``price`` is the order total; ``quantity`` counts its items and must
never multiply it. Cart events carry a unit price; cancellations and returns the
amount. Bundles trained while spend was price x quantity are refused, saying why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retention_model.errors import FeatureSpecMismatchError
from retention_model.events import Event, EventType, decode_event, encode_event
from retention_model.features.definitions import FEATURE_NAMES, FORMULA_REVISION, SIGNALS
from retention_model.features.offline import events_by_user, features_at, replay_states
from retention_model.features.sequence import SEQUENCE_COLUMNS, event_sequence
from retention_model.features.state import DAY_MS
from retention_model.model.bundle import check_feature_spec, read_bundle_meta

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def ev(kind: EventType, day: float, **fields: object) -> Event:
    return Event(f"u1-{kind.name}-{day}", "u1", kind, T0 + int(day * DAY_MS), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "price", "quantity", "amount"),
    [
        (EventType.PURCHASE, 100.0, 5, 100.0),  # the order total, 5 items in it
        (EventType.PURCHASE, 100.0, None, 100.0),
        (EventType.CANCEL_ORDER, 100.0, 5, 100.0),  # the amount cancelled
        (EventType.RETURN, 40.0, 2, 40.0),  # the amount refunded
        (EventType.ADD_TO_CART, 20.0, 3, 60.0),  # a unit price
        (EventType.REMOVE_FROM_CART, 20.0, 3, 60.0),
        (EventType.VIEW, 20.0, None, 20.0),
        (EventType.SESSION_START, None, None, 0.0),
    ],
)
def test_amount_follows_the_documented_meaning_of_price(
    kind: EventType, price: float | None, quantity: int | None, amount: float
) -> None:
    fields = {k: v for k, v in (("price", price), ("quantity", quantity)) if v is not None}
    decoded = decode_event(encode_event(ev(kind, 0, **fields)))
    assert isinstance(decoded, Event) and decoded.amount == amount


def test_a_purchase_of_price_100_and_quantity_5_adds_100_to_spend() -> None:
    events = [ev(EventType.PURCHASE, 0, price=100.0, quantity=5), ev(EventType.PURCHASE, 3, price=20.0, quantity=2)]
    _, matrix = features_at(events_by_user(events), [("u1", T0 + 5 * DAY_MS)])
    row = dict(zip(FEATURE_NAMES, matrix[0], strict=True))
    assert row["spend_sum_total"] == 120.0
    assert row["items_sum_total"] == 7.0
    assert row["avg_order_value"] == pytest.approx(60.0)
    assert row["avg_item_price"] == pytest.approx(120.0 / 7)
    spend = [signal.on for signal in SIGNALS].index("spend")
    assert replay_states(events)["u1"].totals[spend] == 120.0
    # The sequence model's amount column reads the same amount.
    sequence = event_sequence(events, T0 + 5 * DAY_MS)
    amount_column = SEQUENCE_COLUMNS.index("log1p_amount")
    assert sequence[-2:, amount_column].tolist() == pytest.approx([np.log1p(100.0), np.log1p(20.0)])


def test_the_spend_label_is_the_order_total() -> None:
    from training.train import TrainConfig, build_dataset

    events = [
        ev(EventType.PURCHASE, 0, price=10.0, quantity=1),
        ev(EventType.PURCHASE, 40, price=100.0, quantity=5),  # inside the 30-day horizon after day 30
    ]
    data = build_dataset(events, [T0 + 30 * DAY_MS], TrainConfig(horizon_days=30))
    assert data.spend_h.tolist() == [100.0]


def test_the_simulator_writes_order_totals_and_unit_prices() -> None:
    from training.simulator import SimConfig, simulate

    events = list(simulate(SimConfig(users=40, days=40, seed=2)))
    carts: dict[str, float] = {}
    for event in events:
        if event.type is EventType.ADD_TO_CART:
            assert event.price is not None and event.quantity is not None
            carts[event.session_id or ""] = carts.get(event.session_id or "", 0.0) + event.amount
    purchases = [e for e in events if e.type is EventType.PURCHASE]
    assert purchases and all(e.amount == e.price for e in purchases)
    # An order's total never exceeds what went into that session's cart: price is not per item.
    assert all(e.amount <= carts[e.session_id or ""] + 0.01 for e in purchases)


def test_convert_writes_the_amount_as_the_purchase_price(tmp_path: Path) -> None:
    from streams.cli import main

    source = tmp_path / "orders.csv"
    source.write_text("user_id,timestamp,amount\nu1,2025-01-01,100\nu1,2025-01-02,-30\n")
    target = tmp_path / "events.jsonl"
    assert main(["convert", str(source), "--out", str(target)]) == 0
    purchase, refund = (decode_event(line) for line in target.read_bytes().splitlines())
    assert isinstance(purchase, Event) and purchase.type is EventType.PURCHASE and purchase.amount == 100.0
    assert isinstance(refund, Event) and refund.type is EventType.RETURN and refund.amount == 30.0


def test_a_bundle_trained_before_the_spend_fix_is_refused_with_the_reason(tmp_path: Path) -> None:
    from streams.settings import BUNDLED_MODEL

    source = read_bundle_meta(BUNDLED_MODEL).path
    bundle = tmp_path / source.name
    for name in ("bundle.json", "model.keras"):
        (bundle / name).parent.mkdir(exist_ok=True)
        (bundle / name).write_bytes((source / name).read_bytes())
    meta = json.loads((bundle / "bundle.json").read_text())
    # What a revision-2 bundle looked like: another code version and no recorded revision.
    meta["feature_code_version"] = "v1-0123456789ab"
    meta.pop("formula_revision", None)
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(FeatureSpecMismatchError) as info:
        check_feature_spec(read_bundle_meta(bundle))
    message = str(info.value)
    assert "v1-0123456789ab" in message
    assert f"revision {FORMULA_REVISION}: a purchase's spend is its price, the order total" in message
    assert "retrain it" in message and "make model" in message
    assert "\n" not in message  # one line at the command line
