"""The models a worker scores with: the live one (reloaded while running) and a shadow.

Both run on one scoring thread: the model call releases the GIL, and a single
thread keeps TensorFlow's own thread pools from being oversubscribed. The pipeline
gets the call as an awaitable, so it never knows which thread that is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from retention_model.errors import BundleError
from retention_model.features.state import DAY_MS
from retention_model.model.bundle import resolve_bundle
from retention_model.model.scorer import ChurnModel
from retention_model.pipeline.records import Inference, ModelCall
from retention_model.policy.recommend import Recommender
from streams.metrics import Metrics

__all__ = ["Models"]

log = logging.getLogger(__name__)


class Models:
    """Holds the live and shadow models, reloads the live one, and makes each batch's model call."""

    def __init__(self, model_path: str, model: ChurnModel, metrics: Metrics, shadow: ChurnModel | None = None) -> None:
        self.model_path = model_path
        self.model = model
        #: Built from the live model's co-purchase table, swapped with it on reload.
        self.recommender = Recommender.from_dict(model.recommendations_)
        #: Scored beside the live model; its scores are published, never acted on.
        self.shadow = shadow
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")
        self._failed_bundles: set[Path] = set()

    def call(self) -> ModelCall:
        """The model call for one batch: the models in use now, even if a reload swaps them meanwhile."""
        model, shadow, metrics, executor = self.model, self.shadow, self.metrics, self.executor
        recommender = self.recommender

        async def infer(features: Any) -> Inference:
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            inference = await loop.run_in_executor(executor, _score, model, shadow, features)
            metrics.scoring_seconds.observe(time.perf_counter() - started)
            metrics.batch_users.observe(len(features))
            return inference

        meta = model.meta_
        silence_days = meta.max_silence_days if meta is not None else 120.0
        return ModelCall(
            infer,
            model.version,
            recommender,
            shadow.version if shadow is not None else None,
            horizon_ms=int((meta.horizon_days if meta is not None else 30.0) * DAY_MS),
            max_silence_ms=None if silence_days is None else int(silence_days * DAY_MS),
        )

    async def maybe_reload(self) -> None:
        """Load the newest bundle under the model path if it is not the one in use.

        The new model is loaded and warmed in the scoring thread, then swapped in
        between two batches, so no event waits or is lost. A bundle that fails to
        load is logged and counted, and the running model stays.
        """
        current = self.model.meta_.path if self.model.meta_ is not None else None
        try:
            newest = resolve_bundle(self.model_path)
        except BundleError as exc:
            log.error("model reload: %s; keeping model %s", exc, self.model.version)
            self.metrics.model_reloads.labels("failed").inc()
            return
        if newest == current or newest in self._failed_bundles:
            return
        candidate = ChurnModel(newest, device=self.model.device)
        loop = asyncio.get_running_loop()
        try:
            recommender = await loop.run_in_executor(self.executor, _load, candidate)
        except BundleError as exc:
            self._failed_bundles.add(newest)
            log.error("model reload: %s; keeping model %s", exc, self.model.version)
            self.metrics.model_reloads.labels("failed").inc()
            return
        old = self.model
        self.model, self.recommender = candidate, recommender
        self.metrics.model_info.labels(old.version, old.device_name_ or "cpu").set(0)
        self.metrics.model_info.labels(candidate.version, candidate.device_name_ or "cpu").set(1)
        self.metrics.model_reloads.labels("loaded").inc()
        log.info("model reloaded: %s -> %s (%s)", old.version, candidate.version, newest)


def _load(model: ChurnModel) -> Recommender:
    """Load a bundle and build the recommender from its co-purchase table (in the scoring thread)."""
    model.load()
    return Recommender.from_dict(model.recommendations_)


def _score(model: ChurnModel, shadow: ChurnModel | None, features: Any) -> Inference:
    """Churn risk, coupon uplift and shadow risk of a batch (in the scoring thread)."""
    shadow_risks = shadow.score_many(features) if shadow is not None else None
    return Inference(model.score_many(features), model.uplift_many(features), shadow_risks)
