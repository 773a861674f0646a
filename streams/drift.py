"""Feature drift in the worker: each batch's bin counts into a sliding window, PSI out as gauges.

The pipeline counts event-triggered rows into the bins of the live bundle's
reference (:mod:`retention_model.monitoring.drift`); this adapter hands it that
reference with each model call, keeps the window and sets the gauges. A bundle
trained before drift monitoring has no reference: drift is then off for it, said
once in the log.
"""

from __future__ import annotations

import dataclasses
import logging

from retention_model.model.scorer import ChurnModel
from retention_model.monitoring.drift import DriftWindow, FeatureReference, bundle_reference
from retention_model.pipeline.records import BatchCounts, ModelCall
from streams.metrics import Metrics

__all__ = ["DriftMonitor"]

log = logging.getLogger(__name__)


class DriftMonitor:
    """PSI per feature over the last ``window`` event-triggered scores (``window`` 0: off)."""

    def __init__(self, metrics: Metrics, window: int, parts: int = 4) -> None:
        self.metrics = metrics
        self.window = DriftWindow(window, parts) if window else None
        self._references: dict[str, FeatureReference | None] = {}

    def with_reference(self, call: ModelCall, model: ChurnModel) -> ModelCall:
        """``call`` (made for ``model``) with the reference its rows are to be counted against."""
        if self.window is None or model.version != call.version:
            return call
        reference = self._reference(model)
        if reference is None:
            if self.window.reference is not None:  # a reload to a bundle without one
                self._clear()
                self.window.reference = None
            return call
        return dataclasses.replace(call, reference=reference)

    def _reference(self, model: ChurnModel) -> FeatureReference | None:
        version = model.version
        if version in self._references:
            return self._references[version]
        meta = model.meta_
        reference = None
        if meta is not None:
            try:
                reference = bundle_reference(meta.extras, meta.feature_names)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("model %s: its feature reference is malformed (%s); drift is off for it", version, exc)
            else:
                if reference is None:
                    log.info(
                        "model %s has no feature reference (trained before drift monitoring): drift is off for it;"
                        " retrain it to turn it on",
                        version,
                    )
        self._references[version] = reference
        return reference

    def record(self, counts: BatchCounts) -> None:
        """Add a batch's counts; once a slice of the window is in, export the PSI figures."""
        window, reference = self.window, counts.feature_reference
        if window is None or reference is None or counts.feature_bins is None:
            return
        if window.reference is not reference:
            self._clear()  # a new bundle: the old figures no longer describe it
        window.add(reference, counts.feature_bins, counts.feature_rows)
        self.metrics.drift_window_scores.set(window.rows)
        if window.rows < window.slice_rows:
            return
        values = window.psi()
        if values is None:
            return
        gauge = self.metrics.feature_psi
        for name, value in zip(reference.names, values.tolist(), strict=True):
            gauge.labels(name).set(value)
        self.metrics.feature_psi_max.set(float(values.max()))

    def _clear(self) -> None:
        self.metrics.feature_psi.clear()
        self.metrics.feature_psi_max.set(0.0)
        self.metrics.drift_window_scores.set(0)
