"""``retention train``: a churn model bundle from an event log, and a summary of what was shipped and why."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streams.commands.common import add_fit_flags, add_skip_invalid, report_skipped, setup_logging, silence_days

__all__ = ["register"]


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on an event log and write a bundle."""
    from training.dataset import TrainConfig, parse_cutoff

    cutoff = parse_cutoff(args.cutoff) if args.cutoff else None  # a typo fails before the log is read
    setup_logging("info")
    from training.replay import EventLog, summarise
    from training.train import train

    # Read in chunks, never whole: one pass here (times, counts, bad rows), then one in train.
    log = EventLog(args.events, skip_invalid=args.skip_invalid)
    summary = summarise(log)
    report_skipped(args.events, log.skipped)
    config = TrainConfig(
        horizon_days=args.horizon_days,
        seed=args.seed,
        epochs=args.epochs,
        cutoff_ms=cutoff,
        max_silence_days=args.max_silence_days,
    )
    treatment_log = None
    if args.treatment_log:
        from training.uplift import read_treatment_log

        treatment_log = read_treatment_log(args.treatment_log)
    path = train(
        log,
        args.registry,
        config,
        source=str(args.events),
        treatment_log=treatment_log,
        skipped_rows=dict(log.skipped),
        summary=summary,
    )
    _print_training_summary(path)
    return 0


def _print_training_summary(path: Path) -> None:
    """What was chosen and why, the rows each filter removed, and the test figures beside the references."""
    import json

    meta = json.loads((path / "bundle.json").read_text())
    data, metrics = meta["training_data"], meta["metrics"]
    filters = data["filters"]
    silence = filters["max_silence_days"]
    print(
        f"cutoff {data['cutoff']} ({data['cutoff_chosen']}), {data['horizon_days']}-day horizon; rows: "
        + ", ".join(
            f"{role} {counts['rows']}" + (f" (-{counts['removed_silent']} silent > {silence} d)" if silence else "")
            for role, counts in filters.items()
            if isinstance(counts, dict)
        )
    )
    selection = metrics["selection"]
    for name, figures in selection.get("mean", {}).items():
        mark = "  <- shipped" if name == selection["chosen"] else ""
        print(
            f"  {name:24s} rolling-origin log loss {figures['log_loss']:.4f}  ROC-AUC {figures['roc_auc']:.4f}  "
            f"Brier {figures['brier']:.4f}{mark}"
        )
    rows = {"model": metrics.get("test"), **metrics.get("test_baselines", {})}
    for name, figures in rows.items():
        if not figures:
            continue
        line = f"  test {name:24s} ROC-AUC {figures['roc_auc']:.4f}  Brier {figures['brier']:.4f}"
        line += f"  ECE {figures['ece']:.4f}"
        diff = metrics.get("test_model_minus_baseline", {}).get(name)
        if diff:
            auc = diff["roc_auc"]
            line += f"  model {auc['difference']:+.4f} ROC-AUC ({auc['ci95_low']:+.4f} to {auc['ci95_high']:+.4f})"
        print(line)
    print(f"wrote bundle {path}")


def register(sub: Any) -> None:
    """Add ``retention train``."""
    p = sub.add_parser("train", help="train a churn model bundle from an event log")
    p.add_argument("--events", required=True, help=".jsonl, .parquet or .csv event log in schema v1")
    p.add_argument("--registry", required=True, help="folder to write the bundle into")
    add_fit_flags(p)
    p.add_argument(
        "--cutoff",
        help="train on what precedes this ISO-8601 date or timestamp (2011-09-10, 2011-09-10T00:00:00+00:00); "
        "default: the last cutoff the log labels in full, whose figures the bundle then records",
    )
    p.add_argument(
        "--max-silence-days",
        type=silence_days,
        default=120,
        help="leave out rows of users silent longer than this at their cutoff ('none' keeps all; default 120)",
    )
    add_skip_invalid(p)
    p.add_argument("--treatment-log", help="randomised treatment log (JSONL) to fit the coupon uplift model on")
    p.set_defaults(func=cmd_train)
