"""Training on all the history, candidates compared at rolling origins (issue 20).

A log of purchases alone carries recency, frequency and money and nothing else:
there the RFM logistic regression must win the rolling-origin comparison against
a deep model that cannot learn more, and the worker must serve it unchanged.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from retention_model.errors import SettingsError, TrainingDataError
from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS
from retention_model.model.bundle import normalise, read_bundle_meta
from retention_model.model.scorer import ChurnModel
from training.candidates import CANDIDATES, RFM_COLUMNS, apply_calibration
from training.dataset import TrainConfig, build_dataset, parse_cutoff, plan_cutoffs

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def purchase_only_log(users: int, days: int, seed: int) -> list[Event]:
    """Purchases alone, one chance a month per user, the chance set by what they spend.

    Order value (money) and the purchase count (frequency) tell a user's monthly
    chance; nothing else in the history adds to it, so a deep model on every
    feature has only its variance to add. Everyone buys in their first month.
    """
    rng = np.random.default_rng(seed)
    events = []
    for u in range(users):
        price = float(rng.lognormal(math.log(40), 0.8))
        chance = 1 / (1 + math.exp(-1.5 * math.log(price / 40)))
        start = float(rng.uniform(0, 30))
        for month in range(days // 30):
            t = start + month * 30 + float(rng.uniform(0, 30))
            if (month == 0 or rng.random() < chance) and t < days:
                amount = round(price * float(rng.lognormal(0, 0.1)), 2)
                events.append(Event(f"u{u}-{month}", f"u{u}", EventType.PURCHASE, T0 + int(t * DAY_MS), price=amount))
    return sorted(events, key=lambda e: e.ts_ms)


def test_every_closed_cutoff_trains_and_origins_are_spaced() -> None:
    config = TrainConfig(horizon_days=30, cutoff_step_days=14, origins=3, origin_spacing_days=28)
    plan = plan_cutoffs(T0, T0 + 365 * DAY_MS, config)
    assert plan.test == T0 + 335 * DAY_MS and plan.test_labelled
    horizon = 30 * DAY_MS
    # Every cutoff whose labels close by the test cutoff is used: fit, then the latest to calibrate.
    assert all(c + horizon <= plan.test for c in (*plan.fit, *plan.calibration))
    assert plan.calibration == (max(plan.calibration),) and max(plan.fit) < plan.calibration[0]
    # Cutoffs every 14 days back from day 335 to day 41 (day 27 has under 28 days of history):
    # the 19 up to day 293 are labelled by day 335; the last of them calibrates.
    assert plan.fit[0] == T0 + 41 * DAY_MS and len(plan.fit) == 18 and plan.calibration == (T0 + 293 * DAY_MS,)
    ats = [o.at for o in plan.origins]
    assert len(ats) == 3 and all(a - b >= 28 * DAY_MS for a, b in itertools.pairwise(ats))
    for origin in plan.origins:  # nothing an origin learns from is labelled after it
        assert origin.at + horizon <= plan.test
        assert all(c + horizon <= origin.at for c in (*origin.fit, *origin.calibration))


def test_a_given_cutoff_uses_nothing_after_it() -> None:
    config = TrainConfig(horizon_days=30, cutoff_ms=parse_cutoff("2025-08-01"))
    plan = plan_cutoffs(T0, T0 + 365 * DAY_MS, config)
    assert plan.test == parse_cutoff("2025-08-01T00:00:00+00:00")
    assert max(plan.all_cutoffs) == plan.test  # test rows at the cutoff, labelled after it
    assert all(c + 30 * DAY_MS <= plan.test for c in plan.all_cutoffs if c != plan.test)


def test_the_minimum_span_message_is_exact() -> None:
    """Issue 20: 'a 91-day horizon needs at least 392 days' while a 373-day log trained fine."""
    config = TrainConfig(horizon_days=91)
    needed = 28 + 14 * (2 * 7 + 1)  # history, then fit + calibration cutoffs two horizons before the cutoff
    assert needed == 238
    plan_cutoffs(T0, T0 + (needed + 91) * DAY_MS, config)  # exactly enough: trains
    with pytest.raises(TrainingDataError, match=f"training needs {needed} days before the test cutoff"):
        plan_cutoffs(T0, T0 + (needed + 90) * DAY_MS, config)


@pytest.mark.parametrize("text", ["2025-13-01", "yesterday", "2025-01-01T00:00:00"])
def test_a_bad_cutoff_is_one_clear_line(text: str) -> None:
    with pytest.raises(SettingsError, match="cutoff"):
        parse_cutoff(text)


def test_the_silence_filter_is_counted() -> None:
    events = purchase_only_log(60, 200, seed=3)
    cutoffs = [T0 + 150 * DAY_MS]
    kept = build_dataset(events, cutoffs, TrainConfig(max_silence_days=30))
    everyone = build_dataset(events, cutoffs, TrainConfig(max_silence_days=None))
    counts = kept.counts(cutoffs)
    assert counts["removed_silent"] > 0
    assert counts["rows"] + counts["removed_silent"] == everyone.counts(cutoffs)["rows"]


def test_rolling_origins_ship_the_rfm_regression_on_a_purchase_only_log(tmp_path: Path) -> None:
    from training.train import train

    events = purchase_only_log(200, 300, seed=1)
    config = TrainConfig(horizon_days=30, epochs=5, origins=2, max_silence_days=None)
    candidates = tuple(spec for spec in CANDIDATES if spec.name in {"rfm_logistic_regression", "mlp"})
    bundle = train(events, tmp_path / "registry", config, candidates=candidates)
    meta = json.loads((bundle / "bundle.json").read_text())
    selection = meta["metrics"]["selection"]
    assert selection["chosen"] == "rfm_logistic_regression" == meta["extras"]["candidate"]
    means = selection["mean"]
    assert set(means) == {"rfm_logistic_regression", "mlp"}  # every candidate's figures are kept
    assert means["rfm_logistic_regression"]["log_loss"] < means["mlp"]["log_loss"]
    assert len([o for o in selection["origins"] if "candidates" in o]) == 2
    assert meta["calibration"]["method"] == "platt"

    # The worker serves it unchanged: its scores are the regression's, calibrated.
    model = ChurnModel(bundle, device="cpu").load()
    rows = np.abs(np.random.default_rng(0).normal(size=(50, len(meta["feature_names"])))) * 20
    loaded = read_bundle_meta(bundle)
    import keras

    network = keras.saving.load_model(loaded.model_file, compile=False, safe_mode=True)
    weights = network.get_layer("churn").get_weights()
    x = normalise(rows, np.asarray(loaded.mean), np.asarray(loaded.std)).astype(np.float64)
    raw = 1 / (1 + np.exp(-(x[:, RFM_COLUMNS] @ weights[0][:, 0] + weights[1][0])))
    np.testing.assert_allclose(model.score_many(rows), apply_calibration(raw, meta["calibration"]), atol=1e-5)


def test_origins_compare_candidates_on_a_stratified_sample_of_a_large_history() -> None:
    """Issue 20 at scale: an origin's candidates see at most ``selection_max_rows`` fit rows, each share kept."""
    from training.selection import compare_candidates, stratified_sample

    events = purchase_only_log(400, 300, seed=2)
    linear = tuple(spec for spec in CANDIDATES if spec.kind == "linear")
    config = TrainConfig(horizon_days=30, origins=2, max_silence_days=None, selection_max_rows=1500)
    plan = plan_cutoffs(min(e.ts_ms for e in events), max(e.ts_ms for e in events), config)
    data = build_dataset(events, plan.all_cutoffs, config)
    capped = compare_candidates(data, plan, config, linear)
    whole = compare_candidates(data, plan, TrainConfig(**{**config.__dict__, "selection_max_rows": None}), linear)
    assert "1,500" in capped["fit_rows_per_origin"] and whole["fit_rows_per_origin"] == "all"
    for origin, full in zip(capped["origins"], whole["origins"], strict=True):
        available = len(data.at(next(o.fit for o in plan.origins if o.at == parse_cutoff(origin["at"]))).keys)
        assert full["rows"]["fit"] == available and "fit_available" not in full["rows"]
        if available > 1500:
            assert origin["rows"]["fit_available"] == available
            assert abs(origin["rows"]["fit"] - 1500) <= 2 * len(plan.all_cutoffs)  # rounding per stratum
        assert origin["rows"]["scored"] == full["rows"]["scored"]  # every row at the origin is judged
    assert any("fit_available" in o["rows"] for o in capped["origins"])

    fit = data.at(plan.origins[0].fit)
    sample = stratified_sample(fit, 1500, seed=42)
    assert sample.keys == stratified_sample(fit, 1500, seed=42).keys != stratified_sample(fit, 1500, seed=7).keys
    for cutoff in plan.origins[0].fit:  # each cutoff and class keeps its share, to a row
        for churned in (0.0, 1.0):
            share = ((fit.cutoffs == cutoff) & (fit.churn == churned)).sum() * 1500 / len(fit.keys)
            assert abs(((sample.cutoffs == cutoff) & (sample.churn == churned)).sum() - share) <= 0.5
