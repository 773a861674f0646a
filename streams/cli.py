"""The ``retention`` command: broker, topics, worker, simulate, train, demo, settings."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention_model.errors import BrokerUnavailableError, BundleError, RetentionError, SettingsError
from streams.settings import BUNDLED_MODEL, Settings, add_settings_flags, settings_table, settings_text

if TYPE_CHECKING:
    from retention_model.events import Event

__all__ = ["main"]

log = logging.getLogger("retention")

#: Where the CDNOW data lies in this project's workspace (a user passes --data).
DEFAULT_CDNOW = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
DEFAULT_HILLSTROM = DEFAULT_CDNOW.parent.parent / "hillstrom" / "hillstrom.csv"
DEFAULT_MODEL = BUNDLED_MODEL


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
    return Settings.load(os.environ, overrides)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_broker(args: argparse.Namespace) -> int:
    """Run the embedded broker in the foreground until Ctrl-C or SIGTERM."""
    from streams.kafka import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port, host=args.host).start()
    print(
        f"embedded Kafka-protocol broker (Tansu) listening on {broker.bootstrap}, in memory; Ctrl-C stops it\n"
        "In another terminal:\n"
        f"  export RETENTION_BROKER={broker.bootstrap}\n"
        "  retention worker          # recognises the embedded broker and sets itself up for it\n"
        "  retention simulate --users 400 --days 90 --rate 2000 --live\n"
        "  retention tail scores     # or: decisions, coupons, recommendations, dlq, events",
        flush=True,
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping and broker.process is not None and broker.process.poll() is None:
            time.sleep(0.2)
    finally:
        broker.stop()
    print("broker stopped", flush=True)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    """Create the topics the worker uses (existing ones are kept)."""
    from streams.kafka import ensure_topics
    from streams.preflight import check_events_topic, require_broker

    settings = _settings(args)
    require_broker(settings, args.broker_wait_s)
    check_events_topic(settings)
    created = ensure_topics(settings)
    print(f"created: {', '.join(created) if created else 'nothing (all topics exist)'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the Faust worker."""
    settings = _settings(args)
    _setup_logging(settings.log_level)
    explicit = "RETENTION_SESSION_TIMEOUT_S" in os.environ or getattr(args, "session_timeout_s", None) is not None
    return run_worker(settings, broker_wait_s=args.broker_wait_s, session_timeout_set=explicit)


