"""``retention demo``: the whole pipeline in one process tree, on the embedded broker.

broker (Tansu) -> topics -> worker (a child process) <- simulated traffic, with a
live progress line, a summary at the end, and nothing left running afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from retention_model.monitoring.quality import outcome_quality
from streams.kafka import EmbeddedBroker, die_with_parent, ensure_topics, free_port
from streams.responder import ClosedLoop, effect_rows
from streams.settings import Settings

__all__ = ["OutputCounter", "histogram_quantile", "run_demo", "scrape_metrics"]


def scrape_metrics(url: str, timeout_s: float = 2.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a /metrics page: name -> [(labels, value)]."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def metric_sum(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels match ``labels``."""
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == want for k, want in labels.items()))


def histogram_quantile(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, q: float) -> float | None:
    """Quantile estimate from cumulative buckets, interpolating linearly (like PromQL)."""
    buckets = sorted(((float(lab["le"]), v) for lab, v in samples.get(f"{name}_bucket", [])), key=lambda item: item[0])
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            width = count - prev_count
            fraction = (rank - prev_count) / width if width else 0.0
            return prev_bound + (bound - prev_bound) * fraction
        prev_bound, prev_count = bound, count
    return prev_bound


class OutputCounter(threading.Thread):
    """Reads the output topics from the beginning (no consumer group) and counts records."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: int, keep: frozenset[str] = frozenset()) -> None:
        """Count ``topics``; of those in ``keep`` also hold every value (small topics only)."""
        super().__init__(daemon=True, name="output-counter")
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "retention-demo-reader", "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)])
        self.counts: Counter[str] = Counter()
        self.samples: dict[str, bytes] = {}
        self.keep = keep
        self.values: dict[str, list[bytes]] = {topic: [] for topic in keep}
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            for message in self.consumer.consume(num_messages=5000, timeout=0.2):
                if message.error():
                    continue
                topic = message.topic()
                self.counts[topic] += 1
                self.samples.setdefault(topic, message.value())
                if topic in self.keep:
                    self.values[topic].append(message.value())
        self.consumer.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)


def _spawn_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ}
    for name in Settings.__dataclass_fields__:
        env[f"RETENTION_{name.upper()}"] = str(getattr(settings, name))
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )


def _stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_demo(
    settings: Settings, *, seconds: float, rate: float, summary_json: str | None, broker: str | None = None
) -> int:
    """Run the demo; return the exit code."""
    # Ctrl-C must stop the demo even when it was started with SIGINT ignored (a background
    # job of a non-interactive shell inherits that, and Python then keeps it ignored).
    previous_sigint = None
    if threading.current_thread() is threading.main_thread():
        previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    from streams.producer import produce_records
    from training.simulator import SimConfig, simulate_users

    broker = broker or os.environ.get("RETENTION_BROKER")
    run_started_ms = int(time.time() * 1000)
    workdir = Path(tempfile.mkdtemp(prefix="retention-demo-"))
    succeeded = False
    embedded: EmbeddedBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    reader: OutputCounter | None = None
    loop: ClosedLoop | None = None
    out = sys.stdout
    try:
        if broker is None:
            embedded = EmbeddedBroker(log_file=workdir / "broker.log").start()
            broker = embedded.bootstrap
            print(f"[demo] embedded broker (Tansu) up on {broker}", file=out, flush=True)
        settings = settings.replace(
            broker=broker,
            broker_kind="tansu" if embedded is not None else settings.broker_kind,
            metrics_port=settings.metrics_port if settings.metrics_port != 9108 else free_port(),
            web_port=free_port(),
            session_timeout_s=min(settings.session_timeout_s, 2.0),
            data_dir=str(workdir / "faust-data"),
            # 120 simulated days in a minute is a replay: limits run on event time, as offline.
            replay="true",
        )
        created = ensure_topics(settings)
        print(f"[demo] topics ready ({len(created)} created)", file=out, flush=True)

        users = max(300, int(rate * seconds / 110))
        sim = SimConfig(users=users, days=120, seed=11)
        print(
            f"[demo] simulating {users} users over {sim.days} days, replayed in {seconds:g}s "
            "(RETENTION_REPLAY=true: cooldowns and budgets run on event time)",
            file=out,
            flush=True,
        )
        holder: dict[str, Any] = {}
        sim_thread = threading.Thread(target=lambda: holder.update(simulated=simulate_users(sim)), daemon=True)
        sim_thread.start()

        worker = _spawn_worker(settings, workdir / "worker.log")
        metrics_url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
        print(f"[demo] worker starting (log {workdir / 'worker.log'}); metrics at {metrics_url}", file=out, flush=True)
        reader = OutputCounter(
            broker,
            [
                settings.scores_topic,
                settings.coupon_topic,
                settings.recommendation_topic,
                settings.dlq_topic,
                settings.outcomes_topic,
            ],  # counted
            settings.partitions,
            keep=frozenset({settings.outcomes_topic}),  # a sample of scores: a few per user
        )
        reader.start()
        deadline = time.monotonic() + 120
        while True:
            if worker.poll() is not None:
                print(f"[demo] the worker exited with code {worker.returncode}; see {workdir / 'worker.log'}", file=out)
                return 1
            with contextlib.suppress(OSError):
                if metric_sum(scrape_metrics(metrics_url), "retention_assigned_partitions") > 0:
                    break
            if time.monotonic() > deadline:
                print("[demo] the worker did not come up within 120s", file=out)
                return 1
            time.sleep(0.5)
        sim_thread.join()
        # The closed loop: simulated users answer what the worker sends (redeem, click, come back).
        loop = ClosedLoop(settings, *holder["simulated"], sim, since_ms=run_started_ms).start()
        print(
            f"[demo] streaming {sum(map(len, holder['simulated'][0])):,} simulated events at up to {rate:,.0f}/s "
            f"for {seconds:g}s; simulated users answer the interventions",
            file=out,
            flush=True,
        )

        started = time.monotonic()
        state = {"last": 0.0}

        def progress(delivered: Counter[str]) -> None:
            now = time.monotonic()
            if now - state["last"] < 1.0:
                return
            state["last"] = now
            _print_progress(out, now - started, sum(delivered.values()), metrics_url, reader, settings)

        produced = produce_records(
            settings,
            loop.records(seed=3, malformed_rate=0.002, unknown_rate=0.001),
            rate=rate,
            should_stop=lambda: time.monotonic() - started >= seconds,
            on_progress=progress,
        )
        total_produced = sum(produced.values())
        print(f"\n[demo] produced {total_produced:,} records; waiting for the worker to drain", file=out, flush=True)
        drain_deadline = time.monotonic() + 90
        samples = scrape_metrics(metrics_url)
        while metric_sum(samples, "retention_events_total") < total_produced and time.monotonic() < drain_deadline:
            time.sleep(0.5)
            samples = scrape_metrics(metrics_url)
        time.sleep(1.5)  # let the reader see the last published records
        samples = scrape_metrics(metrics_url)
        summary = _summary(samples, produced, reader, settings)
        summary["effect"] = loop.finish(idle_s=1.0, timeout_s=5.0)
        # Live quality over the outcomes published in the run: scores whose horizon closed during it.
        outcomes = map(json.loads, reader.values[settings.outcomes_topic])
        summary["model_live"] = outcome_quality(o for o in outcomes if not o.get("shadow")).as_dict()
        summary["seconds"] = round(time.monotonic() - started, 1)
        _print_summary(out, summary, reader, settings, embedded=embedded is not None)
        if summary_json:
            Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
        succeeded = True
        return 0
    except KeyboardInterrupt:
        print("\n[demo] interrupted; stopping", file=out)
        return 130
    finally:
        if reader is not None:
            reader.stop()
        if loop is not None:
            loop.close()
        _stop_process(worker)
        if embedded is not None:
            embedded.stop()
        if succeeded:  # a failed run keeps its logs, named in the message above
            shutil.rmtree(workdir, ignore_errors=True)
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)


def _print_progress(
    out: Any, elapsed: float, produced: int, url: str, reader: OutputCounter, settings: Settings
) -> None:
    try:
        samples = scrape_metrics(url, timeout_s=0.5)
    except OSError:
        return
    consumed = metric_sum(samples, "retention_events_total")
    silence = metric_sum(samples, "retention_silence_rescored_total")
    dead = metric_sum(samples, "retention_dead_letters_total")
    counts = reader.counts
    line = (
        f"[{elapsed:5.0f}s] produced {produced:,} ({produced / max(elapsed, 1e-9):,.0f}/s)  consumed {consumed:,.0f}  "
        f"scored {counts[settings.scores_topic]:,} (silence {silence:,.0f})  "
        f"coupons {counts[settings.coupon_topic]:,}  recommendations {counts[settings.recommendation_topic]:,}  "
        f"dead letters {dead:,.0f}  lag {max(0, produced - consumed):,.0f}"
    )
    end = "\r" if out.isatty() else "\n"
    print(line, end=end, file=out, flush=True)


def _summary(
    samples: dict[str, Any], produced: Counter[str], reader: OutputCounter, settings: Settings
) -> dict[str, Any]:
    def ms(q: float) -> float | None:
        value = histogram_quantile(samples, "retention_event_to_decision_seconds", q)
        return None if value is None else round(value * 1000, 1)

    versions = [lab["version"] for lab, v in samples.get("retention_model_info", []) if v == 1]
    return {
        "events_produced": sum(produced.values()),
        "events_consumed": int(metric_sum(samples, "retention_events_total")),
        "events_applied": int(metric_sum(samples, "retention_events_total", outcome="applied")),
        "events_duplicate": int(metric_sum(samples, "retention_events_total", outcome="duplicate")),
        "events_dead_lettered": int(metric_sum(samples, "retention_events_total", outcome="dead_lettered")),
        "events_ignored": int(metric_sum(samples, "retention_events_total", outcome="ignored")),
        "produced_by_kind": dict(produced),
        "scores": reader.counts[settings.scores_topic],
        "interventions": {
            "coupon": reader.counts[settings.coupon_topic],
            "recommendation": reader.counts[settings.recommendation_topic],
        },
        "decisions": {
            action: int(metric_sum(samples, "retention_decisions_total", action=action))
            for action in ("sent", "held_out", "suppressed")
        },
        "decision_rules": {
            rule: int(value)
            for rule, value in sorted(
                Counter(
                    {
                        lab["rule"]: metric_sum(samples, "retention_decision_rules_total", rule=lab["rule"])
                        for lab, _ in samples.get("retention_decision_rules_total", [])
                    }
                ).items()
            )
        },
        "tiers": {
            tier: int(metric_sum(samples, "retention_scores_total", tier=tier)) for tier in ("low", "medium", "high")
        },
        "holdout_share": _share(
            metric_sum(samples, "retention_decisions_total", action="held_out"),
            metric_sum(samples, "retention_decisions_total", action="sent")
            + metric_sum(samples, "retention_decisions_total", action="held_out"),
        ),
        "latency_ms_p50": ms(0.5),
        "latency_ms_p99": ms(0.99),
        "latency_target_ms": settings.latency_target_ms,
        "model_version": versions[0] if versions else None,
    }


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 3) if whole else None


def _print_summary(
    out: Any, summary: dict[str, Any], reader: OutputCounter, settings: Settings, *, embedded: bool = True
) -> None:
    """The run in a few readable lines, then what to try next (``embedded``: the broker ran here too)."""

    def row(label: str, value: object) -> None:
        print(f"  {label:<24} {value}", file=out)

    print("\n[demo] summary", file=out)
    row(
        "events",
        (
            f"{summary['events_produced']:,} produced, {summary['events_consumed']:,} consumed "
            f"({summary['events_applied']:,} applied, {summary['events_dead_lettered']:,} dead-lettered, "
            f"{summary['events_ignored']:,} of unknown type)"
        ),
    )
    tiers = summary["tiers"]
    row("scores", f"{summary['scores']:,} (tiers: " + ", ".join(f"{k} {v:,}" for k, v in tiers.items()) + ")")
    interventions = summary["interventions"]
    row("interventions", f"{interventions['coupon']:,} coupons, {interventions['recommendation']:,} recommendations")
    decisions = summary["decisions"]
    share = summary["holdout_share"]
    row(
        "decisions",
        ", ".join(f"{k} {v:,}" for k, v in decisions.items())
        + (f" (holdout {share:.0%} of acted-on)" if share is not None else ""),
    )
    rules = summary["decision_rules"]
    row("decisions by rule", ", ".join(f"{k} {v:,}" for k, v in rules.items()) or "none")
    p50, p99 = summary["latency_ms_p50"], summary["latency_ms_p99"]
    if p50 is not None:
        target = summary["latency_target_ms"]
        sharing = "the broker, the load and the worker" if embedded else "the load and the worker"
        shared = f"; {sharing} share {os.cpu_count()} cores here" if p99 > target else ""
        row("event to decision", f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (target {target} ms{shared})")
    for label, text in effect_rows(summary["effect"]) if summary.get("effect") else ():
        row(label, text)
    live = summary.get("model_live") or {}
    if live.get("n"):
        figures = ", ".join(
            f"{name} {live[name]:.3f}"
            for name in ("roc_auc", "brier", "ece", "top_tier_lift")
            if live[name] is not None
        )
        row("model, live", f"{figures} over {live['n']:,} outcomes whose horizon closed in the run")
    else:
        row("model, live", "no outcome yet: no sampled score's horizon closed during the run")
    row("model", summary["model_version"])
    row("seconds", summary.get("seconds"))
    for topic in (settings.coupon_topic, settings.recommendation_topic):
        sample = reader.samples.get(topic)
        if sample:
            print(f"\n[demo] an intervention from {topic}:\n  {sample.decode()}", file=out)
    print(
        "\n[demo] next: run the parts yourself (README, 'Run it yourself'): `retention broker`, "
        "`retention worker`, `retention simulate --live`, `retention tail scores`",
        file=out,
    )
    out.flush()
