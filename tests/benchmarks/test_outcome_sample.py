"""The outcome sample's memory: bytes per sampled user (with a pending cutoff score), and that it stays bounded."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from retention_model.features.state import DAY_MS
from retention_model.pipeline.outcomes import OutcomeSample, PendingScore

CAPACITY = 100_000
T0 = 1_735_689_600_000
HORIZON = 30 * DAY_MS


def _offer(sample: OutcomeSample, start: int, n: int) -> int:
    """Offer ``n`` scored users; each one taken gets a pending cutoff score (how many were taken)."""
    version = "e01465c0c06e"  # one version string, shared as the worker's model call shares it
    taken = 0
    for i in range(start, start + n):
        user = f"user-{i:07d}"
        key = user.encode()
        if sample.enroll(key, user, T0 + i, HORIZON):
            cutoff = sample.members[key].next_cutoff_ms
            sample.add(key, PendingScore(user, cutoff, HORIZON, 0.5, "high", version, False, "cutoff"))
            taken += 1
    return taken


def test_outcome_sample_bytes_per_sampled_user(bench: Any) -> None:
    """Traced allocation per sampled user with one pending score, at a full sample of 100,000; as many
    users again, some of them outranking members, leave it within a bounded overhead."""
    gc.collect()
    tracemalloc.start()
    sample = OutcomeSample(CAPACITY)
    before = tracemalloc.get_traced_memory()[0]
    _offer(sample, 0, CAPACITY)
    full = tracemalloc.get_traced_memory()[0]
    replaced = _offer(sample, CAPACITY, CAPACITY)  # full: only users outranking the worst member get in
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_user = (full - before) / CAPACITY
    bench("outcomes.bytes_per_sampled_user", per_user, unit="bytes (tracemalloc; 12-character ids, one score)")
    bench("outcomes.bytes_added_when_full", float(after - full), unit="bytes for 100,000 more users offered")
    assert len(sample.members) == CAPACITY and len(sample) == CAPACITY and 0 < replaced < CAPACITY
    assert after - full < 0.35 * (full - before)  # heaps hold at most twice the members before compaction
