"""``retention simulate --respond`` without a broker: its refusals, and the listener's routing.

The run against a real broker and worker is tests/integration/test_simulate_respond.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from retention_model.events import EventType
from streams.cli import main
from streams.responder import InterventionListener, effect_rows, keep_valid
from streams.settings import Settings
from training.closed_loop import LoopFeed, Responder
from training.simulator import SimConfig, encode_stream, simulate, simulate_users


@pytest.mark.parametrize(
    "extra",
    [["--out", "x.jsonl"], ["--out", "x.parquet"], ["--live"], ["--live", "--out", "x.jsonl"]],
    ids=["jsonl", "parquet", "live", "live-and-out"],
)
def test_respond_refuses_a_file_or_the_live_clock(
    extra: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--users", "5", "--days", "5", "--respond", *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert err.startswith("retention simulate: ")
    assert "--live" in err  # says what to drop
    assert not list(tmp_path.iterdir())  # nothing written


def test_keep_valid_keeps_the_events_that_went_out_valid() -> None:
    events = list(simulate(SimConfig(users=20, days=20, seed=3)))
    feed = LoopFeed(events)
    valid: list[Any] = []
    records = list(keep_valid(feed, encode_stream(iter(feed), seed=1, malformed_rate=0.2, unknown_rate=0.1), valid))
    kinds = [kind for _, _, kind in records]
    assert {"valid", "malformed", "unknown"} <= set(kinds)
    assert valid == [event for event, kind in zip(events, kinds, strict=True) if kind == "valid"]


class _Message:
    def __init__(self, topic: str, body: dict[str, Any] | bytes, stamp_ms: int) -> None:
        self._topic, self._stamp = topic, stamp_ms
        self._value = body if isinstance(body, bytes) else orjson.dumps(body)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def timestamp(self) -> tuple[int, int]:
        return 1, self._stamp

    def value(self) -> bytes:
        return self._value


class _Consumer:
    """Hands out one batch, then stops the listener."""

    def __init__(self, batch: list[_Message], stop: threading.Event) -> None:
        self.batch, self.stop, self.closed = batch, stop, False

    def consume(self, num_messages: int, timeout: float) -> list[_Message]:
        batch, self.batch = self.batch, []
        if not batch:
            self.stop.set()
        return batch

    def close(self) -> None:
        self.closed = True


def test_the_listener_answers_interventions_keeps_decisions_and_skips_earlier_runs() -> None:
    config = SimConfig(users=30, days=60, seed=5)
    per_user, truth = simulate_users(config)
    responder = Responder(per_user, truth, config)
    feed = LoopFeed([])
    settings = Settings.load({})
    listener = InterventionListener(settings, responder, feed, since_ms=1_000)
    listener.consumer.close()
    # A recommendation of every user's favourite items, 20 days in: some of them click.
    start = min(events[0].ts_ms for events in per_user if events)
    recos = [
        {
            "intervention_id": f"{n:032x}",
            "user_id": user.user_id,
            "kind": "recommendation",
            "event_time": start + 20 * 86_400_000,
            "recommendation": {
                "items": [{"item_id": i, "category": "c" + i[1:3]} for i in sorted(user.favourite_items)]
            },
        }
        for n, user in enumerate(truth, start=1)
    ]
    decision = {"decision_id": "d1", "user_id": truth[0].user_id, "action": "held_out"}
    batch = [_Message(settings.recommendation_topic, body, 2_000) for body in recos]
    batch += [
        _Message(settings.decisions_topic, decision, 2_000),
        _Message(settings.coupon_topic, {**recos[0], "intervention_id": "f" * 32}, 999),  # an earlier run's
        _Message(settings.coupon_topic, b"not json", 2_000),
    ]
    consumer = _Consumer(batch, listener._stopping)
    listener.consumer = consumer  # type: ignore[assignment]
    listener.run()
    assert consumer.closed
    assert listener.interventions == len(recos)
    assert listener.decisions == [decision]
    answered = list(feed)
    assert responder.counts["clicks"] > 0
    assert (
        sum(e.type is EventType.VIEW and e.intervention_id is not None for e in answered) >= responder.counts["clicks"]
    )
    # Only this run's interventions were answered: none to the earlier run's coupon.
    assert {e.intervention_id for e in answered} - {None} <= {r["intervention_id"] for r in recos}


def test_effect_rows_say_when_the_horizon_has_not_closed() -> None:
    effect = {
        "uplift": None,
        "ci_low": None,
        "ci_high": None,
        "n_treated": 0,
        "n_holdout": 0,
        "small_sample": True,
        "redemptions": 0,
        "clicks": 3,
        "coupons_sent": 4,
        "recommendations_sent": 5,
        "interventions_read": 12,
        "interventions_answered": 9,
        "pending": 7,
        "horizon_days": 30,
        "true_uplift": None,
        "true_users": 0,
        "true_persuadables": 0,
    }
    rows = dict(effect_rows(effect))
    assert rows["responses"].endswith("(9 of 12 interventions answered)")
    assert rows["uplift vs holdout"] == "n/a yet (7 users inside their 30-day horizon)"
    assert "true uplift (simulator)" not in rows
    measured = {**effect, "uplift": 0.1, "ci_low": 0.02, "ci_high": 0.18, "n_treated": 80, "n_holdout": 40}
    rows = dict(effect_rows({**measured, "small_sample": False, "true_uplift": 0.09, "true_users": 120}))
    assert rows["uplift vs holdout"] == "+10.0% (95% CI +2.0% .. +18.0%; 80 treated, 40 holdout)"
    assert rows["true uplift (simulator)"].startswith("+9.0% over the same 120 users")
