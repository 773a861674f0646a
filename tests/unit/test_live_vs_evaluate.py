"""Live quality reads against ``retention evaluate model``: the same users, the same cutoff, the same figures.

The closed loop in process (the batch pipeline with the bundled network, the
simulated users answering its interventions): every user is in the outcome
sample, so each cutoff's outcomes are a full set of cutoff rows. ``evaluate model``
on every event the worker saw, at the same cutoff, must find the same users with
the same risks and labels, and so the same ROC-AUC and Brier within a stated
tolerance (users first seen in a batch that spans the cutoff are missed live).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from retention_model.events import Event
from retention_model.features.state import DAY_MS
from retention_model.model.bundle import resolve_bundle
from retention_model.model.scorer import ChurnModel
from retention_model.monitoring.quality import brier_score, roc_auc
from retention_model.pipeline import (
    BatchPipeline,
    DecodeLimits,
    Inference,
    MemoryStores,
    ModelCall,
    PipelineConfig,
)
from retention_model.pipeline.outcomes import cutoff_after
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import iso_ms
from streams.settings import BUNDLED_MODEL
from training.closed_loop import Responder
from training.evaluate import evaluate_model, plan_evaluation
from training.loop_replay import LoopRun, run_closed_loop
from training.simulator import SimConfig, simulate_users

PARTITIONS = 4
LIMITS = DecodeLimits(lateness_ms=DAY_MS, future_skew_ms=300_000, watermark_jump_ms=DAY_MS)
#: Stated tolerance: live against offline on the same cutoff.
AUC_TOLERANCE = 0.02
BRIER_TOLERANCE = 0.01


def bundled_call(model: ChurnModel) -> ModelCall:
    async def infer(features: np.ndarray) -> Inference:
        return Inference(model.score_many(features))

    return ModelCall(infer, model.version, horizon_ms=30 * DAY_MS, max_silence_ms=120 * DAY_MS)


def closed_loop(config: SimConfig) -> LoopRun:
    """The closed loop in process with the bundled network, every user in the outcome sample."""
    per_user, truth = simulate_users(config)
    model = ChurnModel(resolve_bundle(BUNDLED_MODEL), device="cpu").load()
    wall_ms = max(events[-1].ts_ms for events in per_user if events) + DAY_MS
    pipeline = BatchPipeline(
        PipelineConfig(PolicyConfig(), partitions=PARTITIONS, limits=LIMITS, replay=True, outcome_sample=10_000),
        MemoryStores(),
        clock=lambda: wall_ms,
    )
    return run_closed_loop(
        pipeline, bundled_call(model), per_user, Responder(per_user, truth, config), partitions=PARTITIONS
    )


@pytest.fixture(scope="module")
def loop() -> tuple[list[dict[str, Any]], list[Event]]:
    """(outcome records, every event the worker saw) of a 150-day closed loop of 500 users."""
    run = closed_loop(SimConfig(users=500, days=150, seed=21))
    return run.outcomes, run.events


def test_live_outcomes_at_a_cutoff_match_evaluate_model_there(loop: Any) -> None:
    outcomes, events = loop
    cutoffs = Counter(o["scored_at"] for o in outcomes)
    assert len(cutoffs) >= 3, cutoffs  # 30-day cutoffs from 2025-01-12 whose horizon closed in the run
    cutoff_ms = cutoff_after(events[0].ts_ms + 90 * DAY_MS, 30 * DAY_MS)
    live = {o["user_id"]: o for o in outcomes if o["scored_at"] == iso_ms(cutoff_ms)}
    report, curves, test = evaluate_model(events, plan_evaluation(events, BUNDLED_MODEL, cutoff_ms=cutoff_ms))
    offline = {user: i for i, (user, _) in enumerate(test.keys)}

    # The same users: every live row is an offline row; few offline rows are missed live.
    assert set(live) <= set(offline)
    assert len(live) >= 0.95 * len(offline), (len(live), len(offline))
    # Row by row: the same label, and the same risk (the live risk is rounded to 6 places).
    for user, outcome in live.items():
        i = offline[user]
        assert outcome["churned"] == bool(curves["labels"][i]), user
        assert outcome["risk"] == pytest.approx(float(curves["model"][i]), abs=2e-6), user
    # And so the figures, within the stated tolerance.
    labels = np.array([o["churned"] for o in live.values()], dtype=float)
    risks = np.array([o["risk"] for o in live.values()])
    assert abs(roc_auc(labels, risks) - report["model"]["roc_auc"]) <= AUC_TOLERANCE
    assert abs(brier_score(labels, risks) - report["model"]["brier"]) <= BRIER_TOLERANCE
