"""A worker killed with SIGKILL comes back with its state and silence timers, from the changelog."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from retention_model.events import encode_event
from retention_model.features.state import DAY_MS
from streams.demo import metric_sum
from streams.producer import produce_records

from .helpers import (
    assert_state_matches_offline,
    fresh_settings,
    read_topic,
    running_worker,
    settled_metrics,
    wait_for_metric,
)
from .test_silence import T0, buyer_events

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_state_and_silence_timers_survive_a_kill(broker: str, tmp_path: Path, store: str) -> None:
    """Memory store: rebuilt from the changelog. RocksDB: kept on disk, the changelog's tail read on top."""
    if store == "rocksdb://":
        pytest.importorskip(
            "rocksdict", reason="the RocksDB store needs the rocksdb extra (pip install -e '.[rocksdb]')"
        )
    settings = fresh_settings(broker, tmp_path, store=store)
    quitters = [f"q{i:02d}" for i in range(20)]
    stayers = [f"s{i:02d}" for i in range(20)]
    events = [e for u in quitters for e in buyer_events(u, 60)] + [e for u in stayers for e in buyer_events(u, 150)]
    events.sort(key=lambda e: e.ts_ms)
    split = T0 + 62 * DAY_MS  # quitters' last events, and their timers, are filed before the kill
    before = [(e.user_id.encode(), encode_event(e), "valid") for e in events if e.ts_ms < split]
    after = [(e.user_id.encode(), encode_event(e), "valid") for e in events if e.ts_ms >= split]

    with running_worker(settings, tmp_path / "worker-1.log") as first:
        produce_records(settings, before)
        wait_for_metric(settings, "retention_events_total", len(before))
        first.kill()  # SIGKILL: no goodbye, offsets of the last batches likely uncommitted
        first.wait()

    with running_worker(settings, tmp_path / "worker-2.log"):
        produce_records(settings, after)
        wait_for_metric(settings, "retention_events_total", len(after), outcome="applied")
        wait_for_metric(settings, "retention_silence_rescored_total", len(quitters))
        samples = settled_metrics(settings)
        changelog = read_topic(broker, settings.changelog_topics[0], settings.partitions)
        scores = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.scores_topic, settings.partitions)]

    # Nothing lost, nothing counted twice: the recovered state equals the offline replay.
    assert_state_matches_offline(changelog, events)
    assert metric_sum(samples, "retention_events_total", outcome="applied") <= len(after) + len(before)
    assert metric_sum(samples, "retention_users_tracked") == len({e.user_id for e in events})  # recovered users counted
    assert metric_sum(samples, "retention_recovering") == 0
    assert metric_sum(samples, "retention_recovery_remaining_records") == 0

    # The quitters sent nothing after the restart; only recovered timers can have re-scored them.
    silenced_after_restart = {
        s["user_id"] for s in scores if s["trigger"] == "silence" and s["event_time"] > "2025-03-04"
    }
    missing = sorted(set(quitters) - silenced_after_restart)
    assert not missing, {u: [(s["trigger"], s["event_time"]) for s in scores if s["user_id"] == u] for u in missing[:3]}
