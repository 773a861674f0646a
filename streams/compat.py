"""Every use of a faust-streaming or aiokafka private name, in one place.

The worker reaches beneath Faust's stream (``streams.batching``), into its table
stores (``streams.tables``) and into the aiokafka consumer it creates. Those names
are not an API: they can change in any release. Keeping them here, behind plain
functions, makes the surface one file to re-read on an upgrade, and the version
check below makes a worker refuse a faust-streaming these patches were not tested
on instead of misbehaving quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import weakref
from collections.abc import Callable, Coroutine, Iterator, MutableMapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from retention_model.errors import RetentionError

if TYPE_CHECKING:  # Faust is imported where used: the version check must run before any of it
    from faust.types import TP

    from streams.commits import DeliveredOffsets

__all__ = [
    "FAUST_SUPPORTED",
    "UnsupportedFaustError",
    "add_gap",
    "as_current_event",
    "buffered_partitions",
    "cap_fetch_wait",
    "check_faust_version",
    "hold_seek_for_tests",
    "install_commits",
    "install_drain",
    "key_partitions",
    "next_records",
    "read_offsets",
    "release_in_flight",
    "stop_flags",
    "to_message",
    "track_in_flight",
    "use_fetched_highwaters",
]

#: The faust-streaming releases these patches were read against and tested on
#: (keep in step with the pin in pyproject.toml).
FAUST_SUPPORTED = ((0, 15, 3), (0, 16, 0))
FAUST_SUPPORTED_TEXT = ">=0.15.3,<0.16"
#: Test-only: seconds to hold every seek to the committed offsets after reading them.
HOLD_SEEK_ENV = "TEST_RETENTION_HOLD_SEEK_S"


class UnsupportedFaustError(RetentionError, RuntimeError):
    """The installed faust-streaming is outside the range these patches were tested on."""


def _ordering(version: str) -> tuple[tuple[int, int, int], int] | None:
    """(release, 0) for a pre-release or development build of it, (release, 1) otherwise."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?(.*)$", version.strip())
    if match is None:
        return None
    major, minor, patch, rest = match.groups()
    before_release = re.match(r"[.-]?(a|b|c|rc|alpha|beta|pre|preview|dev)\d*", rest.lower()) is not None
    return (int(major), int(minor), int(patch or 0)), 0 if before_release else 1


def check_faust_version(found: str | None = None) -> str:
    """Return the installed faust-streaming version; raise if it is outside the tested range.

    Runs before anything imports Faust: an untested release may lack a name this
    module patches, and should be refused in one line, not with a traceback.
    """
    if found is None:
        try:
            found = metadata.version("faust-streaming")
        except metadata.PackageNotFoundError:
            found = "none"
    ordering = _ordering(found)
    low, high = FAUST_SUPPORTED
    if ordering is None or not (low, 1) <= ordering < (high, 0):
        msg = (
            f"faust-streaming {found} is installed; this worker supports faust-streaming {FAUST_SUPPORTED_TEXT}, "
            "the releases its patches of Faust internals are tested on"
        )
        raise UnsupportedFaustError(msg)
    return found


# -- Faust's current event (table stores pick the partition database from it) ------


@functools.cache
def _current_event() -> Any:
    from faust.streams import _current_event

    return _current_event


@contextlib.contextmanager
def as_current_event(event: Any) -> Iterator[None]:
    """Run store access as if ``event`` (anything with ``.message.tp``) were being processed."""
    current = _current_event()
    token = current.set(weakref.ref(event))
    try:
        yield
    finally:
        current.reset(token)


def key_partitions(memory_store: Any) -> MutableMapping[bytes, int]:
    """The memory store's key -> partition map, from which it drops revoked partitions' keys.

    Faust fills it only while recovering from the changelog; a key written live (by
    Faust's ``table[key] = value`` too) is missing, so after a rebalance the worker would
    keep the users of partitions it gave away: stale, counted twice, and out of reach
    of an erasure handled by their new owner. The tables write it beside each key.
    """
    return memory_store._key_partition  # type: ignore[no-any-return]


