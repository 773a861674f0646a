"""``retention evaluate recommendations``: the shipped recommender beside the obvious baselines.

Everything before the cutoff trains (the co-purchase table, popularity, each user's
purchase history); every user with a purchase in the horizon after the cutoff is
a test case, whose relevant items are the items of those purchases, repeats
included (buying again is most of what a grocery shop sells). Each method lists K
items per user; hit rate, recall and NDCG at K are averaged over users, catalogue
coverage is the share of items bought before the cutoff that any list shows.

Methods: ``shipped`` (buy-again, co-purchase, category and overall popularity, given
the user's purchase history), ``shipped_as_served`` (what the worker serves from its
state: buy-again over the last items bought that the bundle can name, else three recent
viewed or carted items and the top categories),
``popularity`` (the same K best sellers for everyone), ``own_most_bought`` (the
user's items by the number of orders they were in), ``own_then_popular`` (the same,
filled up with best sellers) and ``item_knn`` (items most co-purchased with the user's
items, not already bought). Where the ``implicit`` package is installed, its ALS and
item-item models are measured beside them (:mod:`training.recommend_library`); where it
is not, the report says they were skipped and how to add them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np

from retention_model.errors import TrainingDataError
from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS, UserState, apply_event
from retention_model.policy.buy_again import PurchaseHistory, bought_items, purchase_histories
from retention_model.policy.recommend import Recommender
from retention_model.policy.recommend_learn import learn_recommendations
from training.recommend_library import library_methods

# pandas, scipy and the metrics are imported where used: register() runs whenever the
# CLI builds its parser, and those imports would double the start-up time of every command.

__all__ = ["evaluate_recommendations", "format_report", "parse_cutoff", "register", "write_recs"]

REFERENCE: Final = "shipped"
#: What the worker serves from its state.
SERVED: Final = "shipped_as_served"
#: Neighbours the item-kNN baseline may draw on (the shipped table keeps 10 per item).
KNN_NEIGHBOURS: Final = 50
SHIPPED_NEIGHBOURS: Final = 10

Method = Callable[[str], list[str]]


def parse_cutoff(text: str) -> int:
    """Epoch ms of an ISO-8601 date or timestamp (UTC when it names no zone)."""
    import pandas as pd

    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        msg = f"--cutoff {text!r} is not an ISO-8601 date or timestamp (e.g. 2017-06-30)"
        raise TrainingDataError(msg) from exc
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.value // 1_000_000)


def _top_categories(state: UserState, n: int = 3) -> list[str]:
    """The profile's top categories (as ``retention_model.features.derive.profile`` ranks them)."""
    weights = state.categories
    return sorted(sorted(weights), key=weights.__getitem__, reverse=True)[:n]


def _methods(
    train: list[Event], users: list[str], cutoff_ms: int, k: int, seed: int
) -> tuple[dict[str, Method], set[str], list[str]]:
    """Each method as user -> ranked items, the catalogue (items bought before the cutoff), what was skipped."""
    table = learn_recommendations(train, neighbours=KNN_NEIGHBOURS)
    knn = {item: found for item, found in table["also_bought"].items()}
    shipped_table = {**table, "also_bought": {i: f[:SHIPPED_NEIGHBOURS] for i, f in knn.items()}}
    shipped = Recommender.from_dict(shipped_table)
    histories = purchase_histories(train)
    wanted = set(users)
    states: dict[str, UserState] = {}
    for event in train:
        if event.user_id in wanted:
            apply_event(states.setdefault(event.user_id, UserState()), event)
    popular = [item for item, _ in table["popular_overall"][:k]]
    empty = PurchaseHistory()

    def own(user: str) -> list[str]:
        bought = histories.get(user, empty).bought_ms
        return sorted(bought, key=lambda i: (-len(bought[i]), -bought[i][-1], i))[:k]

    def own_then_popular(user: str) -> list[str]:
        mine = own(user)
        return (mine + [item for item in popular if item not in mine])[:k]

    def item_knn(user: str) -> list[str]:
        bought = histories.get(user, empty).bought_ms
        scores: dict[str, float] = {}
        for item, times in bought.items():
            for other, similarity in knn.get(item, []):
                if other not in bought:
                    scores[other] = scores.get(other, 0.0) + len(times) * float(similarity)
        return sorted(scores, key=lambda i: (-scores[i], i))[:k]

    def items_of(payload: dict[str, Any]) -> list[str]:
        return [entry["item_id"] for entry in payload["items"]]

    methods: dict[str, Method] = {
        REFERENCE: lambda user: items_of(
            shipped.recommend_history(
                histories.get(user, empty), cutoff_ms, k, states[user].categories if user in states else None
            )
        ),
        SERVED: lambda user: items_of(
            shipped.recommend(
                states.get(user, UserState()), _top_categories(states.get(user, UserState())), k, cutoff_ms
            )
        ),
        "popularity": lambda _user: popular,
        "own_most_bought": own,
        "own_then_popular": own_then_popular,
        "item_knn": item_knn,
    }
    library, skipped = library_methods(histories, users, popular, k, seed)
    methods.update(library)
    catalogue = {item for history in histories.values() for item in history.bought_ms}
    return methods, catalogue, [skipped] if skipped else []


