"""The last-events sequence (one definition for training and serving), and the fair comparison."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention_model.events import Event, EventType
from retention_model.features.sequence import SEQUENCE_COLUMNS, event_sequence
from retention_model.features.state import DAY_MS

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


@pytest.fixture(scope="module")
def small_log() -> list[Event]:
    from training.simulator import SimConfig, simulate

    return list(simulate(SimConfig(users=300, days=200, seed=5)))


def test_sequence_model_is_judged_against_the_mlp_on_validation(small_log: list[Event]) -> None:
    """The real models train and score end to end; the verdict is drawn from the figures reported."""
    pytest.importorskip("keras")
    from training.sequence import MODELS, compare_sequence_model
    from training.train import TrainConfig

    report = compare_sequence_model(small_log, TrainConfig(epochs=2))
    assert set(report["models"]) == set(MODELS)
    for entry in report["models"].values():
        assert 0.5 < entry["test"]["roc_auc"] <= 1.0 and entry["validation"]["log_loss"] > 0
    mlp_loss = report["models"]["mlp"]["validation"]["log_loss"]
    for kind, verdict in report["against_mlp_on_validation"].items():
        # The gain is per-row losses, averaged; it must be the reported log losses' difference.
        reported = mlp_loss - report["models"][kind]["validation"]["log_loss"]
        assert verdict["log_loss_gain"] == pytest.approx(reported, abs=1e-6), kind


Rule = Callable[[np.ndarray], np.ndarray]


def confident(labels: np.ndarray) -> np.ndarray:
    """Right on every row, with 0.9: a log loss of -log(0.9) per row."""
    return np.where(labels == 1, 0.9, 0.1)


def fairly_sure(labels: np.ndarray) -> np.ndarray:
    """Right on every row, with 0.7."""
    return np.where(labels == 1, 0.7, 0.3)


def wrong(labels: np.ndarray) -> np.ndarray:
    """Wrong on every row, with 0.9."""
    return np.where(labels == 1, 0.1, 0.9)


def coin(labels: np.ndarray) -> np.ndarray:
    """No information: log(2) per row."""
    return np.full(len(labels), 0.5)


def one_lucky_row(labels: np.ndarray) -> np.ndarray:
    """A coin but for one row it gets right: a lower mean loss that one row cannot make significant."""
    scores = coin(labels)
    scores[0] = confident(labels[:1])[0]
    return scores


GAIN_OF_CONFIDENT_OVER_COIN = math.log(0.9 / 0.5)  # log(2) - (-log(0.9)), on every row


@pytest.mark.parametrize(
    ("rules", "winner", "better"),
    [
        ({"mlp": coin, "gru": confident, "gru_features": one_lucky_row}, "gru", {"gru": True, "gru_features": False}),
        ({"mlp": confident, "gru": wrong, "gru_features": coin}, "mlp", {"gru": False, "gru_features": False}),
        (
            {"mlp": coin, "gru": fairly_sure, "gru_features": confident},
            "gru_features",
            {"gru": True, "gru_features": True},
        ),
    ],
    ids=["only-the-gru-is-better", "the-mlp-is-best", "both-better-the-larger-gain-wins"],
)
def test_the_comparison_names_the_model_that_is_better_on_validation(
    small_log: list[Event],
    monkeypatch: pytest.MonkeyPatch,
    rules: dict[str, Rule],
    winner: str,
    better: dict[str, bool],
) -> None:
    """Stand-in models whose scores are fixed functions of the true labels, so the verdict is known beforehand."""
    pytest.importorskip("keras")
    import training.sequence
    from retention_model.features.offline import events_by_user
    from retention_model.features.sequence import sequence_batch
    from training.train import TrainConfig, time_split

    config = TrainConfig(epochs=1)
    split = time_split(small_log, config)
    per_user = events_by_user(small_log)
    # A stand-in recognises which set it scores by the event sequences it is given.
    known = [(sequence_batch(per_user, data.keys), data.churn) for data in (split.validation, split.test)]

    class StandIn:
        def __init__(self, rule: Rule) -> None:
            self.rule = rule

        def fit(self, *args: object, **kwargs: object) -> None:
            return None

        def count_params(self) -> int:
            return 0

        def predict(self, inputs: list[np.ndarray], **kwargs: object) -> np.ndarray:
            for sequences, labels in known:
                if sequences.shape == inputs[0].shape and np.array_equal(sequences, inputs[0]):
                    return self.rule(labels)
            raise AssertionError("scored a set other than validation or test")

    monkeypatch.setattr(training.sequence, "_build", lambda kind, n, cfg: StandIn(rules[kind]))
    report = training.sequence.compare_sequence_model(small_log, config)

    verdicts = report["against_mlp_on_validation"]
    assert {kind: v["better_than_mlp"] for kind, v in verdicts.items()} == better
    assert report["winner_on_validation"] == winner
    assert report["ship_sequence_model"] == (winner != "mlp")
    for kind, rule in rules.items():
        test_auc = report["models"][kind]["test"]["roc_auc"]
        expected_auc = {confident: 1.0, fairly_sure: 1.0, wrong: 0.0, coin: 0.5}.get(rule)
        if expected_auc is not None:
            assert test_auc == pytest.approx(expected_auc), kind
    for kind in ("gru", "gru_features"):
        if rules["mlp"] is coin and rules[kind] is confident:  # the same gain on every row: no spread at all
            assert verdicts[kind]["log_loss_gain"] == pytest.approx(GAIN_OF_CONFIDENT_OVER_COIN)
            assert verdicts[kind]["ci95"] == pytest.approx([GAIN_OF_CONFIDENT_OVER_COIN] * 2)
        if rules[kind] is one_lucky_row:
            assert verdicts[kind]["log_loss_gain"] > 0 and verdicts[kind]["ci95"][0] <= 0
