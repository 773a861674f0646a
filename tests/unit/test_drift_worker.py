"""Drift in the worker: the bundle's reference with each model call, PSI gauges, old bundles."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import numpy as np
import orjson
import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from retention_model.events import Event, EventType, encode_event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.model.scorer import ChurnModel
from retention_model.monitoring.drift import EXTRAS_KEY, FeatureReference
from retention_model.pipeline.records import BatchCounts, Inference, ModelCall
from streams import metrics as metrics_module
from streams.drift import DriftMonitor
from streams.processor import BatchProcessor
from streams.settings import BUNDLED_MODEL, Settings

T0 = 1_735_689_600_000


def reference(seed: int) -> FeatureReference:
    rng = np.random.default_rng(seed)
    return FeatureReference.fit(rng.poisson(2.0, size=(2000, len(FEATURE_NAMES))).astype(float), FEATURE_NAMES)


class FakeModel:
    """Stands in for ChurnModel: a version, bundle metadata, fixed risks."""

    recommendations_ = None
    device = "cpu"
    device_name_ = None

    def __init__(self, version: str, extras: dict[str, Any]) -> None:
        self.version = version
        self.meta_ = SimpleNamespace(
            extras=extras, feature_names=FEATURE_NAMES, horizon_days=30.0, max_silence_days=120.0, test_figures={}
        )

    def score_many(self, features: np.ndarray) -> np.ndarray:
        return np.full(len(features), 0.5)

    def uplift_many(self, features: np.ndarray) -> None:
        return None


async def _infer(features: np.ndarray) -> Inference:
    return Inference(np.zeros(len(features)))


def call_for(model: FakeModel) -> ModelCall:
    return ModelCall(_infer, model.version)


def gauge(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_psi_gauges_appear_once_a_slice_is_in_and_clear_on_a_bundle_without_a_reference(seed: int) -> None:
    registry = CollectorRegistry()
    monitor = DriftMonitor(metrics_module.create(registry), window=400)  # slices of 100 scores
    with_ref = FakeModel("m1", {EXTRAS_KEY: reference(seed).to_dict()})
    call = monitor.with_reference(call_for(with_ref), with_ref)  # type: ignore[arg-type]
    assert call.reference is not None and call.reference.names == FEATURE_NAMES
    shifted = np.full((60, len(FEATURE_NAMES)), 9.0)
    shifted[:, 0] = np.random.default_rng(seed + 1).poisson(2.0, size=60)  # the first feature does not move

    def batch(rows: np.ndarray) -> BatchCounts:
        ref = call.reference
        assert ref is not None
        return BatchCounts(feature_bins=ref.bin_counts(rows), feature_rows=len(rows), feature_reference=ref)

    monitor.record(batch(shifted))
    assert gauge(registry, "retention_drift_window_scores") == 60
    assert gauge(registry, "retention_feature_psi", feature=FEATURE_NAMES[1]) is None  # filling
    monitor.record(batch(shifted))
    top = gauge(registry, "retention_feature_psi_max")
    assert top is not None and top > 1.0
    each = [gauge(registry, "retention_feature_psi", feature=name) for name in FEATURE_NAMES]
    assert max(each[1:]) == pytest.approx(top)  # type: ignore[type-var]
    assert min(each[1:]) > 1.0  # type: ignore[type-var, operator]
    assert each[0] is not None and each[0] < 0.25

    old = FakeModel("m0", {})
    assert monitor.with_reference(call_for(old), old).reference is None  # type: ignore[arg-type]
    assert gauge(registry, "retention_feature_psi", feature=FEATURE_NAMES[1]) is None
    assert gauge(registry, "retention_feature_psi_max") == 0.0


def test_a_bundle_without_a_reference_says_so_once_and_a_malformed_one_is_off_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = DriftMonitor(metrics_module.create(CollectorRegistry()), window=400)
    old = FakeModel("m0", {})
    broken = FakeModel("m9", {EXTRAS_KEY: {"features": {}}})
    with caplog.at_level(logging.INFO, logger="streams.drift"):
        for _ in range(3):
            assert monitor.with_reference(call_for(old), old).reference is None  # type: ignore[arg-type]
            assert monitor.with_reference(call_for(broken), broken).reference is None  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    assert sum("m0 has no feature reference" in line for line in lines) == 1
    assert sum("m9: its feature reference is malformed" in line for line in lines) == 1


def test_drift_off_passes_no_reference(seed: int) -> None:
    monitor = DriftMonitor(metrics_module.create(CollectorRegistry()), window=0)
    model = FakeModel("m1", {EXTRAS_KEY: reference(seed).to_dict()})
    assert monitor.with_reference(call_for(model), model).reference is None  # type: ignore[arg-type]


def test_the_worker_counts_a_batch_into_the_psi_gauges(seed: int) -> None:
    settings = Settings.load(
        {}, {"broker": "127.0.0.1:1", "replay": "true", "partitions": 1, "app_id": "t-drift", "drift_window": 4}
    )
    app = faust.App(settings.app_id, broker="kafka://127.0.0.1:1", store="memory://")
    registry = CollectorRegistry()
    model = FakeModel("m1", {EXTRAS_KEY: reference(seed).to_dict()})
    made = BatchProcessor(app, settings, model, metrics_module.create(registry))  # type: ignore[arg-type]
    made.output.produce_many = lambda topic, records: None  # type: ignore[method-assign]
    records = [
        SimpleNamespace(
            topic=settings.events_topic,
            partition=0,
            offset=i,
            timestamp=T0 + i,
            key=f"u{i}".encode(),
            value=encode_event(Event(f"e{i}", f"u{i}", EventType.SESSION_START, T0 + i)),
        )
        for i in range(5)
    ]

    async def main() -> None:
        made.output.begin()
        await made.process({TP(settings.events_topic, 0): records})  # type: ignore[dict-item]

    try:
        asyncio.run(main())
    finally:
        made.output.close(timeout_s=0.1)
        made.models.executor.shutdown()
    assert gauge(registry, "retention_drift_window_scores") == 5
    # New users with one session each look nothing like a Poisson(2) reference.
    top = gauge(registry, "retention_feature_psi_max")
    assert top is not None and top > 0.25


def test_a_bundle_from_before_drift_monitoring_loads_and_scores(tmp_path: Path) -> None:
    bundle = tmp_path / "old"
    shutil.copytree(next(p for p in BUNDLED_MODEL.iterdir() if (p / "bundle.json").is_file()), bundle)
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["extras"].pop(EXTRAS_KEY, None)
    (bundle / "bundle.json").write_text(orjson.dumps(meta).decode())
    model = ChurnModel(bundle).load()
    monitor = DriftMonitor(metrics_module.create(CollectorRegistry()), window=400)
    call = ModelCall(_infer, model.version)
    assert monitor.with_reference(call, model).reference is None
    assert len(model.score_many(np.zeros((3, len(FEATURE_NAMES))))) == 3


def test_the_bundled_model_carries_a_feature_reference() -> None:
    model = ChurnModel(BUNDLED_MODEL).load()
    assert model.meta_ is not None
    ref = DriftMonitor(metrics_module.create(CollectorRegistry()), window=400)._reference(model)  # type: ignore[arg-type]
    assert ref is not None and ref.names == FEATURE_NAMES and ref.rows >= 10_000
    assert all(abs(sum(shares) - 1.0) < 1e-3 for shares in ref.shares)
