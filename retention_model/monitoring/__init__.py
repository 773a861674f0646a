"""Watching the model in production: feature drift against the bundle's training reference."""

from __future__ import annotations

from retention_model.monitoring.drift import (
    DEFAULT_BINS,
    EXTRAS_KEY,
    PSI_ALERT,
    DriftWindow,
    FeatureReference,
    bundle_reference,
    psi,
)

__all__ = ["DEFAULT_BINS", "EXTRAS_KEY", "PSI_ALERT", "DriftWindow", "FeatureReference", "bundle_reference", "psi"]
