"""The outcome sample's memory: bytes per pending score, and that a full sample stops growing."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from retention_model.features.state import DAY_MS
from retention_model.pipeline.outcomes import OutcomeSample, PendingScore

CAPACITY = 100_000
T0 = 1_735_689_600_000


def _offer(sample: OutcomeSample, start: int, n: int) -> None:
    version = "e01465c0c06e"  # one version string, shared as the worker's model call shares it
    for i in range(start, start + n):
        user = f"user-{i:07d}"
        sample.offer(user.encode(), PendingScore(user, T0 + i, 30 * DAY_MS, 0.5, "high", version, False, "event"))


def test_outcome_sample_bytes_per_pending_score(bench: Any) -> None:
    """Traced allocation per pending score at a full sample of 100,000; offers past the bound add nothing."""
    gc.collect()
    tracemalloc.start()
    sample = OutcomeSample(CAPACITY)
    before = tracemalloc.get_traced_memory()[0]
    _offer(sample, 0, CAPACITY)
    full = tracemalloc.get_traced_memory()[0]
    _offer(sample, CAPACITY, CAPACITY)  # the sample is full: every one of these is skipped
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_score = (full - before) / CAPACITY
    bench("outcomes.bytes_per_pending_score", per_score, unit="bytes (tracemalloc; 12-character user ids)")
    bench("outcomes.bytes_added_when_full", float(after - full), unit="bytes for 100,000 offers to a full sample")
    assert len(sample) == CAPACITY and sample.skipped == CAPACITY
    assert after - full < 0.01 * (full - before)
