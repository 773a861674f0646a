"""The closed loop's Kafka side: read what the worker sent, let the simulated users answer.

Why a thread beside the producer: the answers must join the event stream while it is
being produced (at their event time, through :class:`~training.closed_loop.LoopFeed`),
so the worker sees redemptions, clicks and returning users as it would live.
:class:`ClosedLoop` wires it up for ``retention demo`` and ``retention simulate --respond``.
"""

from __future__ import annotations

import heapq
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from streams.kafka import client_config, topic_specs

if TYPE_CHECKING:
    from retention_model.events import Event
    from streams.settings import Settings
    from training.closed_loop import LoopFeed, Responder
    from training.simulator import SimConfig, SimUser

__all__ = ["ClosedLoop", "InterventionListener", "effect_rows", "keep_valid", "loop_effect"]


class InterventionListener(threading.Thread):
    """Reads the coupon, recommendation and decisions topics; answers interventions into ``feed``.

    Records written before ``since_ms`` (producer time) belong to an earlier run and are
    skipped, so a topic that already holds another run's interventions is safe to read
    from the beginning (reading from the end could miss the first ones: the end is
    resolved lazily). Decisions are kept for the true uplift and the effect report.
    """

    def __init__(self, settings: Settings, responder: Responder, feed: LoopFeed, *, since_ms: int) -> None:
        super().__init__(daemon=True, name="intervention-listener")
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.settings, self.responder, self.feed, self.since_ms = settings, responder, feed, since_ms
        self.consumer = Consumer(
            {
                **client_config(settings),
                "group.id": f"retention-responder-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        partitions = topic_specs(settings)
        topics = (settings.coupon_topic, settings.recommendation_topic, settings.decisions_topic)
        self.consumer.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING)
                for topic in topics
                for p in range(partitions.get(topic, settings.partitions))
            ]
        )
        self.decisions: list[dict[str, Any]] = []
        self.interventions = 0
        self.last_record = time.monotonic()
        self._stopping = threading.Event()

    def run(self) -> None:
        """Consume until stopped; a record that is not JSON is skipped (it is not ours to judge)."""
        decisions_topic = self.settings.decisions_topic
        try:
            while not self._stopping.is_set():
                for message in self.consumer.consume(num_messages=2000, timeout=0.2):
                    if message.error() is not None:
                        continue
                    _, stamp = message.timestamp()
                    if 0 < stamp < self.since_ms:
                        continue
                    self.last_record = time.monotonic()
                    try:
                        body = orjson.loads(message.value())
                    except orjson.JSONDecodeError:
                        continue
                    if message.topic() == decisions_topic:
                        self.decisions.append(body)
                    else:
                        self.interventions += 1
                        self.feed.add(self.responder.respond(body))
        finally:
            self.consumer.close()

    def stop(self, idle_s: float = 0.0, timeout_s: float = 10.0) -> None:
        """Stop, after no record came for ``idle_s`` (at most ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() - self.last_record < idle_s and time.monotonic() < deadline:
            time.sleep(0.1)
        self._stopping.set()
        self.join(5)


def keep_valid(feed: LoopFeed, records: Iterator[tuple[bytes, bytes, str]], valid: list[Any]) -> Iterator[Any]:
    """The records, while keeping the events that went out valid (a malformed stand-in replaces its event)."""
    for record in records:
        if record[2] == "valid":
            valid.append(feed.emitted[-1])
        yield record


def loop_effect(
    listener: InterventionListener, responder: Responder, events: list[Any], *, horizon_days: int = 30
) -> dict[str, Any]:
    """Measured uplift against the holdout, redemptions and clicks, beside the simulator's true uplift."""
    from training.effect import effect_report, headline

    report = effect_report(listener.decisions, events, horizon_days=horizon_days)
    true = responder.true_uplift(listener.decisions, report["events_until_ms"])
    return {
        **headline(report),
        "true_uplift": true.uplift,
        "true_users": true.users,
        "true_persuadables": true.persuadables,
        "horizon_days": report["horizon_days"],
        "pending": report["decisions_pending"],
        "coupons_sent": report["coupons_sent"],
        "recommendations_sent": report["recommendations_sent"],
        "recommendations_clicked": report["recommendations_clicked"],
        "interventions_read": listener.interventions,
        "interventions_answered": responder.counts["responses"],
        "retained_by_response": responder.counts["retained"],
    }