def _split(
    events: Iterable[Event], cutoff_ms: int, horizon_days: float | None
) -> tuple[list[Event], dict[str, set[str]]]:
    """Events before the cutoff, and each test user's relevant items after it."""
    end = None if horizon_days is None else cutoff_ms + int(horizon_days * DAY_MS)
    train: list[Event] = []
    relevant: dict[str, set[str]] = {}
    for event in sorted(events, key=lambda e: e.ts_ms):
        if event.ts_ms < cutoff_ms:
            train.append(event)
        elif event.type is EventType.PURCHASE and (end is None or event.ts_ms < end):
            relevant.setdefault(event.user_id, set()).update(bought_items(event))
    return train, {user: items for user, items in relevant.items() if items}


def evaluate_recommendations(
    events: list[Event],
    cutoff_ms: int,
    k: int = 10,
    horizon_days: float | None = 30.0,
    replicates: int = 1000,
    seed: int = 42,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The report (JSON-ready) and the shipped recommender's list per test user."""
    import pandas as pd
    from scipy import sparse

    from training.recommend_metrics import bootstrap_report, ranking_metrics

    if k < 1:
        msg = f"--k must be at least 1; got {k}"
        raise TrainingDataError(msg)
    train, relevant = _split(events, cutoff_ms, horizon_days)
    cutoff_iso = pd.Timestamp(cutoff_ms, unit="ms", tz="UTC").isoformat()
    if not any(e.type is EventType.PURCHASE for e in train):
        msg = f"no purchase before the cutoff {cutoff_iso}: nothing to learn from; choose a later --cutoff"
        raise TrainingDataError(msg)
    if not relevant:
        window = "" if horizon_days is None else f" within {horizon_days:g} days"
        msg = (
            f"no purchase with items (item_id or order lines) after the cutoff {cutoff_iso}{window}; "
            "choose an earlier --cutoff"
        )
        raise TrainingDataError(msg)
    users = sorted(relevant)
    methods, catalogue, skipped = _methods(train, users, cutoff_ms, k, seed)
    index = {item: j for j, item in enumerate(sorted(catalogue))}
    lists = {name: [method(user) for user in users] for name, method in methods.items()}
    per_user = {
        name: np.array([ranking_metrics(ranked, relevant[user], k) for user, ranked in zip(users, found, strict=True)])
        for name, found in lists.items()
    }
    shown = {}
    for name, found in lists.items():
        rows = [(u, index[item]) for u, ranked in enumerate(found) for item in ranked if item in index]
        data = np.ones(len(rows))
        coords = (np.array([r for r, _ in rows], dtype=int), np.array([c for _, c in rows], dtype=int))
        shown[name] = sparse.csr_matrix((data, coords), shape=(len(users), max(1, len(index))))
    histories = {e.user_id for e in train if e.type is EventType.PURCHASE}
    report: dict[str, Any] = {
        "cutoff": cutoff_iso,
        "horizon_days": horizon_days,
        "k": k,
        "users": len(users),
        "users_without_history": sum(user not in histories for user in users),
        "relevant_items_per_user": round(float(np.mean([len(relevant[u]) for u in users])), 2),
        "catalogue": len(catalogue),
        "bootstrap": {"replicates": replicates, "seed": seed, "interval": "95% percentile, users resampled"},
        "skipped": skipped,
    }
    report.update(bootstrap_report(per_user, shown, max(1, len(catalogue)), REFERENCE, "popularity", replicates, seed))
    report["target"] = _target(report)
    # What the worker serves, held to the same rule on the same resamples (same seed): the
    # target counts only if it holds for the served lists too.
    served = bootstrap_report(per_user, shown, max(1, len(catalogue)), SERVED, "popularity", replicates, seed)
    report[f"{SERVED}_minus"] = served[f"{SERVED}_minus"]
    report["as_served"] = {"hit_rate_ratio_to_popularity": served["hit_rate_ratio_to_popularity"]}
    report["as_served"]["target"] = _target({**served, "methods": report["methods"]}, SERVED)
    return report, dict(zip(users, lists[REFERENCE], strict=True))


def _target(report: dict[str, Any], reference: str = REFERENCE) -> dict[str, Any]:
    """Issue 21's rule: hit rate >= 1.5x popularity and >= the best simple baseline, interval above 0."""
    ratio = report["hit_rate_ratio_to_popularity"]
    differences = report[f"{reference}_minus"]
    simple = ("own_most_bought", "own_then_popular", "item_knn")
    best = max(simple, key=lambda m: report["methods"][m]["hit_rate"]["value"])
    gap = differences[best]["hit_rate"]
    return {
        "ratio_to_popularity_at_least_1_5": ratio["value"] >= 1.5,
        "best_simple_baseline": best,
        "beats_best_simple_baseline": gap["difference"] >= 0 and gap["ci95"][0] > 0,
    }


def format_report(report: dict[str, Any]) -> str:
    """A Markdown table of every method, then the differences to the shipped one."""
    k = report["k"]
    lines = [
        f"Recommendations at K={k}: {report['users']} users with a purchase after {report['cutoff']} "
        f"(horizon {report['horizon_days']} days; {report['users_without_history']} without history), "
        f"{report['catalogue']} items in the catalogue; 95% bootstrap intervals.",
        "",
        f"| method | hit rate@{k} | recall@{k} | NDCG@{k} | coverage |",
        "|---|---|---|---|---|",
    ]
    for name, figures in report["methods"].items():
        cells = [f"{f['value']:.3f} [{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}]" for f in figures.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"| shipped minus | hit rate@{k} | recall@{k} | NDCG@{k} | coverage |", "|---|---|---|---|---|"]
    for name, figures in report[f"{REFERENCE}_minus"].items():
        cells = [f"{f['difference']:+.3f} [{f['ci95'][0]:+.3f}, {f['ci95'][1]:+.3f}]" for f in figures.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ratio = report["hit_rate_ratio_to_popularity"]
    target = report["target"]
    lines += [
        "",
        f"Hit rate / popularity's: {ratio['value']:.2f}x [{ratio['ci95'][0]:.2f}, {ratio['ci95'][1]:.2f}]; "
        f"target 1.5x {'met' if target['ratio_to_popularity_at_least_1_5'] else 'NOT met'}; "
        f"above the best simple baseline ({target['best_simple_baseline']}) with the interval above 0: "
        f"{'yes' if target['beats_best_simple_baseline'] else 'no'}.",
    ]
    if "as_served" in report:
        served, ratio = report["as_served"]["target"], report["as_served"]["hit_rate_ratio_to_popularity"]
        gap = report[f"{SERVED}_minus"][served["best_simple_baseline"]]["hit_rate"]
        met = served["ratio_to_popularity_at_least_1_5"] and served["beats_best_simple_baseline"]
        lines.append(
            f"As served: {ratio['value']:.2f}x popularity's [{ratio['ci95'][0]:.2f}, {ratio['ci95'][1]:.2f}]; "
            f"minus {served['best_simple_baseline']} {gap['difference']:+.3f} "
            f"[{gap['ci95'][0]:+.3f}, {gap['ci95'][1]:+.3f}]: target "
            f"{'met' if met else 'NOT met'}."
        )
    if report.get("skipped"):
        lines += ["", *(f"Note: {note}." for note in report["skipped"])]
    return "\n".join(lines)


def write_recs(recs: dict[str, list[str]], path: str | Path) -> int:
    """``user_id,item_id,rank`` for every recommendation made; returns the rows written."""
    rows = 0
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "rank"])
        for user, ranked in recs.items():
            for rank, item in enumerate(ranked, start=1):
                writer.writerow([user, item, rank])
                rows += 1
    return rows


