"""`retention report model`'s newer figures: cumulative gains, scores over time, PSI by feature from a log.

Gains and the time buckets are checked on hand-made outcomes with known answers;
PSI on a small simulated log against a reference drawn from that same log (the
same rows, so zero) and from the log with doubled prices (the money features only).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from retention_model.events import Event, encode_event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.monitoring.drift import PSI_ALERT, FeatureReference
from retention_model.monitoring.quality import cumulative_gains, quality_report, score_distribution
from streams.cli import main
from streams.settings import BUNDLED_MODEL
from tests.unit.test_drift_pipeline import MONEY, PER_ORDER, shift_prices
from tests.unit.test_report_model import OUTCOMES
from training.drift_reference import feature_reference
from training.model_report import log_feature_psi
from training.simulator import SimConfig, simulate


def ms(day: str) -> int:
    return round(datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp() * 1000)


def test_gains_at_each_decile_are_the_share_of_churners_among_the_riskiest() -> None:
    # Ten scores, riskiest first; churners at ranks 1, 2, 4 and 10 (four in all).
    churned = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 1])
    gains = cumulative_gains(churned, np.linspace(0.95, 0.05, 10))
    assert [g["gain"] for g in gains] == [0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 1.0]
    assert [g["random"] for g in gains] == pytest.approx([k / 10 for k in range(1, 11)])
    assert [g["churners"] for g in gains][:4] == [1, 2, 2, 3]
    # The ranking is by risk, not input order: shuffled rows give the same curve.
    order = np.random.default_rng(3).permutation(10)
    assert cumulative_gains(churned[order], np.linspace(0.95, 0.05, 10)[order]) == gains
    assert all(g["gain"] is None for g in cumulative_gains(np.zeros(10), np.linspace(1, 0, 10)))


def test_scores_over_a_short_span_are_bucketed_per_day_with_their_quantiles() -> None:
    risks = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.7])
    churned = np.array([1, 0, 0, 0, 1, 1, 1])
    times = np.array([ms("2025-03-04")] * 5 + [ms("2025-03-06")] * 2)
    out = score_distribution(churned, risks, times)
    assert out["period"] == "day"
    first, second = out["buckets"]
    # numpy's linear quantiles of 0.1..0.5: p10 = 0.1 + 0.4 * 0.1, p90 = 0.1 + 3.6 * 0.1.
    assert first == {
        "start": "2025-03-04",
        "n": 5,
        "mean_risk": 0.3,
        "p10": 0.14,
        "p50": 0.3,
        "p90": 0.46,
        "churn_rate": 0.4,
    }
    assert (second["start"], second["n"], second["mean_risk"], second["churn_rate"]) == ("2025-03-06", 2, 0.8, 1.0)


def test_a_long_span_is_bucketed_per_week_from_monday() -> None:
    # 2025-03-02 is a Sunday, 03-03 a Monday; 03-09 the Sunday after; 03-31 a Monday 4 weeks on.
    days = ["2025-03-02", "2025-03-03", "2025-03-09", "2025-03-31"]
    out = score_distribution(np.zeros(4), np.full(4, 0.5), np.array([ms(d) for d in days]))
    assert out["period"] == "week"
    assert [(b["start"], b["n"]) for b in out["buckets"]] == [("2025-02-24", 1), ("2025-03-03", 2), ("2025-03-31", 1)]
    # Asked per day, the same span has a bucket per day with scores.
    daily = score_distribution(np.zeros(4), np.full(4, 0.5), np.array([ms(d) for d in days]), period="day")
    assert [b["start"] for b in daily["buckets"]] == days


def test_the_report_buckets_by_scored_at_where_the_records_have_it() -> None:
    assert quality_report(OUTCOMES)["score_distribution"]["time"] == "resolved_at"  # the fixture lacks scored_at
    scored = [{**o, "scored_at": "2025-02-01T00:00:00.000Z"} for o in OUTCOMES]
    over_time = quality_report(scored)["score_distribution"]
    assert over_time["time"] == "scored_at"
    assert [(b["start"], b["n"]) for b in over_time["buckets"]] == [("2025-02-01", 6)]


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return list(simulate(SimConfig(users=150, days=60, seed=5)))


@pytest.fixture(scope="module")
def reference(events: list[Event]) -> FeatureReference:
    ref = feature_reference(events, max(e.ts_ms for e in events))
    assert ref is not None
    return ref


def test_psi_of_the_log_the_reference_was_drawn_from_is_zero(events: list[Event], reference: FeatureReference) -> None:
    drift = log_feature_psi(events, "sim", "v1", reference)
    assert drift["rows"] == reference.rows
    assert max(f["psi"] for f in drift["features"]) < 1e-3
    assert [f["psi"] for f in drift["features"]] == sorted((f["psi"] for f in drift["features"]), reverse=True)


def test_doubled_prices_raise_the_psi_of_the_money_features_only(
    events: list[Event], reference: FeatureReference
) -> None:
    drift = log_feature_psi(shift_prices(events, 2.0), "sim", "v1", reference)
    above = {f["feature"] for f in drift["features"] if f["psi"] > PSI_ALERT}
    assert PER_ORDER <= above <= MONEY, above ^ PER_ORDER
    assert drift["features"][0]["feature"] in MONEY


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, events: list[Event], reference: FeatureReference) -> Path:
    """Outcomes, the log and a bundle (the shipped one's metadata) whose reference is that log's."""
    root = tmp_path_factory.mktemp("report")
    (root / "outcomes.jsonl").write_text("".join(json.dumps(o) + "\n" for o in OUTCOMES))
    (root / "events.jsonl").write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    shipped = next(BUNDLED_MODEL.glob("*/bundle.json"))
    for name, ref in (("bundle", reference), ("old-bundle", None)):
        meta = json.loads(shipped.read_text())
        meta["extras"].pop("feature_reference")
        if ref is not None:
            meta["extras"]["feature_reference"] = ref.to_dict()
        (root / name).mkdir()
        (root / name / "bundle.json").write_text(json.dumps(meta))
        shutil.copy(shipped.parent / "model.keras", root / name / "model.keras")
    return root


def test_the_command_writes_every_figure_and_the_markdown_names_the_plot(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = files / "out"
    out.mkdir()
    args = ["report", "model", "--outcomes", str(files / "outcomes.jsonl"), "--events", str(files / "events.jsonl")]
    args += ["--model-path", str(files / "bundle"), "--md", str(out / "model.md"), "--json", str(out / "model.json")]
    assert main([*args, "--plot", str(out / "model.png")]) == 0
    assert "wrote" in capsys.readouterr().out
    report = json.loads((out / "model.json").read_text())
    assert {"calibration", "cumulative_gains", "lift_by_decile", "score_distribution"} <= set(report)
    assert {f["feature"] for f in report["feature_psi"]["features"]} == set(FEATURE_NAMES)
    assert "against bundle" in report["feature_psi"]["computed_from"]
    markdown = (out / "model.md").read_text()
    assert "![" in markdown and "](model.png)" in markdown
    for heading in ("| riskiest | churners captured", "Scores per week of `resolved_at`", "PSI by feature: features"):
        assert heading in markdown
    assert (out / "model.png").read_bytes().startswith(b"\x89PNG")


def test_without_events_the_report_says_psi_was_not_computed(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = files / "model.json"
    assert main(["report", "model", "--outcomes", str(files / "outcomes.jsonl"), "--json", str(out)]) == 0
    assert "PSI by feature: not computed (give --events LOG" in capsys.readouterr().out
    assert json.loads(out.read_text())["feature_psi"] is None


def test_a_bundle_without_a_reference_is_refused_in_one_line_before_any_file_is_written(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = files / "refused.json"
    args = ["report", "model", "--outcomes", str(files / "outcomes.jsonl"), "--events", str(files / "events.jsonl")]
    assert main([*args, "--model-path", str(files / "old-bundle"), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no feature reference" in err and len(err.splitlines()) == 1
    assert not out.exists()
