"""The worker's changelog-backed tables, adapted to the pipeline's per-partition store interface.

Three Faust tables hold everything the worker remembers: user states, silence
timers and coupon budget slices. Faust's ``table[key] = value`` costs a stream
context lookup, sensors and a producer future per key; here the store is written
directly (the memory store's dict, or RocksDB under the partition's context) and
the changelog record is queued on the batch producer to the same partition Faust
would pick, so recovery, standby and rebalance behave as with Faust's own writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import faust
from faust.types import TP

from retention_model.pipeline.stores import PartitionStores
from streams import compat
from streams.output import OutputProducer
from streams.settings import Settings

__all__ = ["BUDGET_TABLE", "STATE_TABLE", "TIMER_TABLE", "PartitionTable", "Source", "TableAccess", "WorkerTables"]

STATE_TABLE = "user-state"
TIMER_TABLE = "silence-timers"
BUDGET_TABLE = "policy-budget"


class Source:
    """Stands in for Faust's current event during table access: names the source partition.

    Faust's RocksDB store picks the partition database from the current event,
    and there is none beneath the stream; this object is all it reads.
    """

    __slots__ = ("__weakref__", "message")

    def __init__(self, tp: TP) -> None:
        self.message = _SourceMessage(tp)


class _SourceMessage:
    __slots__ = ("partition", "topic", "tp")

    def __init__(self, tp: TP) -> None:
        self.tp = tp
        self.topic = tp.topic
        self.partition = tp.partition


def _as_current(source: Source) -> contextlib.AbstractContextManager[None]:
    """Run store access as if an event of ``source``'s partition were being processed."""
    return compat.as_current_event(source)


class TableAccess:
    """Reads and writes one Faust table beneath the stream, changelog included."""

    def __init__(self, table: Any, output: OutputProducer, rocksdb: bool) -> None:
        self.table = table
        self.output = output
        self.rocksdb = rocksdb
        self.changelog = table.changelog_topic.get_topic_name()

    def _store(self) -> Any:
        store = self.table.data
        return store if self.rocksdb else store.data

    def get_many(self, keys: Iterable[bytes], source: Source) -> list[bytes | None]:
        if self.rocksdb:
            with _as_current(source):
                get = self.table.data.get
                return [get(key) for key in keys]
        get = self.table.data.data.get
        return [get(key) for key in keys]

    def put_many(self, items: Iterable[tuple[bytes, bytes | None]], source: Source) -> None:
        """Write (or, for ``None``, delete) keys of one source partition, with their changelog."""
        partition = source.message.partition
        produce = self.output.produce
        changelog = self.changelog
        rocksdb = self.rocksdb
        with _as_current(source):
            store = self._store()
            # In memory, each key's partition too: Faust drops revoked partitions' keys by it.
            owners = None if rocksdb else compat.key_partitions(self.table.data)
            for key, value in items:
                if value is None:
                    if key not in store:
                        continue
                    del store[key]
                    if owners is not None:
                        owners.pop(key, None)
                else:
                    store[key] = value
                    if owners is not None:
                        owners[key] = partition
                produce(changelog, key, value, partition=partition, changelog=rocksdb)

    def all_keys(self) -> list[bytes]:
        return list(self.table.keys())

    def __len__(self) -> int:
        return len(self.table.data.data) if not self.rocksdb else len(self.table)

    def persisted(self, offsets: dict[tuple[str, int], int]) -> None:
        """Record delivered changelog offsets in RocksDB (where recovery resumes)."""
        if not self.rocksdb:
            return
        for (topic, partition), offset in offsets.items():
            if topic == self.changelog:
                self.table.data.set_persisted_offset(TP(topic, partition), offset)


class PartitionTable:
    """One source partition of a table, as the pipeline's ``KeyValueStore``.

    ``prefix``: the tables whose keys begin with their partition (``b"3:..."``: timers,
    budget slices) list only this partition's keys; the user-state table, keyed by
    user id alone, lists every assigned partition's (the pipeline never asks it to).
    """

    __slots__ = ("access", "prefix", "source")

    def __init__(self, access: TableAccess, source: Source, prefix: bytes | None = None) -> None:
        self.access = access
        self.source = source
        self.prefix = prefix

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.access.get_many(keys, self.source)

    def put_many(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        self.access.put_many(items, self.source)

    def all_keys(self) -> list[bytes]:
        prefix = self.prefix
        keys = self.access.all_keys()
        return keys if prefix is None else [key for key in keys if key.startswith(prefix)]


class WorkerTables:
    """The three tables of a worker and, per source partition, their stores."""

    def __init__(self, app: faust.App, settings: Settings, output: OutputProducer) -> None:
        raw_schema = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

        def raw_table(name: str, help: str) -> Any:
            return app.Table(
                name,
                default=None,
                partitions=settings.partitions,
                key_type=bytes,  # bytes types make Faust's changelog (and recovery) use the raw codec
                value_type=bytes,
                schema=raw_schema,
                help=help,
            )

        self.rocksdb = settings.store.startswith("rocksdb")
        self.table = raw_table(STATE_TABLE, "Per-user feature state (retention_model.features.state, binary)")
        # Silence timers: key b"<partition>:<hour>" -> newline-separated user keys due
        # in that event-time hour (retention_model.pipeline.timers).
        timers = raw_table(TIMER_TABLE, "Silence timers: users due for re-scoring, by partition and event-time hour")
        # Coupon spend per budget slice: key b"<partition>:<period>" -> JSON [money, count].
        budgets = raw_table(BUDGET_TABLE, "Coupon budget spent, by partition slice and period")
        self.states = TableAccess(self.table, output, self.rocksdb)
        self.timers = TableAccess(timers, output, self.rocksdb)
        self.budgets = TableAccess(budgets, output, self.rocksdb)
        self._sources: dict[TP, Source] = {}
        self._by_partition: dict[int, Source] = {}

    def source(self, tp: TP) -> Source:
        """The stand-in current event of ``tp``; its partition's stores use it from now on."""
        source = self._sources.get(tp)
        if source is None:
            source = self._sources[tp] = Source(tp)
        self._by_partition[tp.partition] = source
        return source

    def stores(self, partition: int) -> PartitionStores:
        """The stores of a source partition seen through :meth:`source` already."""
        source = self._by_partition[partition]
        prefix = f"{partition}:".encode()
        return PartitionStores(
            PartitionTable(self.states, source),
            PartitionTable(self.timers, source, prefix),
            PartitionTable(self.budgets, source, prefix),
        )

    def persisted(self, offsets: dict[tuple[str, int], int]) -> None:
        """Delivered changelog offsets, for RocksDB's recovery point."""
        for access in (self.states, self.timers, self.budgets):
            access.persisted(offsets)

    def users(self) -> int:
        """Users with a state on this worker (a dict's length in memory; a scan of RocksDB)."""
        return len(self.states)