def cmd_evaluate_recommendations(args: argparse.Namespace) -> int:
    """Run the evaluation on ``--events`` and print the table."""
    from collections import Counter

    from training.eventlog import read_event_log

    cutoff_ms = parse_cutoff(args.cutoff)  # a typo fails before the log is read
    skipped: Counter[str] = Counter()
    events = read_event_log(args.events, skip_invalid=args.skip_invalid, skipped=skipped)
    if skipped:
        print(f"skipped {sum(skipped.values())} invalid rows of {args.events}", file=sys.stderr)
    horizon = None if args.horizon_days <= 0 else args.horizon_days
    report, recs = evaluate_recommendations(
        events, cutoff_ms, k=args.k, horizon_days=horizon, replicates=args.bootstrap, seed=args.seed
    )
    report["events"] = str(args.events)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.recs:
        print(f"wrote {write_recs(recs, args.recs)} recommendations to {args.recs}")
    return 0


def register(evaluate: Any) -> None:
    """Add ``retention evaluate recommendations`` to the ``evaluate`` sub-parsers."""
    p = evaluate.add_parser(
        "recommendations",
        help="the shipped recommender vs popularity, own most-bought items and item-kNN: hit rate, recall, "
        "NDCG at K, coverage, with bootstrap intervals",
    )
    p.add_argument("--events", required=True, help="event log (.jsonl, .parquet, .csv)")
    p.add_argument("--cutoff", required=True, help="train before this ISO-8601 date or timestamp, test after it")
    p.add_argument("--k", type=int, default=10, help="items recommended per user (default 10)")
    p.add_argument(
        "--horizon-days", type=float, default=30.0, help="purchases this long after the cutoff are tested (0: all)"
    )
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--recs", help="write the shipped recommender's lists here as user_id,item_id,rank CSV")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--seed", type=int, default=42, help="seed of the bootstrap")
    p.add_argument("--skip-invalid", action="store_true", help="count and skip rows that break the schema")
    p.set_defaults(func=cmd_evaluate_recommendations)
