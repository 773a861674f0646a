"""Drift core: quantile bins, PSI, the sliding window and the pipeline's drift stage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retention_model.monitoring.drift import DriftWindow, FeatureReference, psi
from retention_model.pipeline.drift import count_bins
from retention_model.pipeline.records import BatchCounts


def reference(seed: int) -> FeatureReference:
    rng = np.random.default_rng(seed)
    matrix = np.c_[rng.normal(size=20_000), rng.poisson(0.3, size=20_000), np.zeros(20_000)]
    return FeatureReference.fit(matrix, ["normal", "counts", "constant"])


def test_continuous_features_get_ten_equal_bins_and_mass_points_their_own(seed: int) -> None:
    ref = reference(seed)
    assert len(ref.cuts[0]) == 9
    assert ref.shares[0] == pytest.approx([0.1] * 10, abs=0.002)
    # Poisson(0.3): 0 and 1 are cut points, so 0, 1 and 2+ are the bins.
    assert ref.cuts[1] == (0.0, 1.0)
    assert ref.shares[1] == pytest.approx([math.exp(-0.3), 0.3 * math.exp(-0.3), 1 - 1.3 * math.exp(-0.3)], abs=0.01)
    assert ref.cuts[2] == () and ref.shares[2] == (1.0,)


def test_a_value_on_a_cut_falls_in_the_bin_below_and_outliers_in_the_open_ends() -> None:
    ref = FeatureReference(("x",), ((0.0, 1.0),), ((0.5, 0.3, 0.2),), rows=10)
    counts = ref.bin_counts(np.array([[-5.0], [0.0], [0.5], [1.0], [1.0001], [99.0]]))
    assert counts.tolist() == [[2, 2, 2]]


def test_psi_is_the_textbook_sum_and_zero_for_the_same_shares() -> None:
    expected = [0.5, 0.3, 0.2]
    live = [20, 30, 50]
    by_hand = sum((a / 100 - e) * math.log((a / 100) / e) for a, e in zip(live, expected, strict=True))
    assert psi(expected, live) == pytest.approx(by_hand)
    assert psi(expected, [50, 30, 20]) == pytest.approx(0.0)
    assert psi(expected, [0, 0, 0]) == 0.0
    assert math.isfinite(psi(expected, [100, 0, 0]))  # empty bins are floored, not infinite


def test_same_distribution_is_stable_and_a_shift_is_not(seed: int) -> None:
    ref = reference(seed)
    rng = np.random.default_rng(seed + 1)
    same = np.c_[rng.normal(size=5000), rng.poisson(0.3, size=5000), np.zeros(5000)]
    assert ref.psi(ref.bin_counts(same)).max() < 0.02
    shifted = same + np.array([0.8, 1.0, 0.0])  # PSI about 0.6 for 0.8 sd
    values = ref.psi(ref.bin_counts(shifted))
    assert values[0] > 0.25 and values[1] > 0.25 and values[2] == 0.0


def test_the_json_form_reads_back_and_a_broken_one_says_what_is_wrong(seed: int) -> None:
    ref = reference(seed)
    back = FeatureReference.from_dict(ref.to_dict(), ref.names)
    assert back == ref
    with pytest.raises(ValueError, match="lacks other"):
        FeatureReference.from_dict(ref.to_dict(), [*ref.names, "other"])
    raw = ref.to_dict()
    raw["features"]["counts"]["shares"] = [1.0]
    with pytest.raises(ValueError, match="counts has 2 cuts"):
        FeatureReference.from_dict(raw, ref.names)


def test_the_window_slides_by_slices_and_restarts_on_a_new_reference(seed: int) -> None:
    ref = FeatureReference(("x",), ((0.0,),), ((0.5, 0.5),), rows=10)
    window = DriftWindow(size=400, parts=4)  # slices of 100 rows
    assert window.psi() is None
    window.add(ref, np.array([[100, 0]]), 100)  # a slice of bin 0 only
    for _ in range(4):
        window.add(ref, np.array([[50, 50]]), 100)
    # The first slice slid out: the window holds four balanced slices.
    assert window.rows == 400
    assert window.counts().tolist() == [[200, 200]]  # type: ignore[union-attr]
    assert window.psi() == pytest.approx([0.0])
    window.add(ref, np.array([[10, 0]]), 10)  # a partial slice counts too
    assert window.rows == 410 and window.counts().tolist() == [[210, 200]]  # type: ignore[union-attr]
    other = FeatureReference(("x",), ((0.0,),), ((0.5, 0.5),), rows=10)
    window.add(other, np.array([[0, 7]]), 7)
    assert window.rows == 7 and window.counts().tolist() == [[0, 7]]  # type: ignore[union-attr]


def test_the_drift_stage_counts_only_rows_scored_after_an_event() -> None:
    ref = FeatureReference(("x",), ((0.0,),), ((0.5, 0.5),), rows=10)
    counts = BatchCounts()
    count_bins(counts, ref, np.array([[-1.0], [1.0], [1.0]]), ["event", "silence", "event"])
    count_bins(counts, ref, np.array([[-1.0]]), ["silence"])
    count_bins(counts, ref, np.array([[-2.0]]), ["event"])
    assert counts.feature_rows == 3
    assert counts.feature_reference is ref
    assert counts.feature_bins.tolist() == [[2, 1]]  # type: ignore[union-attr]


def test_the_reference_rows_are_the_offline_features_after_each_event_in_the_window() -> None:
    from retention_model.features.offline import events_by_user, features_at
    from retention_model.features.state import DAY_MS
    from training.drift_reference import ReferenceBuilder
    from training.simulator import SimConfig, simulate

    events = list(simulate(SimConfig(users=60, days=40, seed=3)))
    until = events[-1].ts_ms - 5 * DAY_MS
    builder = ReferenceBuilder(until, days=10)
    for start in range(0, len(events), 700):  # in chunks, as a streamed log arrives
        builder.feed(events[start : start + 700])
    ref = builder.finish()
    assert ref is not None
    points = [(e.user_id, e.ts_ms) for e in events if until - 10 * DAY_MS < e.ts_ms <= until]
    _, matrix = features_at(events_by_user([e for e in events if e.ts_ms <= until]), points)
    assert ref.rows == len(matrix) == len(set(points))
    expected = FeatureReference.fit(matrix.astype(np.float32).astype(np.float64), ref.names)
    assert ref == FeatureReference(expected.names, expected.cuts, expected.shares, expected.rows, ref.source)
