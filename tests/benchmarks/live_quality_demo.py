"""Live quality on the demo's traffic: the closed loop in process, every user sampled, figures per cutoff.

    python -m tests.benchmarks.live_quality_demo [--users 363] [--days 120] [--seed 11]

The demo's simulation (its default size) through the batch pipeline with the bundled
network and the responder answering, in batches of 2,000 events; prints a Markdown
table of the cutoff outcomes: n, ROC-AUC and Brier for all and per cutoff. Not a
benchmark (``make bench`` does not run it): the table in docs/model.md comes from it.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from retention_model.features.state import DAY_MS
from retention_model.model.bundle import resolve_bundle
from retention_model.model.scorer import ChurnModel
from retention_model.monitoring.quality import brier_score, roc_auc
from retention_model.pipeline import BatchPipeline, DecodeLimits, Inference, MemoryStores, ModelCall, PipelineConfig
from retention_model.policy.config import PolicyConfig
from streams.settings import BUNDLED_MODEL
from training.closed_loop import Responder
from training.loop_replay import run_closed_loop
from training.simulator import SimConfig, simulate_users

PARTITIONS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=363)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    config = SimConfig(users=args.users, days=args.days, seed=args.seed)
    per_user, truth = simulate_users(config)
    model = ChurnModel(resolve_bundle(BUNDLED_MODEL), device="cpu").load()

    async def infer(features: np.ndarray) -> Inference:
        return Inference(model.score_many(features))

    meta = model.meta_
    horizon_ms = int((meta.horizon_days if meta is not None else 30) * DAY_MS)
    wall_ms = max(events[-1].ts_ms for events in per_user if events) + DAY_MS
    limits = DecodeLimits(lateness_ms=DAY_MS, future_skew_ms=300_000, watermark_jump_ms=DAY_MS)
    pipeline = BatchPipeline(
        PipelineConfig(PolicyConfig(), partitions=PARTITIONS, limits=limits, replay=True, outcome_sample=100_000),
        MemoryStores(),
        clock=lambda: wall_ms,
    )
    call = ModelCall(infer, model.version, horizon_ms=horizon_ms)
    run = run_closed_loop(pipeline, call, per_user, Responder(per_user, truth, config), partitions=PARTITIONS)
    by_cutoff: dict[str, list[dict]] = defaultdict(list)
    for outcome in run.outcomes:
        by_cutoff[outcome["scored_at"][:10]].append(outcome)
    print("| Cutoff | n | ROC-AUC | Brier |\n|---|---|---|---|")
    for name, rows in [("all", run.outcomes), *sorted(by_cutoff.items())]:
        labels = np.array([o["churned"] for o in rows], dtype=float)
        risks = np.array([o["risk"] for o in rows])
        auc = roc_auc(labels, risks)
        print(f"| {name} | {len(rows)} | {'-' if auc is None else f'{auc:.3f}'} | {brier_score(labels, risks):.3f} |")


if __name__ == "__main__":
    main()