# -- The consumer, as the batch drain uses it ----------------------------------------


def read_offsets(consumer: Any) -> MutableMapping[TP, int | None]:
    """Per partition, the last offset read (set back by Faust's seek to the committed offsets)."""
    return consumer._read_offset  # type: ignore[no-any-return]


def stop_flags(consumer: Any, fetcher: Any) -> tuple[Callable[[], bool], Callable[[], bool]]:
    """Whether the consumer, and the fetcher service running the drain, are stopping."""
    return consumer._stopped.is_set, fetcher._stopped.is_set


def next_records(consumer: Any, timeout: float) -> Coroutine[Any, Any, tuple[Any, Any]]:
    """Faust's fetch: (records by partition, partitions active when fetched)."""
    return consumer._wait_next_records(timeout)  # type: ignore[no-any-return]


def buffered_partitions(consumer: Any) -> set[TP]:
    """Partitions Faust paused because a stream buffer filled (their records still count)."""
    return consumer._buffered_partitions  # type: ignore[no-any-return]


async def add_gap(consumer: Any, tp: TP, start: int, end: int) -> None:
    """Tell Faust offsets ``start..end`` are missing from a topic it acknowledges itself."""
    await consumer._add_gap(tp, start, end)


def to_message(consumer: Any, tp: TP, record: Any) -> Any:
    """A Faust message for a fetched record (Faust's own per-message path)."""
    return consumer._to_message(tp, record)


def track_in_flight(consumer: Any, token: Any) -> None:
    """Count ``token`` among the consumer's unacknowledged messages: a rebalance waits for it."""
    consumer._unacked_messages.add(token)


def release_in_flight(consumer: Any, token: Any) -> None:
    """Remove ``token`` from the unacknowledged messages and wake whoever waits for them."""
    from mode.utils.futures import notify

    token.acked = True
    consumer._unacked_messages.discard(token)
    notify(consumer._waiting_for_ack)


def install_drain(app: Any, run: Callable[[Any, Any], Coroutine[Any, Any, None]]) -> None:
    """Route ``app``'s consumer fetches through ``run(consumer, fetcher)``.

    The patch is on Faust's consumer class; other apps in the process keep Faust's own loop.
    """
    from faust.transport import consumer as faust_consumer

    cls = faust_consumer.Consumer
    original = getattr(cls, "_retention_original_drain", cls._drain_messages)

    async def drain_messages(self: Any, fetcher: Any) -> None:
        drain = getattr(self.app, "_retention_drain", None)
        if drain is None:
            await original(self, fetcher)
        else:
            await drain(self, fetcher)

    cls._retention_original_drain = original
    cls._drain_messages = drain_messages
    app._retention_drain = run


