"""`retention evaluate policy --out`: the Qini curve of a ranking, and the report that draws and names them."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import training.uplift
from streams.cli import main
from training.uplift.evaluation import ranked_qini_curve
from training.uplift.report import QINI_PLOT, write_policy_report


def test_the_qini_curve_follows_the_ranking() -> None:
    # Four users: the one the coupon moved (treated, retained) ranked first, then a control, a treated, a control.
    treated = np.array([1, 0, 1, 0])
    retained = np.array([1, 0, 0, 0])
    curve = {p["share"]: p for p in ranked_qini_curve(np.array([4.0, 3.0, 2.0, 1.0]), treated, retained)}
    # Top half: one treated retained, one control not: 1 - 0 * 1/1 = 1; all: 1 - 0 * 2/2 = 1.
    assert (curve[0.5]["incremental_retained"], curve[1.0]["incremental_retained"]) == (1.0, 1.0)
    assert curve[0.5]["random"] == 0.5
    # Reversed, the retained user comes last: the top half (a control, a treated) adds none.
    reversed_curve = {p["share"]: p for p in ranked_qini_curve(np.array([1.0, 2.0, 3.0, 4.0]), treated, retained)}
    assert reversed_curve[0.5]["incremental_retained"] == 0.0


def curve(slope: float) -> list[dict[str, Any]]:
    return [
        {"share": k / 20, "incremental_retained": slope * k, "random": k, "users": k, "treated_users": k}
        for k in range(1, 21)
    ]


def report(hillstrom: dict[str, Any]) -> dict[str, Any]:
    qini = {"qini_coefficient": 0.0123, "uplift_at_30": 0.081, "uplift_overall": 0.05}
    return {
        "random": 40.3,
        "top_risk": 92.9,
        "uplift": 154.8,
        "oracle": 380.8,
        "uplift_vs_top_risk": 1.67,
        "setup": {"coupons": 644, "budget_share": 0.2, "eligible_users": 3221, "churn_model": "v7"},
        "simulation_qini": {"two_model/logistic": qini, "random": qini},
        "simulation_qini_curves": {"top_risk": curve(1.5), "two_model/logistic": curve(2.0)},
        "hillstrom": hillstrom,
    }


def png_width(path: Path) -> int:
    head = path.read_bytes()[:24]
    assert head.startswith(b"\x89PNG")
    return struct.unpack(">I", head[16:20])[0]


def test_the_report_writes_the_qini_plot_and_the_markdown_shows_it(tmp_path: Path) -> None:
    written = write_policy_report(report({"skipped": "no Hillstrom data at x.csv"}), tmp_path / "out")
    assert {p.name for p in written} == {"policy.json", "policy.md", QINI_PLOT}
    markdown = (tmp_path / "out" / "policy.md").read_text()
    assert f"]({QINI_PLOT})" in markdown
    assert "| top risk (the churn model) | 92.9 |" in markdown
    assert "| two_model/logistic | 0.0123, 8.1 pts | n/a | n/a |" in markdown
    assert json.loads((tmp_path / "out" / "policy.json").read_text())["simulation_qini_curves"]["top_risk"]
    one_panel = png_width(tmp_path / "out" / QINI_PLOT)
    # With Hillstrom's curves, a second panel beside the simulation's.
    qini = {"qini_coefficient": 0.0042, "uplift_at_30": 0.09, "uplift_overall": 0.06}
    hillstrom = {
        "visit": {"two_model/logistic": qini},
        "conversion": {"two_model/logistic": qini},
        "qini_curves": {"visit": {"two_model/logistic": curve(1.2)}},
    }
    write_policy_report(report(hillstrom), tmp_path / "both")
    assert png_width(tmp_path / "both" / QINI_PLOT) > 1.5 * one_panel
    assert "| two_model/logistic | 0.0123, 8.1 pts | 0.0042, 9.0 pts | 0.0042, 9.0 pts |" in (
        (tmp_path / "both" / "policy.md").read_text()
    )


def test_the_command_writes_the_report_into_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The evaluation itself (a model, two simulations, eight learners) is test_uplift's; here only what is written.
    monkeypatch.setattr(training.uplift, "evaluate_policy", lambda *args, **kwargs: report({"skipped": "absent"}))
    assert main(["evaluate", "policy", "--out", str(tmp_path / "policy")]) == 0
    assert (tmp_path / "policy" / QINI_PLOT).read_bytes().startswith(b"\x89PNG")
    assert QINI_PLOT in (tmp_path / "policy" / "policy.md").read_text()
