"""Retention by day after the decision: treated vs holdout, with the n behind each point."""

from __future__ import annotations

from pathlib import Path

import pytest

from retention_model.events import Event, EventType
from tests.unit.test_effect_notes import DAY, T0, decision
from training.effect import effect_report, write_effect_report


def purchase(user: str, day: float) -> Event:
    return Event(f"p-{user}-{day}", user, EventType.PURCHASE, T0 + int(day * DAY), price=5.0)


def test_the_curve_shows_when_each_group_came_back_and_how_many_count() -> None:
    treated = [f"t{i}" for i in range(40)]
    holdout = [f"h{i}" for i in range(40)]
    decisions = [decision(u, 0, "sent") for u in treated] + [decision(u, 0, "held_out") for u in holdout]
    late = decision("late", 25, "sent")  # decided on day 25: counts up to day 5 only (the stream ends on day 30)
    events = [purchase(u, 3) for u in treated[:30]] + [purchase(u, 10) for u in holdout[:20]]
    events += [purchase("late", 28), Event("end", "x", EventType.VIEW, T0 + 30 * DAY)]

    report = effect_report([*decisions, late], events, horizon_days=30)

    curve = {point["day"]: point for point in report["retention_curve"]}
    assert len(curve) == 30
    assert curve[2]["treated_retention"] == 0.0 and curve[2]["treated_users"] == 41
    assert curve[3]["treated_retention"] == pytest.approx(31 / 41)  # the late user bought on their third day
    assert curve[9]["holdout_retention"] == 0.0
    assert curve[10]["holdout_retention"] == 0.5 and curve[10]["holdout_users"] == 40
    assert curve[6]["treated_users"] == 40  # the late decision's sixth day has not passed
    assert curve[30]["uplift"] == pytest.approx(30 / 40 - 20 / 40)
    low, high = curve[30]["uplift_ci95"]
    assert low < 0.25 < high
    ci_low, ci_high = curve[10]["holdout_ci95"]
    assert 0.0 <= ci_low < 0.5 < ci_high <= 1.0


def test_the_report_files_carry_the_curve(tmp_path: Path) -> None:
    decisions = [decision("a", 0, "sent"), decision("b", 0, "held_out")]
    events = [purchase("a", 2), Event("end", "x", EventType.VIEW, T0 + 30 * DAY)]
    write_effect_report(effect_report(decisions, events, horizon_days=30), tmp_path)
    markdown = (tmp_path / "effect.md").read_text()
    assert "| 7 | 100.0% (1) | 0.0% (1) |" in markdown
    assert "| 30 |" in markdown


def test_the_qini_curve_rises_above_random_when_the_riskiest_respond(tmp_path: Path) -> None:
    """High-risk users come back when treated and not otherwise; low-risk ones buy either way."""
    decisions, events = [], []
    for i in range(80):
        user, high, treated = f"u{i}", i < 40, i % 2 == 0
        record = decision(user, 0, "sent" if treated else "held_out")
        record["risk"] = 0.9 - i / 1000 if high else 0.2 - i / 1000
        decisions.append(record)
        if (high and treated) or not high:
            events.append(purchase(user, 5))
    events.append(Event("end", "x", EventType.VIEW, T0 + 40 * DAY))

    report = effect_report(decisions, events, 30)
    qini = {round(point["share"], 2): point for point in report["qini_curve"]}

    assert qini[0.5]["users"] == 40 and qini[0.5]["incremental_retained"] == pytest.approx(20.0)
    assert qini[1.0]["incremental_retained"] == pytest.approx(20.0)  # the low-risk half adds nothing
    assert qini[0.5]["random"] == pytest.approx(10.0)
    assert qini[0.5]["incremental_retained"] > qini[0.5]["random"]

    written = write_effect_report(report, tmp_path)
    assert tmp_path / "effect-qini.png" in written and (tmp_path / "effect-qini.png").stat().st_size > 1000
    assert "![Qini curve, riskiest first, beside random](effect-qini.png)" in (tmp_path / "effect.md").read_text()


def test_without_a_qini_curve_no_qini_plot_is_drawn(tmp_path: Path) -> None:
    decisions = [decision("a", 0, "sent")]  # no holdout: no incremental figure to draw
    write_effect_report(effect_report(decisions, [Event("end", "x", EventType.VIEW, T0 + 30 * DAY)], 30), tmp_path)
    assert not (tmp_path / "effect-qini.png").exists()
    assert "effect-qini.png" not in (tmp_path / "effect.md").read_text()