def effect_rows(effect: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The closed loop's summary as (label, text) rows: responses, measured uplift, true uplift."""
    rows = [
        (
            "responses",
            f"{effect['redemptions']:,} coupons redeemed of {effect['coupons_sent']:,}, {effect['clicks']:,} clicks on "
            f"{effect['recommendations_sent']:,} recommendations ({effect['interventions_answered']:,} of "
            f"{effect['interventions_read']:,} interventions answered)",
        )
    ]
    if effect["uplift"] is None:
        rows.append(
            (
                "uplift vs holdout",
                f"n/a yet ({effect['pending']:,} users inside their {effect['horizon_days']}-day horizon)",
            )
        )
    else:
        rows.append(
            (
                "uplift vs holdout",
                f"{effect['uplift']:+.1%} (95% CI {effect['ci_low']:+.1%} .. {effect['ci_high']:+.1%}; "
                f"{effect['n_treated']:,} treated, {effect['n_holdout']:,} holdout"
                + ("; small sample, read with care" if effect["small_sample"] else "")
                + ")",
            )
        )
    if effect["true_uplift"] is not None:
        rows.append(
            (
                "true uplift (simulator)",
                f"{effect['true_uplift']:+.1%} over the same {effect['true_users']:,} users "
                f"({effect['true_persuadables']:,} persuadable and would not have bought)",
            )
        )
    return rows


class ClosedLoop:
    """Simulated users answering the worker: the responder, the merged feed and the listener.

    ``records()`` is what to produce (the generated events with the answers merged in,
    encoded); ``finish()`` stops listening and returns :func:`loop_effect` over the
    events that went out valid.
    """

    def __init__(
        self,
        settings: Settings,
        per_user: list[list[Event]],
        truth: list[SimUser],
        config: SimConfig,
        *,
        since_ms: int,
        events: Iterable[Event] | None = None,
        horizon_days: int = 30,
        tail_s: float = 0.0,
    ) -> None:
        from training.closed_loop import LoopFeed, Responder

        self.horizon_days = horizon_days
        self.responder = Responder(per_user, truth, config, horizon_days=horizon_days)
        merged = events if events is not None else heapq.merge(*per_user, key=lambda e: e.ts_ms)
        self.feed = LoopFeed(merged, tail_s=tail_s)
        self.listener = InterventionListener(settings, self.responder, self.feed, since_ms=since_ms)
        self.valid: list[Event] = []

    def start(self) -> ClosedLoop:
        self.listener.start()
        return self

    def records(self, *, seed: int, malformed_rate: float = 0.0, unknown_rate: float = 0.0) -> Iterator[Any]:
        """(key, value, kind) records of the feed, as ``encode_stream`` makes them."""
        from training.simulator import encode_stream

        encoded = encode_stream(iter(self.feed), seed=seed, malformed_rate=malformed_rate, unknown_rate=unknown_rate)
        return keep_valid(self.feed, encoded, self.valid)

    def finish(self, *, idle_s: float, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop after ``idle_s`` without a record; the effect over what was produced valid."""
        self.listener.stop(idle_s=idle_s, timeout_s=timeout_s)
        return loop_effect(self.listener, self.responder, self.valid, horizon_days=self.horizon_days)

    def close(self) -> None:
        """Stop listening (idempotent; for ``finally``)."""
        if self.listener.is_alive():
            self.listener.stop()
