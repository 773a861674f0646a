"""Recovery time: a worker starting on a changelog of 100,000 users, against an empty one.

The user states are written straight into the user-state changelog (as a previous worker
would have left them), each in the partition of its user's events. A worker is then
started and timed until it has recovered them and processed a first event; the reference
is the same start on an empty changelog, in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from retention_model.events import Event, EventType, encode_event
from retention_model.features.state import DAY_MS, UserState, apply_event, dump_state
from streams.demo import metric_sum, scrape_metrics
from streams.kafka import ensure_topics
from streams.producer import produce_records
from tests.integration.helpers import fresh_settings, metrics_url, running_worker

USERS = 100_000
T0 = 1_735_689_600_000


def _states(n: int) -> list[tuple[bytes, bytes, str]]:
    out = []
    for i in range(n):
        user = f"r{i:07d}"
        state = UserState()
        for day in (0, 9, 20):
            event = Event(f"{user}-{day}", user, EventType.PURCHASE, T0 + day * DAY_MS, price=20.0, category="books")
            apply_event(state, event, day)
        out.append((user.encode(), dump_state(state), "valid"))
    return out


def _time_to_first_batch(settings: Any, log: Path, tracked: int) -> float:
    """Seconds from starting the worker to its first processed event after recovery."""
    started = time.monotonic()
    with running_worker(settings, log, timeout_s=600):
        probe = Event("probe", "probe-user", EventType.VIEW, T0 + 30 * DAY_MS)
        produce_records(settings, [(b"probe-user", encode_event(probe), "valid")])
        deadline = time.monotonic() + 600
        while metric_sum(scrape_metrics(metrics_url(settings)), "retention_users_tracked") < tracked + 1:
            assert time.monotonic() < deadline, "recovery did not finish"
            time.sleep(0.2)
        return time.monotonic() - started


def test_recovery_of_100k_users(bench: Any, broker: str, tmp_path: Path) -> None:
    empty = fresh_settings(broker, tmp_path, partitions=4)
    bench("recovery.empty_start_s", _time_to_first_batch(empty, tmp_path / "empty.log", 0), unit="s")

    settings = fresh_settings(broker, tmp_path, partitions=4)
    ensure_topics(settings)
    states = _states(USERS)
    changelog = settings.replace(events_topic=settings.changelog_topics[0])
    produce_records(changelog, states)  # keyed like the events: the same partitioner
    seconds = _time_to_first_batch(settings, tmp_path / "full.log", USERS)
    bench("recovery.start_with_100k_users_s", seconds, unit="s", reference="recovery.empty_start_s")
