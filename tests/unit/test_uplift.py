"""Uplift learners, the campaign simulation's ground truth, and the effect report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import in_holdout, iso_ms
from training.effect import effect_report, write_effect_report
from training.simulator import SimConfig
from training.uplift import (
    APPROACHES,
    BASES,
    CampaignConfig,
    fit_served_uplift,
    fit_uplift,
    qini,
    read_treatment_log,
    simulate_campaign,
    write_treatment_log,
)

HILLSTROM = Path(__file__).resolve().parents[3] / "shared" / "data" / "hillstrom" / "hillstrom.csv"


@pytest.fixture(scope="module")
def campaign():  # type: ignore[no-untyped-def]
    return simulate_campaign(SimConfig(users=1200, seed=5), CampaignConfig(seed=5))


def synthetic_log(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, treated, y, true uplift: the coupon helps only where x0 > 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    treated = rng.random(n) < 0.5
    base = 0.3 + 0.1 * (x[:, 1] > 0)
    effect = np.where(x[:, 0] > 0, 0.3, 0.0)
    y = rng.random(n) < base + treated * effect
    return x, treated, y, effect


def test_qini_is_zero_for_random_order_and_highest_for_the_true_order() -> None:
    x, treated, y, effect = synthetic_log(20_000, 1)
    truth = qini(effect + 1e-6 * x[:, 2], treated, y)
    reverse = qini(-effect + 1e-6 * x[:, 2], treated, y)
    random = qini(np.random.default_rng(2).random(len(y)), treated, y)
    assert truth["qini_coefficient"] == pytest.approx(0.075 * 0.25, abs=0.003)  # worked out by hand
    assert abs(random["qini_coefficient"]) < 0.004
    assert reverse["qini_coefficient"] < 0
    assert truth["uplift_at_30"] == pytest.approx(0.3, abs=0.05)
    assert truth["uplift_overall"] == pytest.approx(0.15, abs=0.03)


@pytest.mark.parametrize("approach", APPROACHES)
@pytest.mark.parametrize("base", BASES)
def test_each_learner_finds_who_the_coupon_moves(approach: str, base: str) -> None:
    x, treated, y, _ = synthetic_log(8000, 3)
    predict = fit_uplift(x, treated, y, approach, base)
    x_new, t_new, y_new, effect_new = synthetic_log(8000, 4)
    predicted = predict(x_new)
    assert predicted[effect_new > 0].mean() - predicted[effect_new == 0].mean() > 0.15
    assert qini(predicted, t_new, y_new)["qini_coefficient"] > 0.012


def test_the_served_model_is_plain_numbers_and_picks_its_regularisation_by_qini() -> None:
    x, treated, y, _ = synthetic_log(6000, 5)
    model, cv = fit_served_uplift(x, treated, y)
    assert set(cv) == {"C=0.003", "C=0.01", "C=0.03", "C=0.1", "C=0.5"}
    assert model.treated_coef.shape == (4,)
    assert model.predict(np.array([[2.0, 0, 0, 0]]))[0] > model.predict(np.array([[-2.0, 0, 0, 0]]))[0] + 0.1


def test_campaign_ground_truth_is_consistent_and_driven_by_traits(campaign) -> None:  # type: ignore[no-untyped-def]
    kinds = dict(zip(*np.unique(campaign.kind, return_counts=True)))
    assert set(kinds) == {"persuadable", "sure_thing", "lost_cause", "do_not_disturb"}
    persuadable = campaign.kind == "persuadable"
    assert (campaign.y1[persuadable] & ~campaign.y0[persuadable]).all()
    assert (campaign.true_uplift[campaign.kind == "do_not_disturb"] == -1).all()
    assert np.array_equal(campaign.observed, np.where(campaign.treated, campaign.y1, campaign.y0))
    assert 0.4 < campaign.treated.mean() < 0.6


def test_treatment_logs_round_trip_and_bad_lines_are_named(campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "log.jsonl"
    assert write_treatment_log(campaign, path) == len(campaign.user_ids)
    records = read_treatment_log(path)
    assert [r.treated for r in records] == campaign.treated.tolist()
    assert [r.retained for r in records] == campaign.observed.tolist()
    path.write_text(path.read_text() + '{"user_id": "x", "decision_time": "soon", "treated": true, "retained": 1}\n')
    with pytest.raises(ValueError, match=rf"log.jsonl:{len(records) + 1}: not a treatment record"):
        read_treatment_log(path)


def campaign_stream(campaign, holdout: PolicyConfig) -> tuple[list[dict], list[Event]]:  # type: ignore[no-untyped-def]
    """Decisions (sent or held out by the holdout hash) and the events that follow them."""
    rng = np.random.default_rng(9)
    decisions, events = [], []
    t = campaign.decision_ms
    for user_id, y0, y1 in zip(campaign.user_ids, campaign.y0, campaign.y1):
        treated = not in_holdout(user_id, holdout)
        decision_id = f"d-{user_id}"
        decisions.append(
            {
                "decision_id": decision_id,
                "user_id": user_id,
                "kind": "coupon",
                "action": "sent" if treated else "held_out",
                "tier": "high" if y0 else "medium",
                "event_time": iso_ms(t),
                "intervention": {"offer": {"coupon_value": 10.0}},
            }
        )
        retained = y1 if treated else y0
        if retained:
            when = t + int(rng.uniform(0.1, 29) * DAY_MS)
            if treated and rng.random() < 0.5:
                events.append(
                    Event(f"r-{user_id}", user_id, EventType.COUPON_REDEEM, when - 1, intervention_id=decision_id)
                )
            events.append(Event(f"p-{user_id}", user_id, EventType.PURCHASE, when, price=20.0))
    events.append(Event("end", "someone", EventType.VIEW, t + 40 * DAY_MS))  # the stream has moved past the horizon
    return decisions, events


def test_effect_report_recovers_the_true_uplift_within_its_interval(campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    holdout = replace(PolicyConfig(), holdout_share=0.5)
    decisions, events = campaign_stream(campaign, holdout)
    report = effect_report(decisions, events, horizon_days=30)
    overall = report["groups"]["overall"]
    assert overall["treated_users"] + overall["holdout_users"] == len(campaign.user_ids)
    true_uplift = campaign.true_uplift.mean()
    low, high = overall["uplift_ci95"]
    assert low <= true_uplift <= high
    assert high - low < 0.15  # about 1,000 users: a 95% interval of roughly ±6 points
    assert report["coupons_sent"] == overall["treated_users"]
    redeemed = {e.intervention_id for e in events if e.type is EventType.COUPON_REDEEM}
    assert report["coupons_redeemed"] == len(redeemed) > 0
    assert report["coupon_redemption_rate"] == pytest.approx(len(redeemed) / report["coupons_sent"])
    incremental = overall["incremental_retained"]
    expected_cost = 10.0 * len(redeemed) / incremental if incremental > 0 else None  # no measurable gain: no cost
    assert report["cost_per_retained_user"] == (pytest.approx(expected_cost) if expected_cost else None)
    assert set(report["groups"]) == {"high", "medium", "overall"}
    written = write_effect_report(report, tmp_path / "out")
    assert {p.name for p in written} == {
        "effect.json",
        "effect.md",
        "effect.png",
        "effect-curve.png",
        "effect-qini.png",
    }
    assert "| overall |" in (tmp_path / "out" / "effect.md").read_text()


def test_decisions_still_inside_their_horizon_are_pending_not_counted() -> None:
    t = 1_735_689_600_000
    decision = {
        "decision_id": "d1",
        "user_id": "u1",
        "kind": "recommendation",
        "action": "sent",
        "tier": "medium",
        "event_time": iso_ms(t),
        "intervention": {},
    }
    click = Event("v", "u1", EventType.VIEW, t + DAY_MS, intervention_id="d1")
    report = effect_report([decision], [click], horizon_days=30)
    assert report["decisions_pending"] == 1 and report["decisions_counted"] == 0
    assert report["recommendation_click_through_rate"] == 1.0


@pytest.mark.skipif(not HILLSTROM.is_file(), reason=f"Hillstrom data not found at {HILLSTROM}")
def test_on_hillstrom_the_learners_beat_random_targeting_on_visits() -> None:
    from training.uplift import evaluate_hillstrom

    report = evaluate_hillstrom(HILLSTROM)
    assert report["rows"] == 64_000
    visit = report["visit"]
    for name in ("two_model/logistic", "class_transformation/logistic"):
        assert visit[name]["qini_coefficient"] > visit["random"]["qini_coefficient"] + 0.002
        assert visit[name]["uplift_at_30"] > visit[name]["uplift_overall"]


def test_evaluate_policy_command_writes_the_three_targeting_figures(tmp_path: Path) -> None:
    import json

    from streams.cli import main

    out = tmp_path / "policy.json"
    args = ["evaluate", "policy", "--users", "600", "--hillstrom", str(tmp_path / "absent.csv"), "--json", str(out)]
    assert main([*args, "--out", str(tmp_path / "policy")]) == 0
    report = json.loads(out.read_text())
    assert {"random", "top_risk", "uplift", "oracle", "uplift_vs_top_risk", "hillstrom"} <= set(report)
    assert report["setup"]["coupons"] == round(0.2 * report["setup"]["eligible_users"])
    assert "skipped" in report["hillstrom"]
    # A Qini curve per learner and for the churn model's ranking; all rank the same users, so they end alike.
    curves = report["simulation_qini_curves"]
    assert set(curves) == {"top_risk"} | {f"{a}/{b}" for a in APPROACHES for b in BASES}
    assert len({round(c[-1]["incremental_retained"], 6) for c in curves.values()}) == 1
    assert json.loads((tmp_path / "policy" / "policy.json").read_text()) == report
    assert (tmp_path / "policy" / "policy-qini.png").is_file()


def test_uplift_targeting_retains_more_users_than_top_risk_targeting(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reason the bundle ships an uplift model: on the simulator's ground truth (both
    potential outcomes), its coupons retain more users than coupons sent to the highest risk.

    3,000 users is the smallest population at which this held for every seed tried (12, from
    +16 to +115 per 1,000 coupons at a 10% budget, where the rules differ most; at 1,000 users,
    learning from 2,000, it fails for some seeds). The learner comparison on the side is skipped.
    """
    import training.uplift.evaluation
    from streams.settings import BUNDLED_MODEL

    # no gradient boosting: not what is judged here
    monkeypatch.setattr(training.uplift.evaluation, "BASES", ("logistic",))
    report = training.uplift.evaluate_policy(BUNDLED_MODEL, users=3000, budget_share=0.1, seed=seed)
    assert report["setup"]["coupons"] == round(0.1 * report["setup"]["eligible_users"]) > 200
    assert report["uplift"] >= report["top_risk"] + 10, report  # incremental retained users per 1,000 coupons
    assert report["uplift"] > report["random"] + 30
