"""The last-events sequence (one definition for training and serving), and the fair comparison."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention_model.events import Event, EventType
from retention_model.features.sequence import SEQUENCE_COLUMNS, event_sequence

DAY_MS = 86_400_000
T0 = 1_735_689_600_000
PRESENT = SEQUENCE_COLUMNS.index("present")
AGE = SEQUENCE_COLUMNS.index("log1p_age_days")
TYPES = [SEQUENCE_COLUMNS.index(f"type_{t.wire_name}") for t in EventType]

events_strategy = st.lists(
    st.builds(
        lambda i, day, kind, price: Event(
            event_id=f"e{i}",
            user_id="u",
            type=kind,
            ts_ms=T0 + day * DAY_MS // 24,
            price=price if kind is EventType.PURCHASE else None,
        ),
        st.integers(0, 10_000),
        st.integers(0, 24 * 200),
        st.sampled_from([EventType.VIEW, EventType.PURCHASE, EventType.ADD_TO_CART, EventType.SEARCH]),
        st.floats(0.0, 500.0),
    ),
    max_size=60,
)


@given(events=events_strategy, as_of_day=st.integers(0, 220), length=st.integers(1, 32))
@settings(max_examples=200, deadline=None)
def test_sequence_holds_the_last_visible_events_oldest_first_left_padded(
    events: list[Event], as_of_day: int, length: int
) -> None:
    as_of = T0 + as_of_day * DAY_MS
    matrix = event_sequence(events, as_of, length)
    visible = sorted(e.ts_ms for e in events if e.ts_ms <= as_of)
    shown = min(len(visible), length)
    assert matrix.shape == (length, len(SEQUENCE_COLUMNS))
    # Padding first, then exactly the visible events: a future event never leaks in.
    assert matrix[:, PRESENT].tolist() == [0.0] * (length - shown) + [1.0] * shown
    assert not matrix[: length - shown].any()
    real = matrix[length - shown :]
    assert (real[:, TYPES].sum(axis=1) == 1).all()  # one type each
    ages = np.expm1(real[:, AGE].astype(np.float64)) * DAY_MS
    expected = [as_of - ts for ts in visible[-shown:]] if shown else []
    assert np.allclose(ages, expected, rtol=1e-5, atol=DAY_MS * 1e-5)  # oldest first, as of the scoring time


def test_sequence_model_is_judged_against_the_mlp_on_validation() -> None:
    pytest.importorskip("keras")
    from training.sequence import MODELS, compare_sequence_model
    from training.simulator import SimConfig, simulate
    from training.train import TrainConfig

    events = list(simulate(SimConfig(users=300, days=200, seed=5)))
    report = compare_sequence_model(events, TrainConfig(epochs=2))
    assert set(report["models"]) == set(MODELS)
    for entry in report["models"].values():
        assert 0.5 < entry["test"]["roc_auc"] <= 1.0 and entry["validation"]["log_loss"] > 0
    verdicts = report["against_mlp_on_validation"]
    for kind, verdict in verdicts.items():
        low, high = verdict["ci95"]
        assert low <= verdict["log_loss_gain"] <= high
        assert verdict["better_than_mlp"] == (low > 0), kind
    winner = report["winner_on_validation"]
    assert report["ship_sequence_model"] == (winner != "mlp")
    assert winner == "mlp" or verdicts[winner]["better_than_mlp"]
