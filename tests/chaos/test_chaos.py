"""`make chaos`: two workers share the stream and are killed with -9 at random points, either
one, again and again, while a third joins midway; every kill and every join is a
rebalance. Then check that nothing was lost, nothing counted twice, no intervention id
ever carried two contents, and every partition's commit reached what was processed.
Writes the figures to $CHAOS_JSON (default chaos-results.json)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from retention_model.events import Event, EventType, decode_event
from retention_model.features.definitions import SIGNALS
from retention_model.features.offline import replay_states
from retention_model.features.state import load_state
from streams.compat import HOLD_SEEK_ENV
from streams.demo import metric_sum, scrape_metrics
from streams.kafka import EmbeddedBroker, ensure_topics, fetched_high_watermarks, free_port
from streams.producer import produce_records
from streams.settings import Settings
from tests.integration.helpers import REPO, fresh_settings, metrics_url, read_topic, settled_metrics, worker_env
from tests.integration.test_poison import CORPUS
from training.simulator import SimConfig, encode_stream, simulate

KILLS = int(os.environ.get("CHAOS_KILLS", "6"))
#: Events per second offered during the kills: the workers drain far faster, so this
#: (about 65 s for the log) is what keeps the stream running across all of them.
PRODUCE_RATE = 1_000
# One count signal per event type: their totals add up to the events a state has applied.
COUNTED = [i for i, s in enumerate(SIGNALS) if s.how == "count" and s.on != "coupon_purchases"]
#: After the last event is processed, how long every partition's commit has to reach the
#: end of the log before it counts as stalled (commits run every 2.8 s).
COMMIT_GRACE_S = 60.0
#: Worker a holds each seek to the committed offsets this long after reading them (the
#: test-only hook in streams.compat): longer than a commit interval, so its takeovers
#: process and commit records inside the seek, the race that used to stall commits.
HOLD_SEEK_S = float(os.environ.get("CHAOS_HOLD_SEEK_S", "4"))


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


def start_worker(settings: Settings, log: Path, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**worker_env(settings), **extra_env},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class Slot:
    """One worker's settings (own ports and data directory) and its current process."""

    def __init__(self, name: str, settings: Settings, tmp_path: Path, extra_env: dict[str, str]) -> None:
        self.name = name
        self.settings = settings
        self.extra_env = extra_env
        self.log = tmp_path / f"worker-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_worker(self.settings, self.log, self.extra_env)

    def assigned(self) -> float:
        try:
            return metric_sum(scrape_metrics(metrics_url(self.settings)), "retention_assigned_partitions")
        except OSError:
            return 0.0

    def wait_assigned(self, timeout_s: float = 120.0) -> bool:
        """Until the worker owns partitions (False if it did not in time: a kill during a
        rebalance is a fault too)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
            if self.assigned() > 0:
                return True
            time.sleep(0.2)
        return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def committed(broker: str, settings: Settings, ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker, "group.id": settings.app_id, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in found}
    finally:
        consumer.close()


def generations(slots: list[Slot]) -> set[int]:
    """Consumer-group generations any worker synced with (one per rebalance, the first included)."""
    found: set[int] = set()
    for slot in slots:
        if slot.log.exists():
            found.update(
                int(g) for g in re.findall(r"Successfully synced group \S+ with generation (\d+)", slot.log.read_text())
            )
    return found


def test_kills_and_rebalances_lose_nothing_count_nothing_twice_and_stall_no_commit(broker: str, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "7")))
    settings = fresh_settings(broker, tmp_path, partitions=4)
    ensure_topics(settings)
    slots = [
        Slot(
            name,
            settings.replace(metrics_port=free_port(), web_port=free_port(), data_dir=str(tmp_path / f"data-{name}")),
            tmp_path,
            {HOLD_SEEK_ENV: str(HOLD_SEEK_S)} if name == "a" else {},
        )
        for name in ("a", "b", "c")
    ]
    pair, joiner = slots[:2], slots[2]
    records = list(encode_stream(simulate(SimConfig(users=400, days=100, seed=13))))
    for _, payload, _ in CORPUS:
        records.insert(rng.randrange(len(records)), (b"poison-user", payload, "malformed"))
    # Produced while workers are killed, restarted and joined, so that every fault lands
    # mid-stream: pre-produced, the whole log drained before the later kills.
    producing = ThreadPoolExecutor(1).submit(produce_records, settings, records, rate=PRODUCE_RATE)

    faults = 0
    try:
        for slot in pair:
            slot.start()
        for slot in pair:
            slot.wait_assigned()
        while faults < KILLS:
            if faults == KILLS // 2:
                joiner.start()  # a third worker joins midway (and stays)
            victim = rng.choice(pair)
            victim.wait_assigned()
            time.sleep(rng.uniform(0.2, 2.5))  # mid-stream, mid-rebalance at times
            victim.kill()
            faults += 1
            victim.start()  # back at once: it rejoins while the others take its partitions over
        producing.result()
        ends = fetched_high_watermarks(broker, [(settings.events_topic, p) for p in range(settings.partitions)])
        assert sum(ends.values()) == len(records)
        for slot in slots:
            slot.wait_assigned()
        # All processed: every worker's counters quiet, twice over, after the last fault.
        for slot in slots:
            settled_metrics(slot.settings, quiet_s=3.0, timeout_s=300)
        deadline = time.monotonic() + COMMIT_GRACE_S
        while (commits := committed(broker, settings, ends)) != ends and time.monotonic() < deadline:
            time.sleep(1)
        changelog = read_topic(broker, settings.changelog_topics[0], settings.partitions)
        dead = read_topic(broker, settings.dlq_topic, settings.partitions)
        interventions = read_topic(broker, settings.coupon_topic, settings.partitions) + read_topic(
            broker, settings.recommendation_topic, settings.partitions
        )
    finally:
        for slot in slots:
            slot.stop()
    stalled = {f"{t}[{p}]": [commits[(t, p)], end] for (t, p), end in ends.items() if commits[(t, p)] != end}
    rebalances = max(0, len(generations(slots)) - 1)

    valid = [event for _, value, kind in records if kind == "valid" for event in [decode_event(value)]]
    valid_events = [e for e in valid if isinstance(e, Event)]
    assert len(valid_events) == len(valid)
    offline = replay_states(valid_events)
    latest = {k.decode(): v for k, v, _ in changelog if k is not None and v is not None}
    lost = doubled = 0
    for user_id, expected in offline.items():
        want = sum(expected.totals[i] for i in COUNTED)
        got = sum(load_state(latest[user_id]).totals[i] for i in COUNTED) if user_id in latest else 0.0
        lost += max(0, int(want - got))
        doubled += max(0, int(got - want))
    contents: dict[str, set[bytes]] = defaultdict(set)
    for _, value, _ in interventions:
        contents[json.loads(value)["intervention_id"]].add(value)
    conflicting = sum(1 for bodies in contents.values() if len(bodies) > 1)
    resent = len(interventions) - len(contents)
    unique_dead = {(h["retention.dlq.partition"], h["retention.dlq.offset"]): h for _, _, h in dead}
    reasons = Counter(h["retention.dlq.reason"].decode() for h in unique_dead.values())
    coupon_times: dict[str, list[float]] = defaultdict(list)
    for bodies in contents.values():
        body = json.loads(next(iter(bodies)))
        if body["kind"] == "coupon":
            coupon_times[body["user_id"]].append(datetime.fromisoformat(body["event_time"]).timestamp())
    cooldown_s = settings.policy.coupon_cooldown_days * 86_400
    within_cooldown = sum(
        1 for times in coupon_times.values() for a, b in pairwise(sorted(times)) if b - a < cooldown_s
    )
    figures = {
        "faults_injected": faults,
        "workers": len(slots),
        "seek_held_s": HOLD_SEEK_S,
        "rebalances": rebalances,
        "commit_stalls": len(stalled),
        "stalled_commits": stalled,
        "events_checked": len(valid_events),
        "events_lost": lost,
        "double_counts": doubled,
        "conflicting_interventions": conflicting,
        "interventions_resent_identically": resent,
        "bad_inputs_tried": len(CORPUS),
        "bad_inputs_dead_lettered": len(unique_dead),
        "dead_letters_written": len(dead),
        "coupons_within_cooldown_of_another": within_cooldown,
        "dead_letter_reasons": dict(reasons),
    }
    Path(os.environ.get("CHAOS_JSON", "chaos-results.json")).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    assert figures["events_lost"] == 0
    assert figures["double_counts"] == 0
    assert figures["conflicting_interventions"] == 0
    assert figures["commit_stalls"] == 0, stalled
    assert figures["rebalances"] >= KILLS
    assert figures["bad_inputs_dead_lettered"] == len(CORPUS)
    assert any(e.type is EventType.PURCHASE for e in valid_events)
