"""Training at scale: a log read in chunks and replayed once gives exactly the whole-log rows and labels."""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from retention_model.errors import EventLogError
from retention_model.events import Event, EventType, encode_event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.offline import events_by_user, features_at
from retention_model.features.state import DAY_MS
from retention_model.policy.recommend_learn import learn_recommendations
from training.dataset import SECONDARY_DAYS, TrainConfig, build_dataset, plan_cutoffs
from training.eventlog import read_event_log
from training.replay import EventLog, event_chunks, summarise
from training.simulator import SimConfig, simulate
from training.train import _one_pass
from training.uplift import TreatmentRecord


def _disordered(events: list[Event]) -> list[Event]:
    """The log with late events (every 37th moved 60 places later) and retries (every 101st sent again)."""
    out = list(events)
    for i in range(len(out) - 61, 0, -37):
        out.insert(i + 60, out.pop(i))
    for i in range(len(out) - 10, 0, -101):
        out.insert(i + 5, out[i])
    return out


def _at_midnights(events: list[Event], users: int) -> list[Event]:
    """The log with ``users`` users in time order viewing at every midnight (the cutoffs' instants)."""
    in_order = [u for u, ev in events_by_user(events).items() if all(a.ts_ms <= b.ts_ms for a, b in pairwise(ev))]
    due = {u: events_by_user(events)[u][0].ts_ms // DAY_MS * DAY_MS + DAY_MS for u in in_order[:users]}
    out = []
    for event in events:
        user = event.user_id
        while user in due and due[user] < event.ts_ms:
            out.append(Event(f"{user}-m{due[user]}", user, EventType.VIEW, due[user], item_id="i0", category="c00"))
            due[user] += DAY_MS
        out.append(event)
    return out


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Event]]:
    events = _at_midnights(_disordered(list(simulate(SimConfig(users=160, days=200, seed=11)))), users=10)
    path = tmp_path_factory.mktemp("replay") / "log.jsonl"
    path.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    return path, events


def _whole_log_dataset(events: list[Event], cutoffs: list[int], config: TrainConfig) -> dict[str, object]:
    """The rows as the whole log in memory gives them: features_at over every user's events, labels by hand."""
    per_user = events_by_user(events)
    points = [(u, c) for u, ev in per_user.items() for c in cutoffs if min(e.ts_ms for e in ev) <= c]
    keys, matrix = features_at(per_user, points)
    keep = matrix[:, FEATURE_NAMES.index("recency_days")] <= config.max_silence_days
    keys = [k for k, kept in zip(keys, keep) if kept]
    horizon, short = config.horizon_days * DAY_MS, SECONDARY_DAYS * DAY_MS
    labels = []
    for user, cutoff in keys:
        ev = per_user[user]
        bought = sorted((e.ts_ms, e.amount) for e in ev if e.type is EventType.PURCHASE)

        def within(kind: EventType, span: int, ev: list[Event] = ev, cutoff: int = cutoff) -> float:
            return float(any(e.type is kind and cutoff < e.ts_ms <= cutoff + span for e in ev))

        labels.append(
            (
                1.0 - within(EventType.PURCHASE, horizon),
                within(EventType.PURCHASE, short),
                within(EventType.CANCEL_ORDER, short),
                within(EventType.REVIEW, short),
                sum(a for t, a in bought if cutoff < t <= cutoff + horizon),
            )
        )
    return {"keys": keys, "features": matrix[keep], "labels": np.asarray(labels)}


def test_chunked_replay_gives_the_whole_log_rows_and_labels(log: tuple[Path, list[Event]]) -> None:
    path, events = log
    config = TrainConfig(max_silence_days=60)
    summary = summarise(EventLog(path))
    assert summary.events == len(events) and summary.users == 160
    assert len(summary.late_users) > 20  # the late events are there to be handled
    assert len({e.event_id for e in events}) < len(events)  # and the retries
    plan = plan_cutoffs(summary.first_ms, summary.last_ms, config)
    expected = _whole_log_dataset(events, plan.all_cutoffs, config)
    assert len(expected["keys"]) > 500
    for source in (EventLog(path, chunk_rows=997), EventLog(path, chunk_rows=1), events):
        data = build_dataset(source, plan.all_cutoffs, config)
        assert data.keys == expected["keys"]
        assert np.array_equal(data.features, expected["features"])
        labels = np.column_stack([data.churn, data.purchase_7d, data.cancel_7d, data.review_7d, data.spend_h])
        assert np.array_equal(labels, expected["labels"])
        assert len(data.silenced) > 0


def test_one_pass_learns_recommendations_and_uplift_rows_from_the_events_before_the_cutoff(
    log: tuple[Path, list[Event]],
) -> None:
    path, events = log
    config = TrainConfig()
    summary = summarise(events)
    plan = plan_cutoffs(summary.first_ms, summary.last_ms, config)
    users = list(dict.fromkeys(e.user_id for e in reversed(events)))[:60]
    treatment = [
        TreatmentRecord(u, plan.test - (i % 5) * 9 * DAY_MS, i % 2 == 0, i % 3 == 0) for i, u in enumerate(users)
    ]
    treatment.append(TreatmentRecord(users[0], plan.test + 3 * DAY_MS, True, False))  # after the cutoff: sees up to it
    data, seen = _one_pass(EventLog(path, chunk_rows=500), plan, config, summary, treatment)

    before = [e for e in events if e.ts_ms <= plan.test]
    assert seen.recommendations == learn_recommendations(before)
    assert seen.categories == Counter(e.category for e in before if e.type is EventType.PURCHASE and e.category)
    keys, matrix = features_at(events_by_user(before), [(r.user_id, r.decision_ms) for r in treatment])
    assert seen.uplift_rows is not None
    assert seen.uplift_rows[0] == keys and np.array_equal(seen.uplift_rows[1], matrix)
    assert data.keys == build_dataset(events, plan.all_cutoffs, config).keys