def run_worker(settings: Settings, broker_wait_s: float = 60.0, *, session_timeout_set: bool = True) -> int:
    """Check ports and the broker, load the model, create topics, then run Faust until stopped.

    The cheap checks come first: a busy port or a missing broker is reported in
    seconds, before TensorFlow and the model load (~18 s).
    """
    from streams.compat import UnsupportedFaust, check_faust_version

    try:
        check_faust_version()  # before anything imports Faust
    except UnsupportedFaust as exc:
        print(f"retention worker: cannot start: {exc}", file=sys.stderr)
        return 2
    from prometheus_client import CollectorRegistry, start_http_server

    from streams import metrics as metrics_module
    from streams.access import check_api_exposure
    from streams.kafka import ensure_topics
    from streams.preflight import adapt_to_broker, check_events_topic, check_ports, require_broker

    if settings.store.startswith("rocksdb") and importlib.util.find_spec("rocksdict") is None:
        print(
            "retention worker: cannot start: RETENTION_STORE=rocksdb:// needs the rocksdict package; "
            "install the rocksdb extra (pip install 'retention[rocksdb]') or use memory://",
            file=sys.stderr,
        )
        return 2
    check_ports(settings)
    check_api_exposure(settings)
    from retention_model.model.bundle import resolve_bundle

    try:  # local mistakes first: a wrong bundle path needs no broker to report
        for bundle_path in (settings.model_path, settings.shadow_model_path):
            if bundle_path:
                resolve_bundle(bundle_path)
    except BundleError as exc:
        print(f"retention worker: cannot start: {exc}", file=sys.stderr)
        return 2
    bootstrap = ",".join(settings.broker_list)
    cluster_id = require_broker(settings, broker_wait_s)
    settings = adapt_to_broker(settings, cluster_id, session_timeout_set=session_timeout_set)
    check_events_topic(settings)
    _quiet_tensorflow(settings)
    from retention_model.model.scorer import ChurnModel

    try:
        model = ChurnModel(settings.model_path, device=settings.model_device).load()  # type: ignore[arg-type]
        shadow = (
            ChurnModel(settings.shadow_model_path, device=settings.model_device).load()  # type: ignore[arg-type]
            if settings.shadow_model_path
            else None
        )
    except BundleError as exc:
        print(f"retention worker: cannot start: {exc}", file=sys.stderr)
        return 2
    created = ensure_topics(settings)
    if created:
        log.info("created topics: %s", ", ".join(created))

    import faust

    from streams.app import create_app

    registry = CollectorRegistry()
    metrics = metrics_module.create(registry)
    metrics.model_info.labels(model.version, model.device_name_ or "cpu").set(1)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    if shadow is not None:
        metrics.shadow_model_info.labels(shadow.version).set(1)
        log.info("shadow model %s scores beside %s (published, never acted on)", shadow.version, model.version)
    app, _ = create_app(settings, model, metrics, shadow=shadow)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    # TensorFlow, Keras and Faust leave ~400k long-lived objects; a full collection
    # walks them all (160 ms here), stalling every batch behind it. Frozen, they
    # are skipped: collections see only what the stream allocates.
    gc.collect()
    gc.freeze()
    log.info(
        "worker %s consuming %s from %s with model %s", settings.app_id, settings.events_topic, bootstrap, model.version
    )
    worker.execute_from_commandline()
    return 0


def _quiet_tensorflow(settings: Settings) -> None:
    """Keep TensorFlow's C++ start-up chatter (and its CUDA probe on a machine without a GPU) out of the log."""
    no_gpu = not Path("/dev/nvidiactl").exists() and not Path("/proc/driver/nvidia").exists()
    if settings.model_device == "cpu" or no_gpu:
        # "failed call to cuInit" is logged as an error on every CPU start; level 3 keeps it
        # out (Python-level errors still raise). With a GPU, its errors stay visible.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _stamped_now(events: Iterator[Event]) -> Iterator[Event]:
    """The same events in the same order, each stamped with the wall clock as it is produced.

    Event time then passes as fast as it would live: a replay of months at thousands of
    events per second otherwise makes every silence timer of those months fall due
    within seconds.
    """
    import msgspec

    for event in events:
        yield msgspec.structs.replace(event, ts_ms=int(time.time() * 1000))


