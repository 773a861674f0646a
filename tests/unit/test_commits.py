"""Commits of the events topic across a slow seek on a new assignment (issue 16).

Faust's real consumer bookkeeping (ack lists, ``_new_offset``, ``perform_seek``,
``_commit_offsets``) runs over a fake broker whose ``seek_to_committed`` can be
held: every step of the race happens in a fixed order, with no broker and no timing.
"""

from __future__ import annotations

import asyncio
from collections import namedtuple
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from streams import batching
from streams.batch_size import AdaptiveBatchSize

Record = namedtuple("Record", "topic partition offset timestamp key value headers")
EVENTS = "events-commits"
TP0 = TP(EVENTS, 0)


class FakeBroker:
    """Committed offsets of one group; a commit can be made to fail once."""

    def __init__(self, committed: dict[TP, int]) -> None:
        self.committed = dict(committed)
        self.fail_next = False


class HeldSeekConsumer(FaustConsumer):
    """Faust's consumer over a fake broker; ``seek_to_committed`` reads, then waits for ``hold``."""

    def __init__(self, app: faust.App, broker: FakeBroker) -> None:
        self.broker = broker
        self.hold = asyncio.Event()
        self.hold.set()
        self.seek_read = asyncio.Event()

        async def nothing(*args: Any, **kwargs: Any) -> None:
            return None

        super().__init__(app.transport, callback=nothing, on_partitions_revoked=nothing, on_partitions_assigned=nothing)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        found = dict(self.broker.committed)  # aiokafka's OffsetFetch answers first ...
        self.seek_read.set()
        await self.hold.wait()  # ... and the seek takes its time to finish
        return found

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        if self.broker.fail_next:  # e.g. aiokafka's CommitFailedError "already rebalanced"
            self.broker.fail_next = False
            return False
        self.broker.committed.update(offsets)
        return True

    def assignment(self) -> set[TP]:
        return {TP0}

    async def _seek(self, partition: TP, offset: int) -> None:
        return None

    def _new_topicpartition(self, topic: str, partition: int) -> TP:
        return TP(topic, partition)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        return {}

    def _to_message(self, tp: TP, record: Any) -> Any:
        raise NotImplementedError

    def highwater(self, tp: TP) -> int:
        raise NotImplementedError

    async def subscribe(self, topics: Iterable[str]) -> None:
        return None

    async def position(self, tp: TP) -> int | None:
        return None

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        return None

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        return {}

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        return {}

    def topic_partitions(self, topic: str) -> int | None:
        return 1

    def key_partition(self, topic: str, key: bytes | None, partition: int | None = None) -> int | None:
        return 0

    async def create_topic(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None

    def verify_recovery_event_path(self, now: float, tp: TP) -> None:
        return None


class StubProducer:
    """All ``_commit_offsets`` asks of the producer."""

    async def flush(self) -> None:
        return None


class Worker:
    """An app, its batch drain and a consumer, wired as ``create_app`` wires them."""

    def __init__(self, committed: int) -> None:
        self.app = faust.App(f"test-commits-{id(self)}", broker="kafka://127.0.0.1:1")
        self.app.producer = StubProducer()  # type: ignore[assignment]
        self.delivered: asyncio.Event | None = None
        self.drain = batching.BatchDrain(EVENTS, self.process, AdaptiveBatchSize(0.1, 1000, 0.05))
        batching.install(self.app, self.drain)
        self.broker = FakeBroker({TP0: committed})
        self.consumer = HeldSeekConsumer(self.app, self.broker)
        self.app.consumer_generation_id = 1

    async def process(self, batch: batching.Records) -> Callable[[], Awaitable[None]]:
        gate = self.delivered

        async def settle() -> None:
            if gate is not None:
                await gate.wait()

        return settle

    async def deliver(self, offsets: Iterable[int], *, wait: bool = True) -> None:
        """Process and deliver one batch of the events partition (the drain's own path)."""
        batch = {TP0: [Record(EVENTS, 0, o, 0, b"u", b"{}", []) for o in offsets]}
        await self.drain._dispatch(self.consumer, batch, self.app.consumer_generation_id)
        if wait:
            await self.drain._settling


async def _takeover(commit_in_seek_fails: bool) -> int:
    worker = Worker(committed=10)
    consumer = worker.consumer
    # A new assignment: recovery resumes the partition, then starts the seek, which reads
    # the committed offset (10) and is held there.
    consumer.hold.clear()
    seek = asyncio.ensure_future(consumer.perform_seek())
    await consumer.seek_read.wait()
    # aiokafka had prefetched from 10: the drain processes and delivers 10..19 meanwhile,
    # and a commit runs; it lands (route a) or fails (route b).
    await worker.deliver(range(10, 20))
    worker.broker.fail_next = commit_in_seek_fails
    await consumer.commit()
    consumer.hold.set()
    await seek
    # The seek put the fetch position back at 10: 10..19 come again, then 20..29 are new.
    await worker.deliver(range(10, 30))
    await consumer.commit()
    return worker.broker.committed[TP0]


@pytest.mark.parametrize("commit_in_seek_fails", [False, True], ids=["commit-lands-in-seek", "failed-commit-in-seek"])
def test_a_commit_during_the_seek_does_not_stall_later_commits(commit_in_seek_fails: bool) -> None:
    """Everything delivered is committed after a slow seek, whichever way the commit inside it went."""
    assert asyncio.run(_takeover(commit_in_seek_fails)) == 30


def test_nothing_is_committed_beyond_what_was_delivered() -> None:
    """A processed batch whose outputs are not yet delivered is not committed, nor are later offsets."""

    async def run() -> list[int]:
        worker = Worker(committed=0)
        seen = []
        await worker.deliver(range(0, 5))
        await worker.consumer.commit()
        seen.append(worker.broker.committed[TP0])
        worker.delivered = asyncio.Event()  # the next batch's outputs are stuck at the broker
        await worker.deliver(range(5, 9), wait=False)
        await asyncio.sleep(0)
        await worker.consumer.commit()
        seen.append(worker.broker.committed[TP0])
        worker.delivered.set()
        await worker.drain._settling
        await worker.consumer.commit()
        seen.append(worker.broker.committed[TP0])
        return seen

    assert asyncio.run(run()) == [5, 5, 9]


def test_a_batch_delivered_after_a_rebalance_commits_nothing() -> None:
    """Delivered under an older generation: the partition may be someone else's now."""

    async def run() -> int:
        worker = Worker(committed=0)
        worker.delivered = asyncio.Event()
        await worker.deliver(range(0, 5), wait=False)
        await asyncio.sleep(0)
        worker.app.consumer_generation_id = 2
        worker.delivered.set()
        await worker.drain._settling
        await worker.consumer.commit()
        return worker.broker.committed[TP0]

    assert asyncio.run(run()) == 0
