"""The Faust worker: a thin layer over the pure core.

Faust owns partition assignment, rebalances, the changelog-backed user-state
table and the web server. Per micro-batch the agent:

1. decodes every record (bad ones to the dead-letter topic with the reason);
2. folds each user's events into their state, skipping already-applied offsets;
3. scores every touched user in one model call, off the event loop;
4. runs the policy, writes each user's state once, publishes scores and
   interventions.

Offsets are acknowledged only after the batch's state writes and sends are
queued, so a crash replays the batch, and the per-user offset in the state makes
the replay a no-op for state (at-least-once delivery, effectively-once state).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import orjson
from faust.streams import _current_event
from faust.types import EventT

from retention_model.events import DecodeError, Event, UnknownEventType, decode_event
from retention_model.features.state import UserState, apply_event, dump_state, load_state
from retention_model.model.scorer import ChurnModel
from retention_model.scoring import build_features, finish_batch
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["BatchProcessor", "create_app"]

log = logging.getLogger(__name__)

STATE_TABLE = "user-state"


class BatchProcessor:
    """Processes one micro-batch of Faust events; holds no Kafka client of its own."""

    def __init__(self, app: faust.App, settings: Settings, model: ChurnModel, metrics: Metrics) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.policy = settings.policy
        self.table = app.Table(
            STATE_TABLE,
            default=None,
            partitions=settings.partitions,
            schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
            help="Per-user feature state (retention_model.features.state, binary v1)",
        )

        def raw_topic(name: str) -> Any:
            return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

        self.events_topic = raw_topic(settings.events_topic)
        self.dlq = raw_topic(settings.dlq_topic)
        self.scores = raw_topic(settings.scores_topic)
        self.kind_topics = {
            "coupon": raw_topic(settings.coupon_topic),
            "recommendation": raw_topic(settings.recommendation_topic),
        }
        # One thread: the model call releases the GIL, and a single thread keeps
        # TensorFlow's own thread pools from being oversubscribed.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")

    async def process(self, batch: Sequence[EventT]) -> None:
        """Decode, update state, score and publish one micro-batch."""
        metrics = self.metrics
        metrics.batch_events.observe(len(batch))
        by_user: dict[bytes, list[tuple[Event, EventT]]] = {}
        for fevent in batch:
            message = fevent.message
            value = message.value if message.value is not None else b""
            decoded = decode_event(value)
            if isinstance(decoded, Event):
                key = message.key
                if key is None or key != decoded.user_id.encode():
                    decoded = DecodeError(
                        "key_mismatch", f"record key {key!r} is not the event's user_id; producers key events by user_id"
                    )
            if isinstance(decoded, DecodeError):
                await self._dead_letter(fevent, decoded)
                continue
            if isinstance(decoded, UnknownEventType):
                metrics.events.labels("unknown", "ignored").inc()
                continue
            by_user.setdefault(message.key, []).append((decoded, fevent))

        user_ids: list[str] = []
        keys: list[bytes] = []
        states: list[UserState] = []
        now_ms: list[int] = []
        last_events: list[EventT] = []
        first_seen_s: list[float] = []
        new_users = 0
        for key, items in by_user.items():
            raw = self.table.get(key)
            state = load_state(raw) if raw is not None else UserState()
            if raw is None:
                new_users += 1
            applied = 0
            for event, fevent in items:
                if apply_event(state, event, fevent.message.offset):
                    applied += 1
                    metrics.events.labels(event.type.wire_name, "applied").inc()
                else:
                    metrics.events.labels(event.type.wire_name, "duplicate").inc()
            if not applied:
                continue
            user_ids.append(items[0][0].user_id)
            keys.append(key)
            states.append(state)
            now_ms.append(state.last_seen_ms)
            last_events.append(items[-1][1])
            first_seen_s.append(min(f.message.timestamp for _, f in items))
        if new_users:
            metrics.users_tracked.inc(new_users)
        if not states:
            return

        features = build_features(states, now_ms)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        risks = await loop.run_in_executor(self.executor, self.model.score_many, features)
        metrics.scoring_seconds.observe(time.perf_counter() - started)
        metrics.batch_users.observe(len(states))
        version = self.model.version
        scored = finish_batch(user_ids, states, now_ms, features, risks, model_version=version, config=self.policy)

        for key, state, fevent in zip(keys, states, last_events):
            # Faust picks the changelog partition from the current event; inside a
            # take_events() batch there is none, so name the user's own event. The
            # changelog partition then equals the user's source partition.
            token = _current_event.set(weakref.ref(fevent))
            try:
                self.table[key] = dump_state(state)
            finally:
                _current_event.reset(token)

        for key, result in zip(keys, scored):
            await self._send(self.scores, key, orjson.dumps(result.score_record(version)))
            metrics.scores.labels(result.tier).inc()
            for intervention in result.interventions:
                await self._send(self.kind_topics[intervention.kind], key, orjson.dumps(intervention.as_dict()))
                metrics.interventions.labels(intervention.kind, intervention.tier).inc()
        published = time.time()
        for seen in first_seen_s:
            metrics.decision_latency_seconds.observe(max(0.0, published - seen))

    async def _send(self, topic: Any, key: bytes, value: bytes) -> None:
        try:
            await topic.send(key=key, value=value)
        except Exception:
            self.metrics.publish_errors.labels(topic.get_topic_name()).inc()
            raise

    async def _dead_letter(self, fevent: EventT, error: DecodeError) -> None:
        """Original bytes as the value; why and where from in headers."""
        message = fevent.message
        headers = {
            "retention.dlq.reason": error.reason.encode(),
            "retention.dlq.detail": error.detail.encode(errors="replace"),
            "retention.dlq.topic": message.topic.encode(),
            "retention.dlq.partition": str(message.partition).encode(),
            "retention.dlq.offset": str(message.offset).encode(),
        }
        await self._send_dlq(message.key, message.value or b"", headers)
        self.metrics.dead_letters.labels(error.reason).inc()
        self.metrics.events.labels("invalid", "dead_lettered").inc()
        log.warning(
            "dead-lettered %s[%d]@%d: %s (%s)", message.topic, message.partition, message.offset, error.reason, error.detail
        )

    async def _send_dlq(self, key: bytes | None, value: bytes, headers: dict[str, bytes]) -> None:
        try:
            await self.dlq.send(key=key, value=value, headers=headers)
        except Exception:
            self.metrics.publish_errors.labels(self.settings.dlq_topic).inc()
            raise


def create_app(settings: Settings, model: ChurnModel, metrics: Metrics) -> tuple[faust.App, BatchProcessor]:
    """Build the Faust app and its agent for ``settings``; the model is already loaded."""
    session = settings.session_timeout_s
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{b}" for b in settings.broker_list],
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.1, session / 4),
        broker_rebalance_timeout=max(session, 2.0),
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
        stream_buffer_maxsize=max(4096, settings.batch_max_size * 2),
        table_standby_replicas=0,
    )
    processor = BatchProcessor(app, settings, model, metrics)
    within = settings.batch_max_wait_ms / 1000.0

    @app.agent(processor.events_topic, name="score-users")
    async def score_users(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take_events(settings.batch_max_size, within=within):
            await processor.process(batch)

    return app, processor
