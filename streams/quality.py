"""Live model quality in the worker: resolved outcomes into per-version windows, figures out as gauges.

The pipeline resolves sampled scores (:mod:`retention_model.pipeline.outcomes`);
this adapter counts them, keeps a sliding event-time window per model version
(:class:`~retention_model.monitoring.quality.QualityWindow`) and sets the
``retention_model_live_*`` gauges beside the ``retention_model_test_*`` figures
the bundle recorded at training time, so an alert can compare the two.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from retention_model.features.state import DAY_MS
from retention_model.model.scorer import ChurnModel
from retention_model.monitoring.effect import EffectWindow
from retention_model.monitoring.quality import QualityWindow
from retention_model.pipeline.records import BatchCounts
from streams.metrics import Metrics

__all__ = ["MAX_VERSIONS", "QualityMonitor"]

#: Model versions with a window at once; the one longest without an outcome goes first
#: (after a few reloads, the oldest versions' scores have all resolved).
MAX_VERSIONS = 4
#: The figures sort the whole window: at most once a second, not on every batch.
REFRESH_S = 1.0
#: The tier whose lift is reported.
TOP_TIER = "high"


class QualityMonitor:
    """Per-version quality windows over ``window_days`` of event time, exported as gauges."""

    def __init__(self, metrics: Metrics, window_days: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.span_ms = int(window_days * DAY_MS)
        self.clock = clock
        self.windows: dict[str, QualityWindow] = {}
        #: Every version's outcomes by policy group: the live effect (see :mod:`retention_model.monitoring.effect`).
        self.effect = EffectWindow(self.span_ms)
        self._dirty: set[str] = set()
        self._refreshed = float("-inf")
        self._test_set: set[str] = set()

    def model(self, model: ChurnModel) -> None:
        """Export the test figures the live bundle recorded (once per version)."""
        version = model.version
        if version in self._test_set or model.meta_ is None:
            return
        self._test_set.add(version)
        gauges = {
            "roc_auc": self.metrics.model_test_roc_auc,
            "brier": self.metrics.model_test_brier,
            "ece": self.metrics.model_test_ece,
        }
        for name, value in model.meta_.test_figures.items():
            gauges[name].labels(version).set(value)

    def record(self, counts: BatchCounts) -> None:
        """Count a batch's outcomes, add them to their versions' windows, refresh the figures now and then."""
        metrics = self.metrics
        if counts.outcomes_pending is not None:
            metrics.outcomes_pending.set(counts.outcomes_pending)
        if counts.outcome_users is not None:
            metrics.outcome_users.set(counts.outcome_users)
        if counts.outcome_left_silent:
            metrics.outcome_users_left_silent.inc(counts.outcome_left_silent)
        for outcome in counts.resolved:
            score = outcome.score
            metrics.outcomes.labels("churned" if outcome.churned else "retained").inc()
            window = self.windows.get(score.model_version)
            if window is None:
                window = self._new_window(score.model_version)
            window.add(score.due_ms, score.risk, outcome.churned, score.tier == TOP_TIER)
            if not score.shadow:  # the effect is the live model's policy at work
                self.effect.add(score.due_ms, score.holdout, outcome.churned)
            self._dirty.add(score.model_version)
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        """Set the gauges of the versions with new outcomes (at most once per :data:`REFRESH_S` unless forced)."""
        now = self.clock()
        if not self._dirty or (not force and now - self._refreshed < REFRESH_S):
            return
        self._refreshed = now
        metrics = self.metrics
        for version in sorted(self._dirty):
            figures = self.windows[version].figures()
            metrics.model_live_outcomes.labels(version).set(figures.n)
            for gauge, value in (
                (metrics.model_live_roc_auc, figures.roc_auc),
                (metrics.model_live_brier, figures.brier),
                (metrics.model_live_ece, figures.ece),
                (metrics.model_live_top_tier_lift, figures.top_tier_lift),
            ):
                if value is not None:
                    gauge.labels(version).set(value)
        self._dirty.clear()
        self._refresh_effect()

    def _refresh_effect(self) -> None:
        effect, metrics = self.effect.figures(), self.metrics
        metrics.effect_outcomes.labels("eligible").set(effect.n_eligible)
        metrics.effect_outcomes.labels("holdout").set(effect.n_holdout)
        for group, share in (("eligible", effect.retained_eligible), ("holdout", effect.retained_holdout)):
            if share is not None:
                metrics.effect_retained_share.labels(group).set(share)
        if effect.uplift is not None:
            for bound, value in (("estimate", effect.uplift), ("low", effect.ci_low), ("high", effect.ci_high)):
                metrics.effect_uplift.labels(bound).set(value)

    def _new_window(self, version: str) -> QualityWindow:
        if len(self.windows) >= MAX_VERSIONS:
            stalest = min(self.windows, key=lambda v: self.windows[v].end_ms)
            del self.windows[stalest]
            self._dirty.discard(stalest)
            for gauge in (
                self.metrics.model_live_roc_auc,
                self.metrics.model_live_brier,
                self.metrics.model_live_ece,
                self.metrics.model_live_top_tier_lift,
                self.metrics.model_live_outcomes,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(stalest)
        window = self.windows[version] = QualityWindow(self.span_ms)
        return window
