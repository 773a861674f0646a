"""Whole fetched batches for the events topic, beneath Faust's per-event stream.

Faust turns every fetched record into a message, an event, a queue entry and a
trip through its stream iterator (a task per record to race the flow-control
flag): about 8,000 events/s on two cores whatever the agent does. The records
arrive from aiokafka in lists per partition already, so for the events topic
this drain hands those lists to the worker as they are, and marks each
partition delivered up to the end of a whole batch at once.

Faust keeps everything else: the consumer and its group membership, partition
assignment and rebalances, the tables, their changelogs and recovery (changelog
records still take Faust's own per-record path), the commit timer, timers and
the web server. What the events topic commits is the worker's own
(``streams.commits``: one delivered-up-to offset per partition and generation,
not Faust's per-offset ack lists). Three contracts with Faust are kept explicitly:

* a batch in flight is registered with the consumer's set of unacknowledged
  messages, so a rebalance waits for it before committing (``wait_empty``);
* partitions are marked delivered only after the batch's outputs are delivered,
  in batch order, and a batch that spans a rebalance marks nothing (it is
  re-read, and the per-user source offsets in the state make the replay a no-op);
* records fetched while flow is stopped, or under an older consumer generation,
  are dropped unprocessed: Faust seeks back to the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from faust.types import TP

from streams import compat
from streams.batch_size import AdaptiveBatchSize
from streams.commits import DeliveredOffsets

__all__ = ["BatchDrain", "Records", "install", "split_batch"]

log = logging.getLogger(__name__)

#: Records of one micro-batch by partition, each list in offset order
#: (aiokafka ``ConsumerRecord``: topic, partition, offset, timestamp in ms, key, value, headers).
Records = dict[TP, list[Any]]
#: Processes a batch and returns a coroutine function that waits for its outputs' delivery.
BatchHandler = Callable[[Records], Awaitable[Callable[[], Awaitable[None]]]]


class _InFlight:
    """Stands for a running batch among the consumer's unacknowledged messages."""

    __slots__ = ("__weakref__", "acked", "refcount", "size")

    def __init__(self, size: int) -> None:
        self.acked = False
        self.refcount = 1
        self.size = size

    def __repr__(self) -> str:
        return f"<batch of {self.size} events in flight>"


