"""Silence is a signal: users who stop are re-scored with no event from them, and the
state endpoint answers for a user."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from retention_model.events import Event, EventType, encode_event
from retention_model.features.state import DAY_MS
from retention_model.policy.policy import iso_ms
from streams.producer import produce_records

from .helpers import fresh_settings, read_topic, running_worker, wait_for_metric

pytestmark = pytest.mark.integration

T0 = 1_735_689_600_000  # 2025-01-01


def buyer_events(user_id: str, last_day: int) -> list[Event]:
    events = []
    for day in range(0, last_day + 1, 5):
        t = T0 + day * DAY_MS + 3_600_000
        events += [
            Event(f"{user_id}-{day}-s", user_id, EventType.SESSION_START, t),
            Event(f"{user_id}-{day}-v", user_id, EventType.VIEW, t + 1000, category="books", price=20.0),
            Event(f"{user_id}-{day}-c", user_id, EventType.ADD_TO_CART, t + 2000, category="books", price=20.0),
            Event(f"{user_id}-{day}-p", user_id, EventType.PURCHASE, t + 3000, category="books", price=20.0),
        ]
    return events


def test_a_cohort_that_stops_buying_is_rescored_and_its_risk_rises(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path)
    quitters = [f"q{i:02d}" for i in range(20)]
    stayers = [f"s{i:02d}" for i in range(20)]
    events = [e for u in quitters for e in buyer_events(u, 60)] + [e for u in stayers for e in buyer_events(u, 150)]
    events.sort(key=lambda e: e.ts_ms)
    records = [(e.user_id.encode(), encode_event(e), "valid") for e in events]
    quitter_last = {u: max(e.ts_ms for e in events if e.user_id == u) for u in quitters}
    # The stayers' last events fall at the very time of a quitter's 90-day mark and the
    # watermark trails them by the allowed lateness (300 s), so that mark has not fired;
    # every earlier one has, in order, at its own event time: 7, 14, 30 and 60 days after
    # the last event (the fixed marks), 10 and 15 days (twice and three times the 5-day
    # purchase gap).
    marks_days = (7, 10, 14, 15, 30, 60)

    with running_worker(settings, tmp_path / "worker.log"):
        produce_records(settings, records)
        wait_for_metric(settings, "retention_events_total", len(records))
        wait_for_metric(settings, "retention_silence_rescored_total", len(marks_days) * len(quitters))
        # One event from the distant past: counted as late, applied all the same.
        late = Event("late-1", "s00", EventType.REVIEW, T0 + 20 * DAY_MS, rating=5.0)
        produce_records(settings, [(b"s00", encode_event(late), "valid")])
        wait_for_metric(settings, "retention_late_events_total", 1)
        wait_for_metric(settings, "retention_events_total", len(records) + 1, outcome="applied")
        scores = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.scores_topic, settings.partitions)]
        base = f"http://{settings.web_host}:{settings.web_port}/users"
        with urllib.request.urlopen(f"{base}/q00/", timeout=10) as response:
            described = json.loads(response.read())
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nobody/", timeout=10)

    by_user: dict[str, list[dict[str, object]]] = defaultdict(list)
    for score in scores:
        by_user[str(score["user_id"])].append(score)
    risen = 0
    for user in quitters:
        event_scores = [s for s in by_user[user] if s["trigger"] == "event"]
        silence_scores = [s for s in by_user[user] if s["trigger"] == "silence"]
        assert event_scores[-1]["event_time"] == iso_ms(quitter_last[user])
        expected = [iso_ms(quitter_last[user] + days * DAY_MS) for days in marks_days]
        assert [s["event_time"] for s in silence_scores] == expected, user
        assert by_user[user][-len(silence_scores) :] == silence_scores  # re-scores follow the last event's score
        if max(float(s["risk"]) for s in silence_scores) > float(event_scores[-1]["risk"]) + 0.1:  # type: ignore[arg-type]
            risen += 1
    assert risen >= 0.9 * len(quitters)
    # Stayers keep buying every 5 days: their silences never reach 7 days.
    assert not [s for u in stayers for s in by_user[u] if s["trigger"] == "silence"]

    assert described["user_id"] == "q00"
    assert described["features"]["purchases_count_total"] == 13
    assert described["last_score"]["risk"] > 0
    assert described["profile"]["top_categories"] == ["books"]
    assert described["last_seen"] == iso_ms(quitter_last["q00"])
    assert described["last_score"]["event_time"] == iso_ms(quitter_last["q00"] + 60 * DAY_MS)  # the last mark fired
    assert described["next_silence_check"] == iso_ms(quitter_last["q00"] + 90 * DAY_MS)  # the one still to come
    assert missing.value.code == 404