def cmd_simulate(args: argparse.Namespace) -> int:
    """Generate simulated behaviour to a file, or produce it to Kafka."""
    from training.simulator import SimConfig, encode_stream, simulate

    if args.live and args.out:
        print("retention simulate: --live stamps events as they are produced; drop --out", file=sys.stderr)
        return 2
    config = SimConfig(users=args.users, days=args.days, seed=args.seed)
    if args.treatment_log:
        from training.simulator import simulate_users
        from training.uplift import CampaignConfig, campaign_from_simulation, write_treatment_log

        per_user, truth = simulate_users(config)
        campaign = campaign_from_simulation(
            per_user, truth, config, CampaignConfig(decision_day=min(120, args.days * 2 // 3), seed=args.seed)
        )
        n = write_treatment_log(campaign, args.treatment_log)
        print(f"wrote {n} randomised treatment records to {args.treatment_log}")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix == ".parquet":
        import pandas as pd

        if args.malformed_rate or args.unknown_rate:
            msg = "retention simulate: Parquet holds valid events only; drop --malformed-rate/--unknown-rate"
            print(msg, file=sys.stderr)
            return 2
        rows = [_event_row(event) for event in simulate(config)]
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(out, index=False)
        print(f"wrote {len(rows)} events to {out}")
        return 0
    events = simulate(config)
    if args.rate > 0 and out is None:
        # Simulate everything first: generating while producing made the offered rate
        # bursty (the producer fell behind, then caught up), adding ~20 ms to the p99 of
        # record age at a consumer, before any worker was involved.
        events = iter(list(events))
    if args.live:
        events = _stamped_now(events)
    records = encode_stream(events, seed=args.seed, malformed_rate=args.malformed_rate, unknown_rate=args.unknown_rate)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with out.open("wb") as handle:
            for _, value, _ in records:
                handle.write(value + b"\n")
                n += 1
        print(f"wrote {n} records to {out}")
        return 0
    from streams.kafka import ensure_topics
    from streams.preflight import check_events_topic, require_broker
    from streams.producer import produce_records

    settings = _settings(args)
    require_broker(settings, args.broker_wait_s)
    check_events_topic(settings)
    created = ensure_topics(settings)  # with the worker's partition count, before any record goes out
    if created:
        print(f"created topics ({settings.partitions} partitions): {', '.join(created)}")
    counts = produce_records(settings, records, rate=args.rate)
    print(f"produced {sum(counts.values())} records to {settings.events_topic}: {dict(counts)}")
    return 0


def _event_row(event: Any) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "type": event.type.wire_name,
        "ts": event.ts_ms,
        "item_id": event.item_id,
        "category": event.category,
        "price": event.price,
        "quantity": event.quantity,
        "order_id": event.order_id,
        "rating": event.rating,
        "session_id": event.session_id,
        "coupon_id": event.coupon_id,
        "intervention_id": event.intervention_id,
    }


def _read_log(args: argparse.Namespace) -> tuple[list[Event], dict[str, int]]:
    """The event log of ``--events``; with ``--skip-invalid``, bad rows counted by reason instead of fatal."""
    from collections import Counter

    from retention_model.features.offline import read_event_log

    skipped: Counter[str] = Counter()
    events = read_event_log(args.events, skip_invalid=args.skip_invalid, skipped=skipped)
    if skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
        print(f"skipped {sum(skipped.values())} invalid rows of {args.events} ({reasons})", file=sys.stderr)
    return events, dict(skipped)


def _silence_days(text: str) -> int | None:
    """``--max-silence-days``: a number of days, or ``none`` to keep every row."""
    if text.lower() == "none":
        return None
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        msg = f"--max-silence-days must be a whole number of days >= 1 or 'none'; got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return days


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on an event log and write a bundle."""
    from training.dataset import TrainConfig, parse_cutoff

    cutoff = parse_cutoff(args.cutoff) if args.cutoff else None  # a typo fails before the log is read
    _setup_logging("info")
    from training.train import train

    events, skipped = _read_log(args)
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
        events, args.registry, config, source=str(args.events), treatment_log=treatment_log, skipped_rows=skipped
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


def cmd_evaluate_cdnow(args: argparse.Namespace) -> int:
    """The CDNOW benchmark: project model vs LR, GBT, BG/NBD, Pareto/NBD."""
    _setup_logging("info")
    from training.cdnow import CDNOW_HELP, evaluate_cdnow

    data = Path(args.data)
    if not data.is_file():
        print(f"retention evaluate cdnow: {data}: {CDNOW_HELP}", file=sys.stderr)
        return 2
    report = evaluate_cdnow(data, folds=args.folds, seed=args.seed)
    _print_report(report, args.json)
    return 0


def _print_report(report: dict[str, Any], json_path: str | None) -> None:
    """Print a JSON report, and write it to ``json_path`` too when one is given."""
    import json

    text = json.dumps(report, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n")
    print(text)


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    """Targeting rules on the simulator's ground truth, and uplift learners on Hillstrom."""
    _setup_logging("info")
    from training.uplift import evaluate_policy

    report = evaluate_policy(args.model, users=args.users, budget_share=args.budget_share, hillstrom=args.hillstrom)
    _print_report(report, args.json)
    return 0


def cmd_evaluate_model(args: argparse.Namespace) -> int:
    """A bundle on an event log beside RFM logistic regression and BG/NBD, with paired intervals."""
    from training.dataset import parse_cutoff

    cutoff = parse_cutoff(args.cutoff) if args.cutoff else None
    if args.scores and Path(args.scores).suffix not in {".csv", ".parquet"}:
        print(f"retention evaluate model: --scores {args.scores}: write .csv or .parquet", file=sys.stderr)
        return 2
    _setup_logging("info")
    from training.evaluate import evaluate_model, plan_evaluation, write_evaluation_report, write_scores

    events, _ = _read_log(args)
    plan = plan_evaluation(
        events, args.model, cutoff_ms=cutoff, horizon_days=args.horizon_days, max_silence_days=args.max_silence_days
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


def _add_broker_wait(p: argparse.ArgumentParser, default: float = 10.0) -> None:
    """How long a tool waits for the broker before it gives up with one line (exit 3)."""
    p.add_argument(
        "--broker-wait-s",
        type=float,
        default=default,
        help=f"how long to wait for the broker before giving up, in s (default {default:g})",
    )


def _add_skip_invalid(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-invalid", action="store_true", help="count and report rows that break the schema instead of stopping"
    )


def _add_fit_flags(p: argparse.ArgumentParser) -> None:
    """Label horizon, epochs and seed: the same for training and for the sequence comparison."""
    p.add_argument("--horizon-days", type=int, default=30)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=42)


def cmd_evaluate_sequence(args: argparse.Namespace) -> int:
    """MLP on window features vs a GRU over the last events, on one time split."""
    _setup_logging("info")
    from retention_model.features.offline import read_event_log
    from training.sequence import compare_sequence_model
    from training.train import TrainConfig

    events = read_event_log(args.events)
    config = TrainConfig(horizon_days=args.horizon_days, epochs=args.epochs, seed=args.seed)
    _print_report(compare_sequence_model(events, config), args.json)
    return 0


def cmd_report_effect(args: argparse.Namespace) -> int:
    """Treated vs holdout retention, uplift with its interval, redemption and click-through."""
    import json

    import orjson

    from retention_model.events import Event, decode_event
    from retention_model.features.offline import read_event_log
    from training.effect import effect_report, write_effect_report

    if args.from_kafka:
        from streams.kafka import read_topic_values
        from streams.preflight import require_broker

        settings = _settings(args)
        require_broker(settings, args.broker_wait_s)
        decisions = [orjson.loads(v) for v in read_topic_values(settings, settings.decisions_topic)]
        events = [
            e for e in map(decode_event, read_topic_values(settings, settings.events_topic)) if isinstance(e, Event)
        ]
    else:
        if not (args.decisions and args.events):
            print("retention report effect: give --decisions and --events files, or --from-kafka", file=sys.stderr)
            return 2
        decisions = [orjson.loads(line) for line in Path(args.decisions).read_bytes().splitlines() if line.strip()]
        events = read_event_log(args.events)
    report = effect_report(decisions, events, horizon_days=args.horizon_days)
    written = write_effect_report(report, args.out)
    for note in report["notes"]:
        print(f"note: {note}")
    if "overall" in report["groups"]:
        print(json.dumps(report["groups"]["overall"], indent=2))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Scores or decisions to JSONL, user ids optionally pseudonymised with a key."""
    from streams.export import export_records
    from streams.preflight import require_broker

    settings = _settings(args)
    if args.pseudonymise and not settings.export_key:
        print(
            "retention export: --pseudonymise needs a key: set RETENTION_EXPORT_KEY or RETENTION_EXPORT_KEY_FILE",
            file=sys.stderr,
        )
        return 2
    require_broker(settings, args.broker_wait_s)
    topic = settings.scores_topic if args.what == "scores" else settings.decisions_topic
    try:
        n = export_records(settings, topic, args.out, pseudonymised=args.pseudonymise)
    except ValueError as exc:
        print(f"retention export: {exc}", file=sys.stderr)
        return 2
    shown = " (user ids pseudonymised)" if args.pseudonymise else ""
    print(f"wrote {n} records from {topic} to {args.out}{shown}")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    """List dead letters by reason, export them, or re-publish fixed ones."""
    from streams.dlq import export_dead_letters, read_dead_letters, republish, summarise
    from streams.preflight import require_broker

    settings = _settings(args)
    require_broker(settings, args.broker_wait_s)
    if args.action == "republish":
        if not args.file:
            print(
                "retention dlq republish: give --file with the fixed records (from `retention dlq export`)",
                file=sys.stderr,
            )
            return 2
        n = republish(settings, Path(args.file))
        print(f"re-published {n} records to {settings.events_topic}")
        return 0
    letters = [letter for letter in read_dead_letters(settings) if args.reason in (None, letter["reason"])]
    if args.action == "export":
        if not args.file:
            print("retention dlq export: give --file to write to", file=sys.stderr)
            return 2
        n = export_dead_letters(letters, Path(args.file))
        print(f"exported {n} dead letters to {args.file}; fix the value fields, then `retention dlq republish`")
        return 0
    print(summarise(letters))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a CSV transaction log to schema-v1 events (JSONL)."""
    from training.convert import TransactionColumns, convert_transactions

    columns = TransactionColumns(
        user=args.user_column,
        timestamp=args.time_column,
        amount=args.amount_column,
        order=args.order_column,
        cancelled=args.cancelled_column,
        assume_tz=args.assume_tz,
    )
    try:
        n = convert_transactions(args.csv, args.out, columns)
    except (ValueError, OSError) as exc:
        print(f"retention convert: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} events to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Broker, topics, worker and simulated traffic in one process tree."""
    from streams.demo import run_demo

    settings = _settings(args)
    return run_demo(settings, seconds=args.seconds, rate=args.rate, summary_json=args.summary_json, broker=args.broker)


def cmd_settings(args: argparse.Namespace) -> int:
    """Print the settings table, or the effective settings."""
    if args.effective:
        settings = _settings(args)
        from streams.settings import SECRETS

        for name in Settings.__dataclass_fields__:
            value = getattr(settings, name)
            shown = ("***" if value else "") if name in SECRETS else value
            print(f"RETENTION_{name.upper()}={shown}")
    elif args.markdown:
        print(settings_table())
    else:
        import shutil

        print(settings_text(width=min(100, shutil.get_terminal_size((100, 24)).columns)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``retention`` command."""
    parser = argparse.ArgumentParser(prog="retention", description="Real-time churn scoring and retention on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "broker", help="the embedded Kafka-protocol broker (Tansu) on 127.0.0.1, in memory, until Ctrl-C or SIGTERM"
    )
    p.add_argument("--port", type=int, default=9092)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "topics", help="create the topics the worker uses (existing ones are kept; a mismatched one refused)"
    )
    add_settings_flags(
        p,
        (
            "broker",
            "app_id",
            "events_topic",
            "dlq_topic",
            "scores_topic",
            "coupon_topic",
            "recommendation_topic",
            "partitions",
        ),
    )
    _add_broker_wait(p)
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser(
        "worker",
        help="the stream worker; exits 2 on a bad setting, a busy port or an unusable model bundle, "
        "3 when no broker answers within --broker-wait-s (60)",
    )
    add_settings_flags(p)
    p.add_argument("--broker-wait-s", type=float, default=60.0, help="how long to wait for the broker at start")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "simulate",
        help="seeded simulated behaviour to a .jsonl/.parquet file, or produced to the broker at --rate "
        "(--live stamps each event as it is produced); creates the topics first",
    )
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=180)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", help="write to this .jsonl or .parquet file instead of Kafka")
    p.add_argument("--rate", type=float, default=0.0, help="events per second when producing (0: as fast as possible)")
    p.add_argument("--malformed-rate", type=float, default=0.0)
    p.add_argument("--unknown-rate", type=float, default=0.0)
    p.add_argument(
        "--live",
        action="store_true",
        help="stamp each event with the time it is produced (event time passes as fast as wall time)",
    )
    p.add_argument(
        "--treatment-log", help="also write a randomised coupon campaign on these users (JSONL, for uplift training)"
    )
    add_settings_flags(p, ("broker", "events_topic", "partitions", "app_id"))
    _add_broker_wait(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("train", help="train a churn model bundle from an event log")
    p.add_argument("--events", required=True, help=".jsonl, .parquet or .csv event log in schema v1")
    p.add_argument("--registry", required=True, help="folder to write the bundle into")
    _add_fit_flags(p)
    p.add_argument(
        "--cutoff",
        help="train on what precedes this ISO-8601 date or timestamp (2011-09-10, 2011-09-10T00:00:00+00:00); "
        "default: the last cutoff the log labels in full, whose figures the bundle then records",
    )
    p.add_argument(
        "--max-silence-days",
        type=_silence_days,
        default=120,
        help="leave out rows of users silent longer than this at their cutoff ('none' keeps all; default 120)",
    )
    _add_skip_invalid(p)
    p.add_argument("--treatment-log", help="randomised treatment log (JSONL) to fit the coupon uplift model on")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("convert", help="convert a CSV transaction log into schema-v1 events")
    p.add_argument("csv", help="CSV with one row per transaction")
    p.add_argument("--out", required=True, help="the .jsonl event log to write")
    p.add_argument("--user-column", default="user_id")
    p.add_argument("--time-column", default="timestamp")
    p.add_argument("--amount-column", default="amount")
    p.add_argument("--order-column")
    p.add_argument("--cancelled-column", help="a column that is 1/true/yes for cancelled orders")
    p.add_argument("--assume-tz", default="UTC", help="time zone of timestamps that carry none")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("evaluate", help="evaluate models on real data")
    evaluate = p.add_subparsers(dest="benchmark", required=True)
    p = evaluate.add_parser("cdnow", help="CDNOW: project model vs logistic regression, GBT, BG/NBD, Pareto/NBD")
    p.add_argument("--data", default=str(DEFAULT_CDNOW), help="path of CDNOW_master.txt")
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_evaluate_cdnow)
    p = evaluate.add_parser(
        "model", help="a bundle on an event log beside RFM logistic regression and BG/NBD, with paired intervals"
    )
    p.add_argument("--events", required=True, help="event log (.jsonl, .parquet, .csv)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model bundle or registry")
    p.add_argument(
        "--cutoff", help="score the users of this ISO-8601 date or timestamp (default: the last the log labels in full)"
    )
    p.add_argument("--horizon-days", type=int, help="label horizon (default: the bundle's; a different one warns)")
    p.add_argument(
        "--max-silence-days",
        type=lambda text: "bundle" if text == "bundle" else _silence_days(text),
        default="bundle",
        help="leave out users silent longer than this ('none' keeps all; default: what the bundle was trained with)",
    )
    p.add_argument("--scores", help="also write one row per scored user to this .csv or .parquet")
    p.add_argument("--seed", type=int, default=42, help="seed of the bootstrap and the permutation importance")
    _add_skip_invalid(p)
    p.add_argument("--out", default="evaluation", help="folder for evaluation.md, evaluation.json and the plots")
    p.set_defaults(func=cmd_evaluate_model)
    p = evaluate.add_parser("policy", help="random vs top-risk vs uplift targeting on simulated ground truth")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model bundle or registry (risk scores)")
    p.add_argument("--users", type=int, default=4000, help="simulated users per population")
    p.add_argument("--budget-share", type=float, default=0.2, help="share of eligible users who get a coupon")
    p.add_argument("--hillstrom", default=str(DEFAULT_HILLSTROM), help="path of hillstrom.csv")
    p.add_argument("--json", help="also write the report to this file")
    p.set_defaults(func=cmd_evaluate_policy)
    p = evaluate.add_parser("sequence", help="MLP on window features vs a GRU over each user's last 32 events")
    p.add_argument("--events", required=True, help="event log (.jsonl, .parquet, .csv)")
    _add_fit_flags(p)
    p.add_argument("--json", help="also write the report to this file")
    p.set_defaults(func=cmd_evaluate_sequence)

    p = sub.add_parser("report", help="reports on what the worker did")
    report = p.add_subparsers(dest="report", required=True)
    p = report.add_parser(
        "effect",
        help="treated vs holdout retention, uplift with its 95%% interval, redemption, click-through, "
        "cost per retained user (from files or --from-kafka)",
    )
    p.add_argument("--decisions", help="JSONL of retention.decisions records")
    p.add_argument("--events", help="event log (.jsonl, .parquet, .csv)")
    p.add_argument("--from-kafka", action="store_true", help="read the decisions and events topics instead")
    p.add_argument("--horizon-days", type=int, default=30)
    p.add_argument("--out", default="effect-report", help="folder for effect.md, effect.json, effect.png")
    add_settings_flags(p, ("broker", "events_topic", "decisions_topic"))
    _add_broker_wait(p)
    p.set_defaults(func=cmd_report_effect)

    p = sub.add_parser(
        "demo",
        help="embedded broker, topics, a worker and simulated traffic with a progress line and a summary; "
        "Ctrl-C stops everything (RETENTION_BROKER: use that cluster instead)",
    )
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=2000.0, help="simulated events per second")
    p.add_argument("--summary-json", help="also write the summary to this file")
    add_settings_flags(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("dlq", help="dead letters: list by reason, export, re-publish fixed ones")
    p.add_argument("action", choices=("list", "export", "republish"))
    p.add_argument("--reason", help="only dead letters with this reason")
    p.add_argument("--file", help="JSONL file to export to, or to re-publish from")
    add_settings_flags(p, ("broker", "dlq_topic", "events_topic"))
    _add_broker_wait(p)
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser(
        "export",
        help="scores or decisions to JSONL; --pseudonymise replaces user ids by HMAC-SHA256 with "
        "RETENTION_EXPORT_KEY (stable per key, not reversible without it)",
    )
    p.add_argument("what", choices=("scores", "decisions"))
    p.add_argument("--out", required=True, help="the JSONL file to write")
    p.add_argument(
        "--pseudonymise", action="store_true", help="replace user ids by HMAC-SHA256 with RETENTION_EXPORT_KEY"
    )
    add_settings_flags(p, ("broker", "scores_topic", "decisions_topic"))
    _add_broker_wait(p)
    p.set_defaults(func=cmd_export)

    from streams.circuit import register as register_circuit
    from streams.tail import register as register_tail

    register_circuit(sub)
    register_tail(sub)

    p = sub.add_parser("settings", help="the settings, their defaults and meaning (--effective: the values in force)")
    p.add_argument("--effective", action="store_true", help="print the values in effect instead")
    p.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    add_settings_flags(p)
    p.set_defaults(func=cmd_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``retention`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"retention {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokerUnavailableError as exc:
        print(f"retention {args.command}: {exc}", file=sys.stderr)
        return 3
    except RetentionError as exc:
        print(f"retention {args.command}: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        # An input a person named is missing or unreadable: say which, no traceback.
        print(f"retention {args.command}: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
