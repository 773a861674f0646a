"""Drift stage: a model call's event-triggered rows counted into the bundle's reference bins.

Only rows scored after an event: the reference holds features as of an event
(see ``training.drift_reference``); a silence re-score, days after the last
event, is a different population by design.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retention_model.monitoring.drift import FeatureReference
from retention_model.pipeline.records import BatchCounts

__all__ = ["count_bins"]


def count_bins(counts: BatchCounts, reference: FeatureReference, features: np.ndarray, triggers: Sequence[str]) -> None:
    """Add the event-triggered rows of ``features`` to the batch's bin counts."""
    rows = features[np.fromiter((t == "event" for t in triggers), dtype=bool, count=len(triggers))]
    if len(rows) == 0:
        return
    bins = reference.bin_counts(rows)
    if counts.feature_bins is None or counts.feature_reference is not reference:
        counts.feature_bins, counts.feature_reference, counts.feature_rows = bins, reference, 0
    else:
        counts.feature_bins += bins
    counts.feature_rows += len(rows)
