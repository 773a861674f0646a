"""The worker's quality gauges: outcomes counted, live figures per version beside the bundle's test figures."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from retention_model.features.state import DAY_MS
from retention_model.model.bundle import read_bundle_meta, resolve_bundle
from retention_model.monitoring.effect import EffectWindow
from retention_model.monitoring.quality import roc_auc
from retention_model.pipeline.outcomes import Outcome, PendingScore
from retention_model.pipeline.records import BatchCounts
from streams import metrics as metrics_module
from streams.quality import MAX_VERSIONS, QualityMonitor
from streams.settings import BUNDLED_MODEL

T0 = 1_735_689_600_000


def outcome(version: str, risk: float, churned: bool, scored_ms: int = T0, holdout: bool = False) -> Outcome:
    tier = "high" if risk >= 0.7 else "low"
    score = PendingScore("u", scored_ms, 30 * DAY_MS, risk, tier, version, holdout, "cutoff")
    score.purchased_ms = None if churned else scored_ms + DAY_MS
    return Outcome(b"u", score)


def gauge(registry: CollectorRegistry, name: str, version: str) -> float | None:
    return registry.get_sample_value(name, {"version": version})


def test_outcomes_become_live_figures_per_version() -> None:
    registry = CollectorRegistry()
    metrics = metrics_module.create(registry)
    monitor = QualityMonitor(metrics, window_days=30, clock=iter(range(100)).__next__)
    rows = [(0.9, True), (0.8, True), (0.75, False), (0.3, False), (0.2, True), (0.1, False)]
    counts = BatchCounts(
        resolved=[outcome("v1", r, c) for r, c in rows], outcomes_pending=7, outcome_users=5, outcome_left_silent=2
    )
    counts.resolved.append(outcome("v2", 0.5, True))
    monitor.record(counts)
    assert registry.get_sample_value("retention_outcomes_total", {"outcome": "churned"}) == 4
    assert registry.get_sample_value("retention_outcomes_total", {"outcome": "retained"}) == 3
    assert registry.get_sample_value("retention_outcomes_pending") == 7
    assert registry.get_sample_value("retention_outcome_users") == 5
    assert registry.get_sample_value("retention_outcome_users_left_silent_total") == 2
    labels, risks = [c for _, c in rows], [r for r, _ in rows]
    assert gauge(registry, "retention_model_live_roc_auc", "v1") == pytest.approx(roc_auc(labels, risks))
    assert gauge(registry, "retention_model_live_outcomes", "v1") == 6
    # High tier: 2 of 3 churned, against 3 of 6 in all.
    assert gauge(registry, "retention_model_live_top_tier_lift", "v1") == pytest.approx((2 / 3) / 0.5)
    # One class only: the version's outcomes count, its ROC-AUC is not made up.
    assert gauge(registry, "retention_model_live_outcomes", "v2") == 1
    assert gauge(registry, "retention_model_live_roc_auc", "v2") is None


def test_the_bundles_test_figures_are_exported_beside() -> None:
    registry = CollectorRegistry()
    monitor = QualityMonitor(metrics_module.create(registry), window_days=30)
    meta = read_bundle_meta(resolve_bundle(BUNDLED_MODEL))
    monitor.model(SimpleNamespace(version=meta.version, meta_=meta))  # type: ignore[arg-type]
    test = meta.metrics["test"]
    for name in ("roc_auc", "brier", "ece"):
        assert gauge(registry, f"retention_model_test_{name}", meta.version) == pytest.approx(test[name])


def test_old_versions_windows_and_gauges_go() -> None:
    registry = CollectorRegistry()
    monitor = QualityMonitor(metrics_module.create(registry), window_days=30, clock=iter(range(100)).__next__)
    for i in range(MAX_VERSIONS + 1):
        monitor.record(BatchCounts(resolved=[outcome(f"v{i}", 0.5, True, T0 + i * DAY_MS)]))
    assert len(monitor.windows) == MAX_VERSIONS
    assert gauge(registry, "retention_model_live_outcomes", "v0") is None  # the stalest went
    assert gauge(registry, "retention_model_live_outcomes", f"v{MAX_VERSIONS}") == 1


def test_the_live_effect_is_eligible_against_holdout_over_every_version() -> None:
    registry = CollectorRegistry()
    monitor = QualityMonitor(metrics_module.create(registry), window_days=30, clock=iter(range(100)).__next__)
    # Eligible: 60 of 100 retained (two versions); holdout: 40 of 100.
    resolved = [outcome("v1" if i % 2 else "v2", 0.5, i >= 60, holdout=False) for i in range(100)]
    resolved += [outcome("v1", 0.5, i >= 40, holdout=True) for i in range(100)]
    shadow = [outcome("v3", 0.5, True) for _ in range(50)]  # a shadow model's scores of the same users: not counted
    for item in shadow:
        item.score.shadow = True
    monitor.record(BatchCounts(resolved=resolved + shadow))
    effect = {
        k: registry.get_sample_value("retention_effect_uplift", {"bound": k}) for k in ("estimate", "low", "high")
    }
    assert effect["estimate"] == pytest.approx(0.2)
    half = 1.959964 * (0.6 * 0.4 / 100 + 0.4 * 0.6 / 100) ** 0.5
    assert (effect["low"], effect["high"]) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    for group, n, share in (("eligible", 100, 0.6), ("holdout", 100, 0.4)):
        assert registry.get_sample_value("retention_effect_outcomes", {"group": group}) == n
        assert registry.get_sample_value("retention_effect_retained_share", {"group": group}) == pytest.approx(share)


def test_the_effect_window_keeps_the_last_span_of_event_time() -> None:
    window = EffectWindow(span_ms=10 * DAY_MS)
    window.add(0, holdout=True, churned=False)
    window.add(5 * DAY_MS, holdout=False, churned=True)
    assert window.figures().n_holdout == 1
    window.add(10 * DAY_MS, holdout=False, churned=False)  # the first falls out: 10 days before the latest
    figures = window.figures()
    assert (figures.n_holdout, figures.n_eligible, figures.retained_eligible) == (0, 2, 0.5)
    assert figures.uplift is None  # no holdout in the window: no effect is made up
