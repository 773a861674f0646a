"""`retention report model` from a file of outcome records: the figures, per version, the holdout, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from retention_model.monitoring.quality import live_quality, quality_report
from streams.cli import main


def outcome(version: str, risk: float, churned: bool, day: int, holdout: bool = False) -> dict[str, object]:
    return {
        "schema": "retention.outcome/v1",
        "user_id": f"u{day}",
        "model_version": version,
        "risk": risk,
        "tier": "high" if risk >= 0.7 else "low",
        "holdout": holdout,
        "churned": churned,
        "resolved_at": f"2025-03-{day:02d}T00:00:00.000Z",
    }


OUTCOMES = [
    outcome("v1", 0.9, True, 1),
    outcome("v1", 0.2, False, 2, holdout=True),
    outcome("v1", 0.8, False, 3, holdout=True),
    outcome("v2", 0.75, True, 20),
    outcome("v2", 0.1, False, 21),
    outcome("v2", 0.3, True, 22),
]


def test_the_report_splits_by_version_and_holdout_and_windows_on_resolution_time() -> None:
    report = quality_report(OUTCOMES)
    assert report["model_live"]["n"] == 6
    v2 = live_quality([True, False, True], [0.75, 0.1, 0.3], [True, False, False])
    assert report["by_version"]["v2"] == v2.as_dict()
    assert report["holdout"]["n"] == 2
    assert sum(b["n"] for b in report["calibration"]) == 6
    # The 0.7-0.8 bin holds 0.75 alone (0.8 falls in the next): one churned of one.
    assert {"risk_from": 0.7, "risk_to": 0.8, "n": 1, "mean_risk": 0.75, "churn_rate": 1.0} in report["calibration"]
    # Ten days before the latest (22 March): the v1 outcomes of early March fall out.
    assert set(quality_report(OUTCOMES, window_days=10)["by_version"]) == {"v2"}


def test_the_command_prints_markdown_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "outcomes.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps(o) for o in OUTCOMES) + b"\n")
    out = tmp_path / "model.json"
    plot = tmp_path / "model.png"
    assert main(["report", "model", "--outcomes", str(source), "--json", str(out), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "| v2 | 3 |" in printed and "| holdout only | 2 |" in printed
    # Without --events, no PSI: the key is there, empty.
    assert json.loads(out.read_text()) == json.loads(json.dumps({**quality_report(OUTCOMES), "feature_psi": None}))
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_lift_by_decile_ranks_by_risk() -> None:
    report = quality_report(OUTCOMES)
    # Six outcomes in ten groups: the first six hold one each, highest risk first (0.9, 0.8, 0.75, ...).
    first = report["lift_by_decile"][:3]
    assert [d["churn_rate"] for d in first] == [1.0, 0.0, 1.0]
    assert first[0]["lift"] == pytest.approx(1 / (3 / 6))
