"""Policy limits on a real broker: budget caps hold across two workers, cooldowns and
opt-outs hold across a kill -9, and every decision is logged exactly once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from retention_model.events import Event, EventType, encode_event
from retention_model.features.state import DAY_MS
from streams.demo import metric_sum, scrape_metrics
from streams.kafka import free_port
from streams.producer import produce_records

from .helpers import fresh_settings, metrics_url, read_topic, running_worker, settled_metrics, wait_for_metric

pytestmark = pytest.mark.integration

T0 = 1_735_689_600_000  # 2025-01-01

# Everyone is high risk and every scored buyer qualifies for a coupon, so only the
# limits under test decide who gets one.
POLICY = """schema = 1
version = "test-limits"
[risk]
medium = 0.0
high = 0.0
[coupon]
cooldown_days = {cooldown}
tiers = ["high"]
[recommendation]
tiers = []
[caps]
per_user = 0
[budget]
daily_count = {daily_count}
total_money = {total_money}
[suppression]
purchased_within_days = 0.0
active_coupon = false
[holdout]
share = 0.2
"""


def purchase(user_id: str, day: float) -> Event:
    t = T0 + int(day * DAY_MS)
    return Event(f"{user_id}-{day}", user_id, EventType.PURCHASE, t, price=25.0, category="books")


def records(events: list[Event]) -> list[tuple[bytes, bytes, str]]:
    return [(e.user_id.encode(), encode_event(e), "valid") for e in events]


def policy_file(tmp_path: Path, **values: float) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.format(**values))
    return str(path)


def test_budget_caps_hold_across_two_workers_and_each_decision_is_logged_once(broker: str, tmp_path: Path) -> None:
    daily_count, total_money = 6, 100.0  # 10-euro coupons: at most 6 a day, 10 in all
    settings = fresh_settings(
        broker,
        tmp_path,
        policy_file=policy_file(tmp_path, cooldown=0.0, daily_count=daily_count, total_money=total_money),
    )
    second_settings = settings.replace(metrics_port=free_port(), web_port=free_port())
    users = [f"b{i:03d}" for i in range(60)]
    days = [[purchase(u, day + i / 1000) for i, u in enumerate(users)] for day in (1, 2, 3)]
    events = [e for day in days for e in day]

    with (
        running_worker(settings, tmp_path / "w1.log"),
        running_worker(second_settings, tmp_path / "w2.log"),
    ):
        # Both workers hold partitions, and the group has settled (the embedded broker
        # may run one more rebalance shortly after the second join).
        deadline = time.monotonic() + 90
        stable_since, last = time.monotonic(), None
        while time.monotonic() - stable_since < 8:
            owned = [
                metric_sum(scrape_metrics(metrics_url(s)), "retention_assigned_partitions")
                for s in (settings, second_settings)
            ]
            if owned != last or not all(owned) or sum(owned) != settings.partitions:
                stable_since, last = time.monotonic(), owned
            assert time.monotonic() < deadline, owned
            time.sleep(0.3)
        scored = 0
        for day in days:  # a day at a time, so each purchase is scored on its own
            produce_records(settings, records(day))
            scored += len(day)
            deadline = time.monotonic() + 90
            while (
                sum(
                    metric_sum(scrape_metrics(metrics_url(s)), "retention_scores_total")
                    for s in (settings, second_settings)
                )
                < scored
            ):
                assert time.monotonic() < deadline, "workers did not score every purchase"
                time.sleep(0.3)
        samples = [settled_metrics(s) for s in (settings, second_settings)]
        decisions = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.decisions_topic, settings.partitions)]
        coupons = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.coupon_topic, settings.partitions)]

    # Caps: per event-time day and in total, summed over both workers.
    per_day = Counter(c["event_time"][:10] for c in coupons)
    assert max(per_day.values()) <= daily_count, per_day
    assert sum(c["offer"]["coupon_value"] for c in coupons) <= total_money
    assert len(coupons) >= daily_count  # the budget was used, not just refused
    budget_refusals = [d for d in decisions if d["rule"] == "budget"]
    assert budget_refusals and all(d["action"] == "suppressed" for d in budget_refusals)
    assert "cap reached" in budget_refusals[0]["reason"]
    assert sum(metric_sum(m, "retention_budget_spent", scope="total", unit="count") for m in samples) == len(coupons)

    # Exactly once: one decision per scored purchase, no id twice, the topic equals the metrics.
    ids = Counter(d["decision_id"] for d in decisions)
    assert ids.most_common(1)[0][1] == 1
    scored = sum(metric_sum(m, "retention_scores_total") for m in samples)
    assert len(decisions) == len(events), (scored, Counter(d["event_time"][:10] for d in decisions))
    assert sum(metric_sum(m, "retention_decisions_total") for m in samples) == len(decisions)
    assert {d["policy_version"] for d in decisions} == {"test-limits"}
    sent_ids = {d["decision_id"] for d in decisions if d["action"] == "sent"}
    assert sent_ids == {c["intervention_id"] for c in coupons}
    assert {"sent", "suppressed"} <= {d["action"] for d in decisions} <= {"sent", "held_out", "suppressed"}


def test_cooldowns_and_opt_outs_hold_across_a_kill(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(
        broker, tmp_path, policy_file=policy_file(tmp_path, cooldown=14.0, daily_count=0, total_money=0.0)
    )
    users = [f"c{i:02d}" for i in range(30)]
    first = [purchase(u, 1) for u in users] + [Event("o1", users[0], EventType.OPT_OUT, T0 + 2 * DAY_MS)]
    later = [purchase(u, 5) for u in users]
    with running_worker(settings, tmp_path / "w1.log") as worker:
        produce_records(settings, records(first))
        wait_for_metric(settings, "retention_events_total", len(first), outcome="applied")
        settled_metrics(settings)
        worker.kill()  # SIGKILL: the cooldowns must come back from the changelog
        worker.wait()
    with running_worker(settings, tmp_path / "w2.log"):
        produce_records(settings, records(later))
        wait_for_metric(settings, "retention_events_total", len(later), outcome="applied")
        settled_metrics(settings)
        decisions = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.decisions_topic, settings.partitions)]

    # The effect report reads both topics: every day-1 decision is past its 1-day horizon.
    from streams.cli import main

    out = tmp_path / "effect"
    topics = [
        "--broker",
        broker,
        "--events-topic",
        settings.events_topic,
        "--decisions-topic",
        settings.decisions_topic,
    ]
    assert main(["report", "effect", "--from-kafka", *topics, "--horizon-days", "1", "--out", str(out)]) == 0
    report = orjson.loads((out / "effect.json").read_bytes())
    overall = report["groups"]["overall"]
    decided = {d["user_id"] for d in decisions if d["action"] in ("sent", "held_out")}
    assert overall["treated_users"] + overall["holdout_users"] == len(decided) >= len(users) - 1
    assert overall["treated_retention"] == 0.0  # nobody bought again within a day

    # A pseudonymised export of the decision log keeps every record and no user id.
    import os

    os.environ["RETENTION_EXPORT_KEY"] = "test-key"
    try:
        exported = tmp_path / "decisions.jsonl"
        assert main(["export", "decisions", "--pseudonymise", *topics[:2], *topics[4:], "--out", str(exported)]) == 0
    finally:
        del os.environ["RETENTION_EXPORT_KEY"]
    rows = [orjson.loads(line) for line in exported.read_bytes().splitlines()]
    assert len(rows) == len(decisions)
    assert all(r["user_id"].startswith("p-") and r["user_id"] == r["intervention"]["user_id"] for r in rows)
    assert len({r["user_id"] for r in rows}) == len({d["user_id"] for d in decisions})

    on_day_5 = {d["user_id"]: d for d in decisions if d["event_time"].startswith("2025-01-06")}
    assert set(on_day_5) == set(users)
    assert on_day_5[users[0]]["rule"] == "opted_out"
    for user in users[1:]:
        assert on_day_5[user]["rule"] == "cooldown", on_day_5[user]
        assert on_day_5[user]["reason"] == "cooldown: last coupon 4.0 days ago, cooldown 14 days"
