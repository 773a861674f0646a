"""``retention evaluate recommendations``: metrics with known answers, the split, the report, the Instacart sample."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from retention_model.errors import TrainingDataError
from retention_model.events import Event, EventType, OrderLine
from retention_model.features.state import DAY_MS
from retention_model.policy.buy_again import purchase_histories
from training.recommend_eval import evaluate_recommendations, format_report, parse_cutoff, write_recs
from training.recommend_library import IMPLICIT_HELP, LIBRARY_SETTINGS, library_methods
from training.recommend_metrics import bootstrap_report, ranking_metrics

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def test_ranking_metrics_known_answers() -> None:
    # relevant at ranks 1 and 3 of 2 relevant: DCG = 1 + 1/2, ideal = 1 + 1/log2(3)
    hit, recall, ndcg = ranking_metrics(["a", "x", "b", "y"], {"a", "b"}, k=4)
    assert (hit, recall) == (1.0, 1.0)
    assert ndcg == pytest.approx(1.5 / (1 + 1 / np.log2(3)))
    assert ranking_metrics(["x", "y", "a"], {"a"}, k=2) == (0.0, 0.0, 0.0)  # beyond K does not count
    assert ranking_metrics(["a"], {"a", "b", "c"}, k=1) == (1.0, pytest.approx(1 / 3), 1.0)


def test_paired_bootstrap_gives_a_method_minus_itself_a_zero_interval() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((50, 3))
    shown = sparse.csr_matrix(np.eye(50, 10))
    report = bootstrap_report(
        {"shipped": scores, "same": scores.copy(), "worse": scores * 0.5},
        {"shipped": shown, "same": shown, "worse": shown},
        catalogue=10,
        reference="shipped",
        ratio_to="worse",
        replicates=200,
    )
    same = report["shipped_minus"]["same"]
    assert same["hit_rate"] == {"difference": 0.0, "ci95": [0.0, 0.0]}
    assert report["shipped_minus"]["worse"]["recall"]["ci95"][0] > 0
    assert report["hit_rate_ratio_to_worse"]["value"] == 2.0
    low, high = report["methods"]["shipped"]["coverage"]["ci95"]
    assert low <= report["methods"]["shipped"]["coverage"]["value"] <= high


def order(user: str, day: float, items: list[str]) -> Event:
    lines = [OrderLine(item) for item in items]
    return Event(f"{user}-{day}", user, EventType.PURCHASE, T0 + int(day * DAY_MS), price=5.0, items=lines)


def weekly_shop() -> list[Event]:
    """Ten users buy milk weekly with bread or butter; two buy cake; one only buys after the cutoff."""
    events = []
    for u in range(10):
        for week in range(8):
            events.append(order(f"u{u}", 7 * week + u / 10, ["milk", "bread" if u % 2 else "butter"]))
    events += [order("c0", 3, ["cake"]), order("c1", 4, ["cake"]), order("new", 50, ["tea"])]
    return events


def test_repeat_buyers_are_served_their_rhythm_and_lists_are_written(tmp_path: Path) -> None:
    cutoff = T0 + 45 * DAY_MS
    report, recs = evaluate_recommendations(weekly_shop(), cutoff, k=2, replicates=100)
    assert report["users"] == 11  # u0..u9 and the newcomer; c0 and c1 bought nothing after the cutoff
    assert report["users_without_history"] == 1
    shipped = report["methods"]["shipped"]
    assert shipped["recall"]["value"] == pytest.approx(
        10 / 11, abs=1e-4
    )  # every regular's basket, not the newcomer's tea
    assert recs["u1"] == ["milk", "bread"] or recs["u1"] == ["bread", "milk"]
    assert report["methods"]["popularity"]["recall"]["value"] < shipped["recall"]["value"]
    path = tmp_path / "recs.csv"
    assert write_recs(recs, path) == sum(len(r) for r in recs.values())
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0].keys() == {"user_id", "item_id", "rank"}
    assert [row["rank"] for row in rows if row["user_id"] == "u1"] == ["1", "2"]


def test_the_served_lists_are_held_to_the_same_target_on_the_same_resamples() -> None:
    # Issue 21: the target counts only if what the worker serves meets it too.
    report, _ = evaluate_recommendations(weekly_shop(), T0 + 45 * DAY_MS, k=2, replicates=100)
    served = report["shipped_as_served_minus"]
    assert "shipped_as_served" not in served and "shipped" in served
    assert served["shipped"]["hit_rate"]["difference"] == pytest.approx(
        -report["shipped_minus"]["shipped_as_served"]["hit_rate"]["difference"]
    )
    ratio = (
        report["methods"]["shipped_as_served"]["hit_rate"]["value"]
        / report["methods"]["popularity"]["hit_rate"]["value"]
    )
    assert report["as_served"]["hit_rate_ratio_to_popularity"]["value"] == pytest.approx(ratio, abs=1e-3)
    assert report["as_served"]["target"]["best_simple_baseline"] in ("own_most_bought", "own_then_popular", "item_knn")
    assert "As served:" in format_report(report)


def test_a_cutoff_with_nothing_on_one_side_says_which_way_to_move() -> None:
    with pytest.raises(TrainingDataError, match="choose a later --cutoff"):
        evaluate_recommendations(weekly_shop(), T0 - DAY_MS)
    with pytest.raises(TrainingDataError, match="choose an earlier --cutoff"):
        evaluate_recommendations(weekly_shop(), T0 + 400 * DAY_MS)
    with pytest.raises(TrainingDataError, match="--k must be at least 1"):
        evaluate_recommendations(weekly_shop(), T0 + 45 * DAY_MS, k=0)
    with pytest.raises(TrainingDataError, match="not an ISO-8601 date"):
        parse_cutoff("end of June")


def test_the_instacart_sample_becomes_orders_with_lines_ending_on_one_day() -> None:
    from training.instacart import LAST_ORDER_DAY, InstacartMissingError, instacart_events, read_instacart

    try:
        raw = read_instacart()
    except InstacartMissingError as exc:
        pytest.skip(f"Instacart sample absent ({exc})")
    events = instacart_events()
    assert len(events) == raw["order_id"].nunique() == 15_183
    assert len({e.user_id for e in events}) == 593
    assert sum(len(e.items or []) for e in events) == len(raw)  # no order in the sample repeats a product
    last = {}
    for event in events:
        last[event.user_id] = event.ts_ms
    last_day_ms = int(LAST_ORDER_DAY.timestamp() * 1000)
    assert all(0 <= ts - last_day_ms < DAY_MS for ts in last.values())
    # A user's gaps between orders are the sample's days since the prior order (hours aside).
    user = raw["user_id"].iloc[0]
    orders = raw[raw["user_id"] == user].drop_duplicates("order_id").sort_values("order_number")
    mine = [e for e in events if e.user_id == str(user)]
    days = [
        round((b.ts_ms - a.ts_ms) / DAY_MS - (hb - ha) / 24)
        for a, b, ha, hb in zip(
            mine, mine[1:], orders["order_hour_of_day"], orders["order_hour_of_day"].iloc[1:], strict=False
        )
    ]
    assert days == [int(d) for d in orders["days_since_prior_order"].iloc[1:]]


def test_without_implicit_its_candidates_are_skipped_and_the_report_says_how_to_add_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "implicit", None)  # import implicit now raises ImportError
    report, _ = evaluate_recommendations(weekly_shop(), T0 + 45 * DAY_MS, k=2, replicates=50)
    assert not any(name.startswith("implicit") for name in report["methods"])
    assert report["skipped"] == [IMPLICIT_HELP]
    assert "pip install implicit" in format_report(report)


def test_implicit_candidates_recommend_the_user_s_own_repeats() -> None:
    pytest.importorskip("implicit", reason="implicit not installed: pip install implicit to measure it")
    report, _ = evaluate_recommendations(weekly_shop(), T0 + 45 * DAY_MS, k=2, replicates=50)
    assert report["skipped"] == []
    for name in LIBRARY_SETTINGS:
        # Own items allowed: every regular's milk and bread (or butter), as shipped finds them.
        assert report["methods"][name]["recall"]["value"] == pytest.approx(10 / 11, abs=1e-4), name
    # A list shorter than K is filled with best sellers; a user with no history gets them.
    histories = purchase_histories([order("a", 0, ["tea"]), order("b", 1, ["milk"]), order("c", 2, ["milk"])])
    methods, skipped = library_methods(histories, ["a", "new"], ["milk", "tea"], k=2)
    assert skipped is None
    assert methods["implicit_cosine"]("a")[0] == "tea"  # its own item first: it is its own neighbour
    for method in methods.values():
        assert sorted(method("a")) == ["milk", "tea"]  # no duplicate from the fill
        assert method("new") == ["milk", "tea"]


def test_dropping_each_user_s_last_order_puts_the_one_before_on_the_last_day() -> None:
    import pandas as pd

    from training.instacart import LAST_ORDER_DAY, instacart_lines

    # u1: orders 1..3, 5 then 7 days apart; u2: one order only.
    raw = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2],
            "order_id": [10, 11, 12, 12, 20],
            "order_number": [1, 2, 3, 3, 1],
            "order_hour_of_day": [9, 9, 9, 9, 9],
            "days_since_prior_order": [None, 5.0, 7.0, 7.0, None],
            "add_to_cart_order": [1, 1, 1, 2, 1],
            "product_id": [100, 101, 102, 103, 200],
        }
    )
    lines = instacart_lines(raw, drop_last=1)
    assert set(lines["order_id"]) == {"10", "11"}  # u1's order 3 and u2 (left with nothing) are gone
    last = pd.Timestamp(lines.loc[lines["order_id"] == "11", "timestamp"].iloc[0])
    assert last == pd.Timestamp(LAST_ORDER_DAY) + pd.Timedelta(hours=9)
    first = pd.Timestamp(lines.loc[lines["order_id"] == "10", "timestamp"].iloc[0])
    assert last - first == pd.Timedelta(days=5)
    assert set(instacart_lines(raw)["order_id"]) == {"10", "11", "12", "20"}
    with pytest.raises(ValueError, match="drop_last must be 0 or more"):
        instacart_lines(raw, drop_last=-1)
