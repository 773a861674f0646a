"""The policy: tiers, cooldowns, suppression rules, caps, budgets, expected value, holdout, payloads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS, UserState, apply_event
from retention_model.policy.budget import BudgetLedger
from retention_model.policy.config import DEFAULT_POLICY_FILE, PolicyConfig, PolicyFileError, load_policy
from retention_model.policy.policy import (
    DECISION_SCHEMA,
    INTERVENTION_SCHEMA,
    Decision,
    decide,
    in_holdout,
    tier_for,
)
from retention_model.policy.recommend import Recommender
from retention_model.policy.recommend_learn import learn_recommendations

T0 = 1_735_689_600_000
CONFIG = PolicyConfig(
    risk_medium=0.5,
    risk_high=0.75,
    coupon_cooldown_days=14,
    recommendation_cooldown_days=3,
    holdout_share=0.0,
    caps_per_user=0,
    suppression_purchased_within_days=0,
)
PROFILE = {"top_categories": ["shoes", "bags"], "lifecycle_stage": "at_risk"}


def buyer() -> UserState:
    state = UserState()
    apply_event(state, Event("e1", "u1", EventType.PURCHASE, T0, price=30.0), 0)
    return state


def run(state: UserState, risk: float, day: float, config: PolicyConfig = CONFIG) -> list[str]:
    """Kinds actually sent."""
    return [d.intervention.kind for d in decisions(state, risk, day, config) if d.action == "sent"]


def decisions(
    state: UserState,
    risk: float,
    day: float,
    config: PolicyConfig = CONFIG,
    user: str = "u1",
    **extra: object,
) -> list[Decision]:
    return decide(  # type: ignore[arg-type]
        risk=risk,
        state=state,
        now_ms=T0 + int(day * DAY_MS),
        model_version="m1",
        reasons=["no purchase for 41 days; usually buys every 12 days"],
        profile=PROFILE,
        config=config,
        user_id=user,
        **extra,
    )


@pytest.mark.parametrize(
    ("risk", "tier"), [(0.1, "low"), (0.5, "medium"), (0.749, "medium"), (0.75, "high"), (1.0, "high")]
)
def test_tiers(risk: float, tier: str) -> None:
    assert tier_for(risk, CONFIG) == tier


def test_low_risk_gets_nothing() -> None:
    assert run(buyer(), 0.2, 1) == []


def test_high_risk_buyer_gets_coupon_and_recommendation_then_cooldowns_hold() -> None:
    state = buyer()
    assert run(state, 0.9, 1) == ["coupon", "recommendation"]
    assert run(state, 0.9, 2) == []  # both cooling down
    assert run(state, 0.9, 4.5) == ["recommendation"]  # 3-day cooldown over
    assert run(state, 0.9, 15) == ["coupon", "recommendation"]  # 14-day cooldown over
    assert state.interventions_sent == 5


def test_high_risk_user_who_never_bought_gets_only_a_recommendation() -> None:
    state = UserState()
    apply_event(state, Event("e1", "u1", EventType.VIEW, T0, category="shoes"), 0)
    assert run(state, 0.95, 1) == ["recommendation"]


def test_intervention_wire_form_and_deterministic_id() -> None:
    state_a, state_b = buyer(), buyer()
    kwargs = dict(
        user_id="u1", risk=0.9, now_ms=T0 + DAY_MS, model_version="m1", reasons=["r"], profile=PROFILE, config=CONFIG
    )
    first = [d.intervention for d in decide(state=state_a, **kwargs)]  # type: ignore[arg-type]
    again = [d.intervention for d in decide(state=state_b, **kwargs)]  # type: ignore[arg-type]
    assert [i.as_dict() for i in first] == [i.as_dict() for i in again]
    coupon = first[0].as_dict()
    assert coupon["schema"] == INTERVENTION_SCHEMA
    assert set(coupon) >= {
        "intervention_id",
        "kind",
        "user_id",
        "tier",
        "risk",
        "model_version",
        "event_time",
        "reasons",
        "offer",
    }
    assert coupon["offer"] == {
        "coupon_value": 10.0,
        "currency": "EUR",
        "min_spend": 30.0,
        "expires_at": "2025-01-16T00:00:00.000Z",
    }
    reco = first[1].as_dict()
    assert reco["recommendation"]["categories"][0] == {"category": "shoes", "rank": 1}
    assert coupon["intervention_id"] != reco["intervention_id"]


def test_bad_tier_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="risk_medium"):
        PolicyConfig(risk_medium=0.9, risk_high=0.5)


def test_every_decision_says_what_and_why() -> None:
    state = buyer()
    made = decisions(state, 0.9, 1)
    assert [(d.action, d.intervention.kind) for d in made] == [("sent", "coupon"), ("sent", "recommendation")]
    again = decisions(state, 0.9, 2)
    assert [d.action for d in again] == ["suppressed", "suppressed"]
    assert again[0].reason == "cooldown: last coupon 1.0 days ago, cooldown 14 days"
    body = again[0].as_dict()
    assert body["schema"] == DECISION_SCHEMA
    assert body["decision_id"] == body["intervention"]["intervention_id"]
    assert body["action"] == "suppressed"


def test_holdout_users_get_decisions_but_nothing_is_sent() -> None:
    config = replace(CONFIG, holdout_share=0.5)
    held = next(f"user-{i}" for i in range(100) if in_holdout(f"user-{i}", config))
    state = buyer()
    made = decisions(state, 0.9, 1, config, user=held)
    assert [d.action for d in made] == ["held_out", "held_out"]
    assert made[0].reason == "control group (50% holdout); high risk"
    assert made[0].rule == "holdout"
    # The control group keeps the treated group's cadence: cooldowns start all the same.
    assert [d.action for d in decisions(state, 0.9, 2, config, user=held)] == ["suppressed", "suppressed"]
    assert state.interventions_sent == 0


def test_suppressed_recommendations_carry_no_items_held_out_ones_carry_what_would_be_sent() -> None:
    """Ranking items is the costliest step per user: done for a message someone gets or a control user
    would have got (the counterfactual the effect report compares), not for one a rule stopped."""
    shop = Recommender(popular={"shoes": [("boot", 9), ("sandal", 4)]})
    state = buyer()
    sent = decisions(state, 0.9, 1, recommender=shop)[1].as_dict()["intervention"]["recommendation"]
    assert [item["item_id"] for item in sent["items"]] == ["boot", "sandal"]
    stopped = decisions(state, 0.9, 2, recommender=shop)[1]
    assert (stopped.action, stopped.rule) == ("suppressed", "cooldown")
    assert stopped.as_dict()["intervention"]["recommendation"] == {
        "strategy": "not_built",
        "items": [],
        "categories": [{"category": "shoes", "rank": 1}, {"category": "bags", "rank": 2}],
        "seed_items": [],
    }
    config = replace(CONFIG, holdout_share=0.5)
    held = next(f"user-{i}" for i in range(100) if in_holdout(f"user-{i}", config))
    control = decisions(buyer(), 0.9, 1, config, user=held, recommender=shop)[1]
    assert control.action == "held_out"
    assert control.intervention.payload["items"] == sent["items"]


def test_holdout_share_is_met_within_one_percent_over_100k_users() -> None:
    config = PolicyConfig(holdout_share=0.10)
    share = sum(in_holdout(f"user-{i}", config) for i in range(100_000)) / 100_000
    assert abs(share - 0.10) <= 0.01


def test_holdout_is_stable_across_processes_and_changes_with_the_salt() -> None:
    import subprocess
    import sys

    config = PolicyConfig(holdout_share=0.10)
    here = [in_holdout(f"user-{i}", config) for i in range(2000)]
    code = (
        "from retention_model.policy.policy import PolicyConfig, in_holdout;"
        "print(''.join('1' if in_holdout(f'user-{i}', PolicyConfig(holdout_share=0.10)) else '0' for i in range(2000)))"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert there == "".join("1" if h else "0" for h in here)
    salted = [in_holdout(f"user-{i}", PolicyConfig(holdout_share=0.10, holdout_salt="other")) for i in range(2000)]
    assert salted != here


# --- the policy file ---------------------------------------------------------------


def test_the_default_policy_file_loads_and_matches_the_built_in_defaults() -> None:
    loaded = load_policy(DEFAULT_POLICY_FILE)
    assert replace(loaded, version="builtin") == PolicyConfig()
    assert loaded.version == "default-2026-11"


def test_a_policy_file_sets_values_by_section(tmp_path: Path) -> None:
    (tmp_path / "optout.txt").write_text("u7\n\nu9\n")
    path = tmp_path / "policy.toml"
    path.write_text(
        'schema = 1\nversion = "spring"\n[coupon]\nvalue = 5\ntiers = ["medium", "high"]\n'
        '[budget]\ndaily_count = 40\n[suppression]\nopt_out_list = "optout.txt"\n'
    )
    config = load_policy(path)
    assert (config.version, config.coupon_value, config.coupon_tiers) == ("spring", 5.0, ("medium", "high"))
    assert config.budget_daily_count == 40 and config.has_budget
    assert config.opted_out_users == {"u7", "u9"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('schema = 1\nversion = "x"\n[coupon]\nvalu = 5\n', "unknown policy key \\[coupon\\] valu"),
        ('schema = 1\nversion = "x"\n[coupon]\nvalue = "ten"\n', "coupon_value must be float"),
        ('schema = 1\nversion = "x"\n[risk]\nmedium = 0.9\nhigh = 0.5\n', "risk_medium <= risk_high"),
        ('schema = 1\nversion = "x"\n[coupon]\ntiers = ["urgent"]\n', "coupon_tiers may only name"),
        ("schema = 1\n[coupon]\nvalue = 5\n", "has no version"),
        ('version = "x"\n', "schema = 1"),
        ("schema = = 1", "not valid TOML"),
        ('schema = 1\nversion = "x"\n[suppression]\nopt_out_list = "missing.txt"\n', "cannot read the opt-out"),
    ],
)
def test_a_bad_policy_file_is_refused_with_the_reason(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(body)
    with pytest.raises(PolicyFileError, match=message):
        load_policy(path)


def test_the_worker_settings_refuse_a_bad_policy_file(tmp_path: Path) -> None:
    from streams.settings import Settings, SettingsError

    path = tmp_path / "policy.toml"
    path.write_text('schema = 1\nversion = "x"\n[holdout]\nshare = 1.5\n')
    with pytest.raises(SettingsError, match=r"RETENTION_POLICY_FILE: .*holdout_share"):
        Settings.load({"RETENTION_POLICY_FILE": str(path)})


# --- suppression rules, caps and budgets -----------------------------------------------


def rules(made: list[Decision]) -> list[tuple[str, str]]:
    return [(d.intervention.kind, d.rule) for d in made]


def test_opted_out_users_get_nothing_by_event_or_by_list() -> None:
    state = buyer()
    apply_event(state, Event("o1", "u1", EventType.OPT_OUT, T0 + 1), 1)
    assert rules(decisions(state, 0.9, 1)) == [("coupon", "opted_out"), ("recommendation", "opted_out")]
    listed = replace(CONFIG, opted_out_users=frozenset({"u2"}))
    assert {d.rule for d in decisions(buyer(), 0.9, 1, listed, user="u2")} == {"opted_out"}
    apply_event(state, Event("o2", "u1", EventType.OPT_IN, T0 + 2), 2)
    assert {d.action for d in decisions(state, 0.9, 1)} == {"sent"}


def test_nothing_right_after_a_purchase() -> None:
    config = replace(CONFIG, suppression_purchased_within_days=2)
    made = decisions(buyer(), 0.9, 1.5, config)
    assert rules(made) == [("coupon", "recent_purchase"), ("recommendation", "recent_purchase")]
    assert made[0].reason == "purchased 1.5 days ago (rule: nothing within 2 days of a purchase)"
    assert {d.action for d in decisions(buyer(), 0.9, 2.5, config)} == {"sent"}


def test_no_second_coupon_while_one_is_unredeemed_and_valid() -> None:
    config = replace(CONFIG, coupon_cooldown_days=1, coupon_expiry_days=10)
    state = buyer()
    assert run(state, 0.9, 1, config) == ["coupon", "recommendation"]
    assert rules(decisions(state, 0.9, 5, config))[0] == ("coupon", "active_coupon")
    apply_event(state, Event("r1", "u1", EventType.COUPON_REDEEM, T0 + 6 * DAY_MS, coupon_id="c"), 2)
    assert run(state, 0.9, 6.5, config) == ["coupon"]  # used up: a new one may go (recommendation cooling)


def test_per_user_cap_holds_within_its_window() -> None:
    config = replace(
        CONFIG, coupon_cooldown_days=0, recommendation_cooldown_days=0, caps_per_user=3, caps_window_days=30
    )
    config = replace(config, suppression_active_coupon=False)
    state = buyer()
    sent = sum(len(run(state, 0.9, 1 + day * 0.1, config)) for day in range(20))
    assert sent == 3
    assert rules(decisions(state, 0.9, 3, config))[0] == ("coupon", "user_cap")
    assert len(run(state, 0.9, 31, config)) == 2  # a new window


def test_budget_caps_suppress_coupons_and_count_money_and_coupons() -> None:
    config = replace(CONFIG, budget_daily_count=3, budget_total_money=50.0, coupon_value=10.0)
    ledger = BudgetLedger(config)
    sent = 0
    for i in range(10):
        made = decisions(buyer(), 0.9, 1, config, user=f"u{i}", budget=ledger)
        sent += sum(d.action == "sent" and d.intervention.kind == "coupon" for d in made)
    assert sent == 3
    assert ledger.spent["day:2025-01-02"] == (30.0, 3)
    refused = decisions(buyer(), 0.9, 1, config, user="x", budget=ledger)[0]
    assert refused.rule == "budget" and "daily count cap reached" in refused.reason
    assert refused.intervention.kind == "coupon"
    for day in (2, 3):
        for i in range(3):
            decisions(buyer(), 0.9, day, config, user=f"d{day}-{i}", budget=ledger)
    assert ledger.spent["total"] == (50.0, 5)  # the total money cap stopped it at 50


def test_budget_slices_of_partitions_never_add_up_past_the_cap() -> None:
    config = replace(CONFIG, budget_daily_money=95.0, coupon_value=10.0)
    store: dict[str, tuple[float, int]] = {}
    slices = [BudgetLedger(config, share=1 / 4, lookup=store.get) for _ in range(4)]
    for i in range(200):
        decisions(buyer(), 0.9, 1, config, user=f"u{i}", budget=slices[i % 4])
    assert sum(s.spent["day:2025-01-02"][0] for s in slices) <= 95.0
    # A restarted worker reads its slice's spend back and stays within it.
    store.update(slices[0].spent)
    again = BudgetLedger(config, share=1 / 4, lookup=store.get)
    assert decisions(buyer(), 0.9, 1, config, user="late", budget=again)[0].rule == "budget"


def test_holdout_users_spend_no_budget_but_are_stopped_by_it() -> None:
    config = replace(CONFIG, holdout_share=0.5, budget_daily_count=1)
    held = [f"user-{i}" for i in range(100) if in_holdout(f"user-{i}", config)]
    ledger = BudgetLedger(config)
    assert decisions(buyer(), 0.9, 1, config, user=held[0], budget=ledger)[0].action == "held_out"
    assert ledger.refusal(T0 + DAY_MS, 10.0) is None


# --- expected-value targeting ------------------------------------------------------------


def test_expected_value_targeting_sends_coupons_only_where_they_pay() -> None:
    config = replace(CONFIG, targeting_mode="expected_value", coupon_value=10.0, coupon_redemption_rate=0.5)
    valuable = {"avg_order_value": 80.0, "purchase_frequency_30d": 1.0}  # 240 over 90 days
    worth = decisions(buyer(), 0.9, 1, config, features=valuable, uplift=0.05)[0]
    assert worth.action == "sent" and worth.intervention.expected_value == pytest.approx(240 * 0.05 - 5)
    assert "expected value 7.00 EUR = value 240 x uplift 0.050 - cost 5.00" in worth.reason
    not_worth = decisions(buyer(), 0.9, 1, config, features=valuable, uplift=0.01)
    assert rules(not_worth) == [("coupon", "expected_value"), ("recommendation", "tier")]
    # Without an uplift model: risk x the policy's default effect.
    assumed = decisions(buyer(), 0.9, 1, config, features=valuable)[0]
    assert assumed.intervention.expected_value == pytest.approx(240 * 0.9 * 0.10 - 5)
    assert assumed.as_dict()["intervention"]["expected_value"] == pytest.approx(16.6)


# --- recommendation payloads -----------------------------------------------------------


def basket(user: str, session: str, items: list[str], t: int) -> list[Event]:
    events = [
        Event(f"{session}-{i}", user, EventType.ADD_TO_CART, t + i, item_id=item, category=item[:2], session_id=session)
        for i, item in enumerate(items)
    ]
    return [*events, Event(f"{session}-p", user, EventType.PURCHASE, t + 99, price=10.0, session_id=session)]


def test_recommendations_blend_co_purchases_of_recent_items_with_category_best_sellers() -> None:
    history = [
        *basket("a", "s1", ["c1-tent", "c1-stove"], T0),
        *basket("b", "s2", ["c1-tent", "c1-stove", "c2-lamp"], T0),
        *basket("c", "s3", ["c1-tent", "c2-lamp"], T0),
        *basket("d", "s4", ["c2-lamp"], T0),
    ]
    learned = learn_recommendations(history)
    assert learned["baskets"] == 4
    assert learned["popular"]["c2"][0] == ["c2-lamp", 3]
    recommender = Recommender.from_dict(learned)
    state = UserState()
    apply_event(state, Event("v", "u", EventType.VIEW, T0, item_id="c1-tent", category="c1"))
    payload = recommender.recommend(state, ["c2"], 5)
    assert payload["seed_items"] == ["c1-tent"]
    ranked = [(item["item_id"], item["because"]) for item in payload["items"]]
    assert ranked[0][1] == "often bought with c1-tent"
    assert {item for item, _ in ranked} == {"c1-stove", "c2-lamp"}
    assert all(item["rank"] == i + 1 for i, item in enumerate(payload["items"]))
    made = decisions(state, 0.6, 1, recommender=recommender)
    assert made[0].intervention.payload["items"][0]["item_id"] in {"c1-stove", "c2-lamp"}


def test_a_user_whose_seeds_changed_gets_a_new_recommendation() -> None:
    """Payloads are remembered per seed items and categories, so a new view must change them."""
    history = [*basket("a", "s1", ["c1-tent", "c1-stove"], T0), *basket("b", "s2", ["c2-lamp", "c2-torch"], T0)]
    recommender = Recommender.from_dict(learn_recommendations(history))
    state = UserState()
    apply_event(state, Event("v1", "u", EventType.VIEW, T0, item_id="c1-tent", category="c1"))
    first = recommender.recommend(state, ["c1"], 5)
    assert recommender.recommend(state, ["c1"], 5) == first
    apply_event(state, Event("v2", "u", EventType.VIEW, T0 + 3_600_000, item_id="c2-lamp", category="c2"))
    second = recommender.recommend(state, ["c1"], 5)
    assert second["seed_items"] == ["c2-lamp", "c1-tent"]
    assert "c2-torch" in [item["item_id"] for item in second["items"]]
    assert recommender.recommend(state, ["c2"], 5)["categories"] == [{"category": "c2", "rank": 1}]


def test_an_orders_lines_are_a_basket_for_co_purchase_without_any_cart_event() -> None:
    from retention_model.events import OrderLine

    lines = (OrderLine("tent", "camping"), OrderLine("lamp", "camping"), OrderLine("stove", "camping"))
    orders = [
        Event(f"o{i}", f"u{i}", EventType.PURCHASE, T0 + i, price=90.0, items=list(lines[: 2 + i % 2]))
        for i in range(4)
    ]
    table = learn_recommendations(orders)
    assert table["baskets"] == 4
    assert next(other for other, _ in table["also_bought"]["tent"]) == "lamp"  # together in all four orders
    assert {item for item, _ in table["popular"]["camping"]} == {"tent", "lamp", "stove"}
