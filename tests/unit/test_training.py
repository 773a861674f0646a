"""Simulator and training: reproducible data, a bundle the worker can load."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from retention_model.events import EventType
from retention_model.model.scorer import ChurnModel
from retention_model.policy.recommend import Recommender
from streams.cli import main
from training.eventlog import read_event_log
from training.simulator import SimConfig, simulate, simulate_users
from training.train import TrainConfig, train


def test_simulation_is_seeded_and_realistic() -> None:
    config = SimConfig(users=200, days=90, seed=3)
    first = list(simulate(config))
    assert first == list(simulate(config))
    assert first != list(simulate(SimConfig(users=200, days=90, seed=4)))
    assert [e.ts_ms for e in first] == sorted(e.ts_ms for e in first)
    kinds = Counter(e.type for e in first)
    assert set(kinds) == set(EventType)
    assert kinds[EventType.VIEW] > kinds[EventType.ADD_TO_CART] > kinds[EventType.PURCHASE]
    _, truth = simulate_users(config)
    churned = [u for u in truth if u.silent_ms is not None]
    assert 0 < len(churned) < len(truth)
    per_user = Counter(e.user_id for e in first)
    for user in churned:
        assert all(e.ts_ms < user.silent_ms for e in first if e.user_id == user.user_id)  # silent means silent
    assert len(per_user) == 200


def test_simulate_command_writes_jsonl_and_parquet(tmp_path: Path) -> None:
    jsonl, parquet = tmp_path / "sim.jsonl", tmp_path / "sim.parquet"
    assert main(["simulate", "--users", "30", "--days", "30", "--out", str(jsonl)]) == 0
    assert main(["simulate", "--users", "30", "--days", "30", "--out", str(parquet)]) == 0
    assert read_event_log(jsonl) == read_event_log(parquet)


def test_live_simulation_stamps_each_event_as_it_is_produced() -> None:
    """``simulate --live``: the same events in the same order, event time = wall time at produce."""
    import time

    from streams.commands.simulate import stamped_now

    events = list(simulate(SimConfig(users=20, days=10, seed=3)))
    before = int(time.time() * 1000)
    stamped = []
    for event in stamped_now(iter(events)):
        stamped.append(event)
        if len(stamped) == 2:
            time.sleep(0.05)  # a slow producer: later events are stamped later
    after = int(time.time() * 1000)
    assert [(e.event_id, e.user_id, e.type) for e in stamped] == [(e.event_id, e.user_id, e.type) for e in events]
    assert all(before <= e.ts_ms <= after for e in stamped)
    assert stamped[2].ts_ms - stamped[1].ts_ms >= 50
    assert main(["simulate", "--users", "5", "--days", "5", "--live", "--out", "x.jsonl"]) == 2


def test_training_writes_a_loadable_calibrated_bundle(tmp_path: Path) -> None:
    events = list(simulate(SimConfig(users=400, days=200, seed=5)))
    bundle = train(events, tmp_path / "registry", TrainConfig(epochs=3), source="test")
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["calibration"]["method"] == "platt"
    assert meta["training_data"]["users"] == 400
    cutoffs = meta["training_data"]["cutoffs"]
    assert max(cutoffs["fit"]) < cutoffs["calibration"][0] < cutoffs["test"] == meta["training_data"]["cutoff"]
    metrics = meta["metrics"]
    assert 0.5 < metrics["test"]["roc_auc"] <= 1
    assert (
        set(metrics["test_baselines"])
        == set(metrics["test_model_minus_baseline"])
        == {
            "rfm_logistic_regression",
            "bgnbd",
        }
    )
    assert meta["extras"]["candidate"] == metrics["selection"]["chosen"]
    assert meta["training_data"]["filters"]["test"]["rows"] == metrics["test"]["rows"]
    model = ChurnModel(tmp_path / "registry").load()
    assert model.version == meta["version"]
    scores = model.score_many(np.zeros((4, len(meta["feature_names"]))))
    assert np.all((scores >= 0) & (scores <= 1))


def test_training_refuses_a_log_too_short_to_split() -> None:
    with pytest.raises(ValueError, match=r"training needs \d+ days before the test cutoff"):
        train(list(simulate(SimConfig(users=50, days=60, seed=1))), "/nonexistent", TrainConfig())


def test_a_treatment_log_puts_an_uplift_model_in_the_bundle_and_the_worker_serves_it(tmp_path: Path) -> None:
    events, log = tmp_path / "sim.jsonl", tmp_path / "campaign.jsonl"
    assert (
        main(
            [
                "simulate",
                "--users",
                "500",
                "--days",
                "200",
                "--seed",
                "3",
                "--out",
                str(events),
                "--treatment-log",
                str(log),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--events",
                str(events),
                "--treatment-log",
                str(log),
                "--registry",
                str(tmp_path / "r"),
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    model = ChurnModel(tmp_path / "r").load()
    meta = model.meta_
    assert meta is not None
    assert meta.metrics["uplift"]["rows"] >= 100
    assert "qini_coefficient" in meta.metrics["uplift"]["held_out_30pct"]
    assert model.uplift_ is not None
    uplift = model.uplift_many(np.zeros((3, len(meta.feature_names))))
    assert uplift is not None and uplift.shape == (3,) and np.all(np.abs(uplift) <= 1)
    recommender = Recommender.from_dict(model.recommendations_)
    assert recommender.also_bought and recommender.popular  # co-purchase table learned


def test_the_bundled_model_ships_recommendations_and_an_uplift_model() -> None:
    from streams.settings import BUNDLED_MODEL

    model = ChurnModel(BUNDLED_MODEL).load()
    assert model.uplift_ is not None
    assert len(Recommender.from_dict(model.recommendations_).item_by_hash) > 100


def test_lift_and_capture_by_hand() -> None:
    from training.evaluate import lift_and_capture

    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2])
    top20 = lift_and_capture(labels, scores, 0.2)
    assert top20 == {"lift": pytest.approx(1.0 / 0.3), "capture": pytest.approx(2 / 3)}


def test_evaluate_model_command_writes_figures_plots_and_a_reference(tmp_path: Path) -> None:
    events = tmp_path / "unseen.jsonl"
    assert main(["simulate", "--users", "400", "--days", "200", "--seed", "21", "--out", str(events)]) == 0
    out = tmp_path / "evaluation"
    assert main(["evaluate", "model", "--events", str(events), "--out", str(out)]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    for name in ("model", "rfm_logistic_regression", "bgnbd"):
        figures = report[name]
        assert {"roc_auc", "pr_auc", "brier", "log_loss", "ece", "lift_top_10", "capture_top_20"} <= set(figures)
        assert 0.5 < figures["roc_auc"] <= 1
        assert sum(c["rows"] for c in figures["calibration"]) == report["rows"]["test"]
    assert len(report["feature_importance"]) == 15
    assert {p.name for p in out.iterdir()} == {
        "evaluation.json",
        "evaluation.md",
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "lift.png",
        "feature_importance.png",
    }
