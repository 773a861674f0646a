"""``retention evaluate ...``: models judged on real or simulated data, each beside its references.

Each entry of :data:`EVALUATIONS` adds one ``evaluate`` sub-command with
``register(evaluate_subparsers)``; a new evaluation is one more entry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.commands.common import (
    add_fit_flags,
    add_skip_invalid,
    print_report,
    report_skipped,
    setup_logging,
    silence_days,
)
from streams.settings import BUNDLED_MODEL
from training.recommend_eval import register as register_recommendations

__all__ = ["EVALUATIONS", "register"]

#: Where the CDNOW data lies in this project's workspace (a user passes --data).
DEFAULT_CDNOW = Path(__file__).resolve().parents[3] / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
DEFAULT_HILLSTROM = DEFAULT_CDNOW.parent.parent / "hillstrom" / "hillstrom.csv"


def cmd_evaluate_cdnow(args: argparse.Namespace) -> int:
    """The CDNOW benchmark: project model vs LR, GBT, BG/NBD, Pareto/NBD."""
    setup_logging("info")
    from training.cdnow import CDNOW_HELP, evaluate_cdnow

    data = Path(args.data)
    if not data.is_file():
        print(f"retention evaluate cdnow: {data}: {CDNOW_HELP}", file=sys.stderr)
        return 2
    report = evaluate_cdnow(data, folds=args.folds, seed=args.seed)
    print_report(report, args.json)
    return 0


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    """Targeting rules on the simulator's ground truth, and uplift learners on Hillstrom."""
    setup_logging("info")
    from training.uplift import evaluate_policy
    from training.uplift.report import write_policy_report

    report = evaluate_policy(args.model, users=args.users, budget_share=args.budget_share, hillstrom=args.hillstrom)
    print_report(report, args.json)
    print("wrote " + ", ".join(str(p) for p in write_policy_report(report, args.out)))
    return 0


def cmd_evaluate_model(args: argparse.Namespace) -> int:
    """A bundle on an event log beside RFM logistic regression and BG/NBD, with paired intervals."""
    from training.dataset import parse_cutoff

    cutoff = parse_cutoff(args.cutoff) if args.cutoff else None
    if args.scores and Path(args.scores).suffix not in {".csv", ".parquet"}:
        print(f"retention evaluate model: --scores {args.scores}: write .csv or .parquet", file=sys.stderr)
        return 2
    setup_logging("info")
    from training.evaluate import evaluate_model, plan_evaluation, write_evaluation_report, write_scores
    from training.replay import EventLog, summarise

    # Read in chunks, never whole, as training reads it: one pass here (times, counts, bad rows), one for the rows.
    events = EventLog(args.events, skip_invalid=args.skip_invalid)
    summary = summarise(events)
    report_skipped(args.events, events.skipped)
    plan = plan_evaluation(
        summary, args.model, cutoff_ms=cutoff, horizon_days=args.horizon_days, max_silence_days=args.max_silence_days
    )  # every refusal comes here, before TensorFlow loads
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    report, curves, test = evaluate_model(events, plan, seed=args.seed)
    written = write_evaluation_report(report, curves, args.out)
    if args.scores:
        written.append(write_scores(args.scores, test, curves))
    print(f"{report['rows']['test']} users at {report['test_cutoff']}, {report['horizon_days']}-day horizon")
    for name in ("model", "rfm_logistic_regression", "bgnbd"):
        figures = report[name]
        line = (
            f"{name:24s} ROC-AUC {figures['roc_auc']:.3f}  Brier {figures['brier']:.3f}  ECE {figures['ece']:.3f}  "
            f"lift@10% {figures['lift_top_10']:.2f}"
        )
        diff = report["model_minus_baseline"].get(name)
        if diff:
            auc, brier = diff["roc_auc"], diff["brier"]
            line += (
                f"  model {auc['difference']:+.3f} ROC-AUC ({auc['ci95_low']:+.3f} to {auc['ci95_high']:+.3f}), "
                f"{brier['difference']:+.3f} Brier ({brier['ci95_low']:+.3f} to {brier['ci95_high']:+.3f})"
            )
        print(line)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_evaluate_sequence(args: argparse.Namespace) -> int:
    """MLP on window features vs a GRU over the last events, on one time split."""
    setup_logging("info")
    from training.eventlog import read_event_log
    from training.sequence import compare_sequence_model
    from training.train import TrainConfig

    events = read_event_log(args.events)
    config = TrainConfig(horizon_days=args.horizon_days, epochs=args.epochs, seed=args.seed)
    print_report(compare_sequence_model(events, config), args.json)
    return 0


