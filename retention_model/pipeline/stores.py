"""The per-partition store interface the pipeline reads and writes, and an in-memory one.

User states, silence timers and budget slices all live in keyed stores split by
source partition, so the partition that owns a user also owns everything written
about them, and a rebalance moves it all together. The pipeline sees one small
interface; ``streams`` adapts Faust's changelog-backed tables to it, and tests and
offline runs use :class:`MemoryStore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["KeyValueStore", "MemoryStore", "MemoryStores", "PartitionStores"]


class KeyValueStore(Protocol):
    """One source partition's slice of a table, read and written a batch at a time."""

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The value of each key, None where there is none."""
        ...

    def put_many(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Write each (key, value); a None value deletes the key (nothing to do where it is absent)."""
        ...

    def all_keys(self) -> Iterable[bytes]:
        """Every key this partition holds (read once after a rebalance, to rebuild an index)."""
        ...


@dataclass(frozen=True, slots=True)
class PartitionStores:
    """The three stores of one source partition."""

    states: KeyValueStore
    timers: KeyValueStore
    budgets: KeyValueStore


class MemoryStore:
    """A :class:`KeyValueStore` in a dict (tests, offline runs)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        get = self.data.get
        return [get(key) for key in keys]

    def put_many(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        data = self.data
        for key, value in items:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    def all_keys(self) -> Iterator[bytes]:
        return iter(list(self.data))

    def __len__(self) -> int:
        return len(self.data)


@dataclass
class MemoryStores:
    """In-memory stores for any partition, made on first use: call it with a partition."""

    partitions: dict[int, PartitionStores] = field(default_factory=dict)

    def __call__(self, partition: int) -> PartitionStores:
        stores = self.partitions.get(partition)
        if stores is None:
            stores = self.partitions[partition] = PartitionStores(MemoryStore(), MemoryStore(), MemoryStore())
        return stores

    def state_blobs(self) -> dict[bytes, bytes]:
        """Every user's stored state blob, all partitions together."""
        out: dict[bytes, bytes] = {}
        for stores in self.partitions.values():
            assert isinstance(stores.states, MemoryStore)
            out.update(stores.states.data)
        return out