def install_commits(app: Any, offsets: DeliveredOffsets) -> None:
    """Commit ``offsets.topic`` from the worker's delivered-up-to marks, not Faust's ack lists.

    Faust's commit machinery stays (its timer, the commit before a rebalance and at
    shutdown, one commit at a time, the producer flush before it); only where the events
    topic's offsets come from changes, and what counts as committed: the broker's
    answer, not Faust's ``_committed_offset``, which a seek may lower and which 0.15.3
    sets even when the commit failed. Other topics keep Faust's own bookkeeping.
    """
    from faust.transport import consumer as faust_consumer

    cls = faust_consumer.Consumer
    originals = cls.__dict__.get("_retention_original_commit_path")
    if originals is None:
        originals = (cls._filter_tps_with_pending_acks, cls._filter_committable_offsets, cls._commit_offsets)
        cls._retention_original_commit_path = originals
    pending_tps, committable, commit_offsets = originals

    def ours(self: Any) -> DeliveredOffsets | None:
        return getattr(self.app, "_retention_commits", None)

    def filter_tps_with_pending_acks(self: Any, topics: Any = None) -> Iterator[TP]:
        own = ours(self)
        if own is None:
            return pending_tps(self, topics)  # type: ignore[no-any-return]
        tps = [tp for tp in pending_tps(self, topics) if tp.topic != own.topic]
        for tp in own.to_commit(self.app.consumer_generation_id):
            if topics is None or tp in topics or tp.topic in topics:
                tps.append(tp)
        return iter(tps)

    def filter_committable_offsets(self: Any, tps: Any) -> dict[TP, int]:
        own = ours(self)
        if own is None:
            return committable(self, tps)  # type: ignore[no-any-return]
        tps = list(tps)
        found: dict[TP, int] = committable(self, [tp for tp in tps if tp.topic != own.topic])
        delivered = own.to_commit(self.app.consumer_generation_id)
        found.update({tp: delivered[tp] for tp in tps if tp in delivered})
        return found

    async def commit_offsets_(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        own = ours(self)
        if own is None:
            return await commit_offsets(self, offsets, start_new_transaction=start_new_transaction)  # type: ignore[no-any-return]
        generation = self.app.consumer_generation_id
        assignment = self.assignment()
        did_commit: bool = await commit_offsets(self, offsets, start_new_transaction=start_new_transaction)
        if did_commit:
            own.confirmed(generation, {tp: offset for tp, offset in offsets.items() if tp in assignment})
        return did_commit

    cls._filter_tps_with_pending_acks = filter_tps_with_pending_acks
    cls._filter_committable_offsets = filter_committable_offsets
    cls._commit_offsets = commit_offsets_
    app._retention_commits = offsets


# -- aiokafka consumer settings and the embedded broker ------------------------------


def cap_fetch_wait(max_wait_ms: int) -> None:
    """Make Faust's consumer use our fetch wait instead of its hard-coded 1500 ms.

    faust-streaming passes ``fetch_max_wait_ms=1500`` to aiokafka with no setting
    to change it. A broker that holds a fetch until that wait runs out (the
    embedded Tansu does) then adds up to 1.5 s to every event's latency.
    """
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(thread_cls, "_retention_original_create", thread_cls._create_worker_consumer)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms
        return consumer

    thread_cls._retention_original_create = original
    thread_cls._create_worker_consumer = create_worker_consumer


def use_fetched_highwaters(bootstrap: str) -> None:
    """Make Faust's table recovery target the true end of each changelog partition.

    Only for the embedded Tansu broker (``RETENTION_BROKER_KIND=tansu``): its wrong
    ListOffsets answer would make Faust stop recovering a table after a few keys.
    """
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streams.kafka import fetched_high_watermarks

    async def highwaters(self: Any, partitions: Any) -> Any:
        loop = asyncio.get_running_loop()
        pairs = [(tp.topic, tp.partition) for tp in partitions]
        found = await loop.run_in_executor(None, fetched_high_watermarks, bootstrap, pairs)
        return {tp: found[(tp.topic, tp.partition)] for tp in partitions}

    faust_aiokafka.AIOKafkaConsumerThread._highwaters = highwaters


# -- Test-only hooks -----------------------------------------------------------------


def hold_seek_for_tests(environ: MutableMapping[str, str] | None = None) -> float:
    """With ``TEST_RETENTION_HOLD_SEEK_S`` set, hold each seek that found committed offsets
    that long after reading them: the slow seek of issue 16, on every run. (A seek that
    found nothing committed cannot race: Faust then keeps no committed offset to lower.)

    Returns the hold in seconds (0: not installed). Never set it in production.
    """
    hold_s = float((os.environ if environ is None else environ).get(HOLD_SEEK_ENV) or 0)
    if hold_s <= 0:
        return 0.0
    from faust.transport import consumer as faust_consumer

    cls = faust_consumer.ThreadDelegateConsumer
    original = getattr(cls, "_retention_original_seek_to_committed", cls.seek_to_committed)

    async def seek_to_committed(self: Any) -> Any:
        found = await original(self)
        if not any(found.values()):
            return found
        self.log.warning("test hook %s: holding the seek to %r for %g s", HOLD_SEEK_ENV, dict(found), hold_s)
        await asyncio.sleep(hold_s)
        return found

    cls._retention_original_seek_to_committed = original
    cls.seek_to_committed = seek_to_committed
    return hold_s