def register_cdnow(evaluate: Any) -> None:
    """Add ``retention evaluate cdnow``."""
    p = evaluate.add_parser("cdnow", help="CDNOW: project model vs logistic regression, GBT, BG/NBD, Pareto/NBD")
    p.add_argument("--data", default=str(DEFAULT_CDNOW), help="path of CDNOW_master.txt")
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_evaluate_cdnow)


def register_model(evaluate: Any) -> None:
    """Add ``retention evaluate model``."""
    p = evaluate.add_parser(
        "model", help="a bundle on an event log beside RFM logistic regression and BG/NBD, with paired intervals"
    )
    p.add_argument("--events", required=True, help="event log (.jsonl, .parquet, .csv)")
    p.add_argument("--model", default=str(BUNDLED_MODEL), help="model bundle or registry")
    p.add_argument(
        "--cutoff", help="score the users of this ISO-8601 date or timestamp (default: the last the log labels in full)"
    )
    p.add_argument("--horizon-days", type=int, help="label horizon (default: the bundle's; a different one warns)")
    p.add_argument(
        "--max-silence-days",
        type=lambda text: "bundle" if text == "bundle" else silence_days(text),
        default="bundle",
        help="leave out users silent longer than this ('none' keeps all; default: what the bundle was trained with)",
    )
    p.add_argument("--scores", help="also write one row per scored user to this .csv or .parquet")
    p.add_argument("--seed", type=int, default=42, help="seed of the bootstrap and the permutation importance")
    add_skip_invalid(p)
    p.add_argument("--out", default="evaluation", help="folder for evaluation.md, evaluation.json and the plots")
    p.set_defaults(func=cmd_evaluate_model)


def register_policy(evaluate: Any) -> None:
    """Add ``retention evaluate policy``."""
    p = evaluate.add_parser("policy", help="random vs top-risk vs uplift targeting on simulated ground truth")
    p.add_argument("--model", default=str(BUNDLED_MODEL), help="model bundle or registry (risk scores)")
    p.add_argument("--users", type=int, default=4000, help="simulated users per population")
    p.add_argument("--budget-share", type=float, default=0.2, help="share of eligible users who get a coupon")
    p.add_argument("--hillstrom", default=str(DEFAULT_HILLSTROM), help="path of hillstrom.csv")
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument(
        "--out", default="policy-evaluation", help="folder for policy.md, policy.json and the Qini plot policy-qini.png"
    )
    p.set_defaults(func=cmd_evaluate_policy)


def register_sequence(evaluate: Any) -> None:
    """Add ``retention evaluate sequence``."""
    p = evaluate.add_parser("sequence", help="MLP on window features vs a GRU over each user's last 32 events")
    p.add_argument("--events", required=True, help="event log (.jsonl, .parquet, .csv)")
    add_fit_flags(p)
    p.add_argument("--json", help="also write the report to this file")
    p.set_defaults(func=cmd_evaluate_sequence)


#: The ``evaluate`` sub-commands, in the order ``--help`` and the README list them.
EVALUATIONS = (register_cdnow, register_model, register_policy, register_sequence, register_recommendations)


def register(sub: Any) -> None:
    """Add ``retention evaluate`` and each of its :data:`EVALUATIONS`."""
    p = sub.add_parser("evaluate", help="evaluate models on real data")
    evaluate = p.add_subparsers(dest="benchmark", required=True)
    for add in EVALUATIONS:
        add(evaluate)