def test_chunked_reads_equal_whole_reads_for_jsonl_parquet_and_csv(
    log: tuple[Path, list[Event]], tmp_path: Path
) -> None:
    path, _ = log
    frame = pd.DataFrame([orjson.loads(line) for line in path.read_bytes().splitlines()])
    parquet, csv = tmp_path / "log.parquet", tmp_path / "log.csv"
    frame.to_parquet(parquet, index=False)
    frame.drop(columns=[c for c in ("items",) if c in frame.columns]).to_csv(csv, index=False)
    for file in (path, parquet, csv):
        chunks = list(event_chunks(file, chunk_rows=700))
        assert len(chunks) > 1
        assert [e for chunk in chunks for e in chunk] == read_event_log(file)


def test_bad_rows_in_a_later_chunk_stop_the_read_or_are_counted_once(tmp_path: Path) -> None:
    good = b'{"event_id":"e%d","user_id":"u1","type":"view","ts":1740000000000}'
    bad = b'{"event_id":"x","user_id":"u1","type":"purchase","ts":1740000000000,"price":10,"quantity":74215}'
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join([good % i for i in range(5)] + [bad] + [good % 9]) + b"\n")
    with pytest.raises(EventLogError, match=r"log.jsonl:6: invalid_value"):
        list(EventLog(path, chunk_rows=2).chunks())
    lenient = EventLog(path, skip_invalid=True, chunk_rows=2)
    assert summarise(lenient).events == 6
    build_dataset(lenient, [1740000000000], TrainConfig())  # a second pass
    assert lenient.skipped == {"invalid_value": 1}


T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
CUTOFF = T0 + 30 * DAY_MS  # the labels: purchases in (CUTOFF, CUTOFF + 30 days], the rest in (CUTOFF, CUTOFF + 7 days]
FIELDS = {EventType.PURCHASE: {"price": 25.0, "quantity": 1}, EventType.REVIEW: {"rating": 4}}


@pytest.mark.parametrize(
    ("kind", "at", "labels"),
    [
        (EventType.PURCHASE, CUTOFF, (1.0, 0.0, 0.0, 0.0, 0.0)),  # at the cutoff: a feature, not a label
        (EventType.PURCHASE, CUTOFF + 30 * DAY_MS, (0.0, 0.0, 0.0, 0.0, 25.0)),  # the horizon's last instant
        (EventType.PURCHASE, CUTOFF + 30 * DAY_MS + 1, (1.0, 0.0, 0.0, 0.0, 0.0)),  # one ms after it
        (EventType.PURCHASE, CUTOFF + 7 * DAY_MS, (0.0, 1.0, 0.0, 0.0, 25.0)),  # the 7 days' last instant
        (EventType.CANCEL_ORDER, CUTOFF + 7 * DAY_MS, (1.0, 0.0, 1.0, 0.0, 0.0)),
        (EventType.REVIEW, CUTOFF + 7 * DAY_MS, (1.0, 0.0, 0.0, 1.0, 0.0)),
        (EventType.REVIEW, CUTOFF + 7 * DAY_MS + 1, (1.0, 0.0, 0.0, 0.0, 0.0)),
    ],
)
def test_label_windows_open_after_the_cutoff_and_close_on_their_last_instant(
    kind: EventType, at: int, labels: tuple[float, ...]
) -> None:
    events = [
        Event("e0", "u1", EventType.VIEW, T0, item_id="i1", category="c1"),
        Event("e1", "u1", kind, at, item_id="i1", **FIELDS.get(kind, {})),  # type: ignore[arg-type]
    ]
    config = TrainConfig(horizon_days=30, max_silence_days=None)
    for source in (events, iter(events)):  # in memory, and fed as a stream
        data = build_dataset(source, [CUTOFF], config)  # type: ignore[arg-type]
        assert data.keys == [("u1", CUTOFF)]
        rows = (data.churn, data.purchase_7d, data.cancel_7d, data.review_7d, data.spend_h)
        assert tuple(float(column[0]) for column in rows) == labels


def test_retention_train_reports_skipped_rows_once_and_refuses_a_short_log_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.cli import main

    good = b'{"event_id":"e%d","user_id":"u1","type":"view","ts":1740000000000}'
    bad = b'{"event_id":"x","user_id":"u1","type":"purchase","ts":1740000000000,"price":10,"quantity":74215}'
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join([good % i for i in range(3)] + [bad]) + b"\n")
    argv = ["train", "--events", str(log), "--registry", str(tmp_path / "r")]
    assert main([*argv, "--skip-invalid"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"skipped 1 invalid rows of {log} (1 invalid_value)"
    assert err[-1].startswith("retention train: cutoff ") and "outside the event log" in err[-1]
    assert main(argv) == 2
    assert re.search(r"retention train: .*log\.jsonl:4: invalid_value", capsys.readouterr().err)
