"""The Faust worker: assembly of the Faust app around the core batch pipeline.

Faust owns the consumer group, partition assignment, rebalances, the
changelog-backed tables, commits and the web server. Beneath its per-event
stream, the batch drain (``streams.batching``) hands over whole fetched batches,
sized against a latency target, to the processor (``streams.processor``), which
runs each through the core pipeline (``retention_model.pipeline``) once and
publishes what it returns. The rest is wiring: rebalance signals, timers that
export health, the model reload, and the HTTP views.

Where each job lives: tables and their store adapter ``streams.tables``; the
models and their reload ``streams.models``; outputs, dead letters and batch
metrics ``streams.publish``; commit watchdog, breaker, users and lag
``streams.health``; budget gauges ``streams.budgets``; HTTP ``streams.web``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import mode

from retention_model.model.scorer import ChurnModel
from streams import batching, compat
from streams.batch_size import AdaptiveBatchSize
from streams.batching import Records
from streams.erasure_requests import ErasureForwarder
from streams.health import COMMIT_WATCH_S
from streams.kafka import faust_credentials
from streams.metrics import Metrics
from streams.processor import BatchProcessor
from streams.settings import Settings
from streams.web import add_views

__all__ = ["BatchProcessor", "create_app"]


def create_app(
    settings: Settings, model: ChurnModel, metrics: Metrics, *, shadow: ChurnModel | None = None
) -> tuple[faust.App, BatchProcessor]:
    """Build the Faust app and its batch processor for ``settings``; the model is already loaded."""
    session = settings.session_timeout_s
    compat.check_faust_version()
    compat.cap_fetch_wait(settings.fetch_max_wait_ms)
    if settings.broker_kind == "tansu":
        compat.use_fetched_highwaters(",".join(settings.broker_list))
    compat.hold_seek_for_tests()
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
        # One drain iteration may take a whole batch from the fetched buffer: gathering
        # 8,192 records 1,024 at a time cost ~8% of backlog throughput (NOTES entry 23).
        broker_max_poll_records=settings.batch_max_size,
        table_standby_replicas=0,
        broker_credentials=faust_credentials(settings),
    )
    processor = BatchProcessor(app, settings, model, metrics, shadow)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        processor.revoked()

    @app.on_rebalance_complete.connect
    async def on_rebalance(sender: Any, **kwargs: Any) -> None:
        processor.rebalanced()
        assigned = [tp for tp in app.assignor.assigned_actives() if tp.topic == settings.events_topic]
        metrics.assigned_partitions.set(len(assigned))

    add_views(app, processor, state_api=settings.state_api == "on", token=settings.api_token)

    @app.timer(1.0)
    async def report_recovery() -> None:
        processor.consumer = app.consumer
        recovery = app.tables.recovery
        metrics.recovering.set(1 if recovery.in_recovery else 0)
        metrics.recovery_remaining.set(recovery.active_remaining_total() if recovery.in_recovery else 0)
        processor.report_breaker()
        processor.quality.refresh()  # the last outcomes of a burst, once the stream goes quiet
        if not recovery.in_recovery:
            # Recovered users count before their next event arrives (a restart read 0 until then).
            processor.users.refresh()

    @app.timer(COMMIT_WATCH_S)
    async def watch_commits() -> None:
        if not app.rebalancing:
            processor.watchdog.check(app.consumer, drain.offsets)

    if settings.erasure_requests_topic:
        forwarder = ErasureForwarder(settings, metrics)

        @app.service
        class ForwardErasureRequests(mode.Service):
            """Starts and stops the forwarder with the worker."""

            async def on_start(self) -> None:
                forwarder.start()

            async def on_stop(self) -> None:
                await asyncio.to_thread(forwarder.stop)

    if settings.model_reload_s > 0:

        @app.timer(settings.model_reload_s)
        async def reload_model() -> None:
            await processor.models.maybe_reload()

    # No agent: the batch drain feeds the processor whole fetched batches, and the
    # conductor only has to know the topic so that Faust subscribes to it.
    app.topics.add(
        app.topic(settings.events_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    )
    sizer = AdaptiveBatchSize(
        latency_target_s=settings.latency_target_ms / 1000.0,
        max_size=settings.batch_max_size,
        max_wait_s=settings.batch_max_wait_ms / 1000.0,
    )

    async def handle(batch: Records) -> Callable[[], Awaitable[None]]:
        processor.consumer = app.consumer
        return await processor.process(batch)

    drain = batching.BatchDrain(settings.events_topic, handle, sizer)
    batching.install(app, drain)  # the events topic commits from drain.offsets from now on

    @app.timer(5.0)
    async def report_batch_size() -> None:
        metrics.batch_size_target.set(sizer.size)

    return app, processor