class BatchDrain:
    """Fetches, gathers and dispatches events-topic batches for one Faust consumer."""

    def __init__(self, topic: str, handler: BatchHandler, sizer: AdaptiveBatchSize) -> None:
        self.topic = topic
        self.handler = handler
        self.sizer = sizer
        #: Per partition, delivered up to (what the events topic commits).
        self.offsets = DeliveredOffsets(topic)
        self._generation: int | None = None
        #: Delivery and acknowledgement of the last dispatched batch.
        self._settling: asyncio.Future[None] | None = None
        #: Per partition, records at the broker beyond the last one fetched.
        self._behind: dict[TP, int] = {}

    async def run(self, consumer: Any, fetcher: Any) -> None:
        """Replacement for ``Consumer._drain_messages`` (Faust's fetcher task)."""
        app = consumer.app
        callback = consumer.callback
        read_offset = compat.read_offsets(consumer)
        consumer_stopped, fetcher_stopped = compat.stop_flags(consumer, fetcher)
        track_end = app.monitor.track_tp_end_offset
        pending: Records = {}
        count = 0
        oldest = 0.0  # when the drain saw the batch's first record (monotonic seconds)
        oldest_event_s = 0.0  # the earliest producer timestamp among them (epoch seconds)
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self._check_settling()
                behind = sum(self._behind.values())
                if not count:
                    wait = 1.0
                elif behind >= self.sizer.size - count:
                    wait = 0.0  # enough to fill the batch is waiting at the broker: fetch it now
                else:
                    wait = max(0.0, self.sizer.queue_delay_s - _waited(oldest, oldest_event_s))
                records, active = await compat.next_records(consumer, wait)
                await consumer.sleep(0)
                if consumer.should_stop:
                    break
                generation = app.consumer_generation_id
                if generation != self._generation or not consumer.flow_active:
                    # Rebalancing or rebalanced: what was gathered is re-read from the commits.
                    self._drop(pending)
                    pending, count = {}, 0
                    self._behind.clear()
                    self._generation = generation
                    if not consumer.flow_active:
                        if records:
                            await consumer.perform_seek()
                        continue
                for tp, tp_records in (records or {}).items():
                    if active is not None and tp not in active and tp not in compat.buffered_partitions(consumer):
                        if tp.topic == self.topic:
                            self._drop({tp: tp_records})
                        continue
                    highwater = consumer.highwater(tp)
                    track_end(tp, highwater)
                    if tp.topic != self.topic:
                        await self._per_message(consumer, callback, tp, tp_records)
                        continue
                    after = read_offset[tp]
                    if after is not None and tp_records[0].offset < after:
                        tp_records = [r for r in tp_records if r.offset >= after]
                        if not tp_records:
                            continue
                    produced_s = _produced_s(tp_records[0])
                    if not count:
                        oldest, oldest_event_s = time.monotonic(), produced_s
                    else:
                        oldest_event_s = min(oldest_event_s, produced_s)
                    pending.setdefault(tp, []).extend(tp_records)
                    count += len(tp_records)
                    read_offset[tp] = tp_records[-1].offset
                    if highwater is not None:
                        self._behind[tp] = max(0, highwater - tp_records[-1].offset - 1)
                while count:
                    # Keeping up: batches sized to the latency target. Behind (more waiting
                    # at the broker than the largest batch holds): latency is lost to
                    # queueing already, and the largest batches drain the backlog fastest.
                    catching_up = sum(self._behind.values()) > self.sizer.max_size
                    limit = self.sizer.max_size if catching_up else self.sizer.size
                    delay = self.sizer.latency_target_s if catching_up else self.sizer.queue_delay_s
                    # Keeping up, the wait counts from when the oldest event was produced;
                    # catching up, from when the drain saw it (every event is old then).
                    waited = time.monotonic() - oldest if catching_up else _waited(oldest, oldest_event_s)
                    if count < limit and waited < delay:
                        break
                    # The batch closes: everything gathered so far goes now, up to the
                    # largest batch. Split at the cap, the rest would queue behind one
                    # fixed batch cost after another, late already.
                    batch, pending = split_batch(pending, self.sizer.max_size)
                    count = sum(len(records) for records in pending.values())
                    await self._dispatch(consumer, batch, generation, learn=not catching_up)
                    if app.consumer_generation_id != generation:
                        break  # a rebalance ran meanwhile: the rest is re-read from the commits
        except consumer.consumer_stopped_errors:
            if app.should_stop:
                log.info("broker stopped the consumer, shutting down")
                return
            raise
        except Exception:
            # Faust stops the worker on this; a restart resumes from the last commit.
            log.exception("batch drain failed: stopping; the next start re-reads from the last commit")
            raise

    async def _per_message(self, consumer: Any, callback: Any, tp: TP, records: list[Any]) -> None:
        """Faust's own path (changelogs during recovery, any other subscribed topic)."""
        read_offset = compat.read_offsets(consumer)
        for record in records:
            offset = record.offset
            after = read_offset[tp]
            if after is not None and offset < after:
                continue
            gap = offset - (after or 0)
            if gap > 1 and after and consumer.app.topics.acks_enabled_for(tp.topic):
                await compat.add_gap(consumer, tp, after + 1, offset)
            message = compat.to_message(consumer, tp, record)
            await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
            read_offset[tp] = offset

    async def _dispatch(self, consumer: Any, batch: Records, generation: int, *, learn: bool = True) -> None:
        """Process a batch, then leave its delivery and acknowledgement to a task.

        At most one earlier batch is still awaiting delivery while this one is
        processed; acknowledgements happen in batch order, each after its delivery.
        """
        size = sum(len(records) for records in batch.values())
        token = _InFlight(size)
        compat.track_in_flight(consumer, token)  # a rebalance now waits for this batch
        started = time.perf_counter()
        try:
            settle = await self.handler(batch)
        except BaseException:
            self._release(consumer, token)
            raise
        previous = self._settling
        self._settling = asyncio.ensure_future(
            self._settle(consumer, batch, generation, token, settle, previous, started if learn else None)
        )
        if previous is not None:
            await previous  # its failure stops the drain here

    async def _settle(
        self,
        consumer: Any,
        batch: Records,
        generation: int,
        token: _InFlight,
        settle: Callable[[], Awaitable[None]],
        previous: asyncio.Future[None] | None,
        started: float | None,
    ) -> None:
        try:
            if previous is not None:
                await asyncio.shield(previous)  # in order: never acknowledge past an undelivered batch
            await settle()
            if consumer.app.consumer_generation_id == generation:
                self.offsets.delivered(generation, {tp: records[-1].offset + 1 for tp, records in batch.items()})
        finally:
            self._release(consumer, token)
        if started is not None:
            self.sizer.observe(sum(len(r) for r in batch.values()), time.perf_counter() - started)

    def _drop(self, records: Records) -> None:
        """Records dropped unprocessed: no commit of this generation may pass them.

        (A rebalance follows and the next generation re-reads them from the commits;
        until then, or should it not come, the gap is never committed over.)
        """
        if self._generation is None:
            return
        for tp, tp_records in records.items():
            if tp_records:
                self.offsets.dropped(self._generation, tp, tp_records[0].offset)

    @staticmethod
    def _release(consumer: Any, token: _InFlight) -> None:
        compat.release_in_flight(consumer, token)

    def _check_settling(self) -> None:
        """Surface a failed delivery even when no new batch comes to await it."""
        settling = self._settling
        if settling is not None and settling.done() and not settling.cancelled():
            exc = settling.exception()
            if exc is not None:
                raise exc


def _produced_s(record: Any) -> float:
    """A record's producer timestamp in epoch seconds; now, where it carries none."""
    stamp = record.timestamp
    return stamp / 1000 if stamp is not None and stamp > 0 else time.time()


def _waited(oldest: float, oldest_event_s: float) -> float:
    """How long the batch's oldest event has waited: since it was produced, where the
    producer's clock allows, and at least since the drain saw it.

    Counting from the producer's timestamp closes a batch sooner when its events
    reached the worker late already; a producer clock running ahead cannot hold a
    batch longer than the queue delay, since the drain's own wait is the floor.
    """
    return max(time.monotonic() - oldest, time.time() - oldest_event_s)


def split_batch(pending: Records, size: int) -> tuple[Records, Records]:
    """The first ``size`` records (whole partitions first, in fetch order), and the rest."""
    batch: Records = {}
    rest: Records = {}
    room = size
    for tp, records in pending.items():
        if room <= 0:
            rest[tp] = records
        elif len(records) <= room:
            batch[tp] = records
            room -= len(records)
        else:
            batch[tp] = records[:room]
            rest[tp] = records[room:]
            room = 0
    return batch, rest


def install(app: Any, drain: BatchDrain) -> None:
    """Route ``app``'s consumer fetches through ``drain``, and commit the events topic from
    its delivered-up-to offsets; other apps keep Faust's own loop and commits."""
    compat.install_drain(app, drain.run)
    compat.install_commits(app, drain.offsets)
