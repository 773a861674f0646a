"""Decoded user states kept between batches, so an active user's next batch skips ``load_state``.

Decoding a state is the largest single cost of the fold (about a sixth of the core
pipeline's time in ``tests/benchmarks/profile_core.py``), and an active user comes
back batch after batch. The store stays the truth: an entry is used only while the
store still holds the very bytes object the entry was written with (``is``, not
``==``). Anything else that wrote the key (changelog recovery after a rebalance,
another worker, an erasure, a deletion) left a different object, or none, and the
state is decoded from the store as before. A RocksDB store hands out a new object
on every read, so there the cache never hits and changes nothing.

Taking an entry removes it: the caller owns (and mutates) the state until it writes
it back with :meth:`StateCache.keep`. A batch that fails half-way therefore leaves
no half-folded state behind to be mistaken for the stored one.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from retention_model.features.state import UserState, load_state

__all__ = ["DECODED_STATE_BYTES", "StateCache"]

#: Memory of one decoded state (tracemalloc, a simulated user with every part filled):
#: the blob is ~820 bytes, the Python objects about six times that.
DECODED_STATE_BYTES = 4_900


class StateCache:
    """The last ``capacity`` states written, decoded; least recently written leave first."""

    __slots__ = ("_entries", "capacity", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Insertion order is write order: an entry is popped when taken and re-added when kept.
        self._entries: dict[bytes, tuple[bytes, UserState]] = {}
        self.hits = 0
        self.misses = 0

    def load(self, key: bytes, raw: bytes | None) -> UserState | None:
        """The state stored as ``raw`` under ``key`` (None: none): the kept one if ``raw`` is what it was written as."""
        entry = self._entries.pop(key, None)
        if raw is None:
            return None
        if entry is not None and entry[0] is raw:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return load_state(raw)

    def keep(self, items: Iterable[tuple[bytes, bytes, UserState]]) -> None:
        """Remember each (key, the blob just written for it, its state)."""
        if self.capacity <= 0:
            return
        entries = self._entries
        for key, raw, state in items:
            entries.pop(key, None)
            entries[key] = (raw, state)
        excess = len(entries) - self.capacity
        if excess > 0:
            for key in list(islice(entries, excess)):
                del entries[key]

    def forget(self, keys: Iterable[bytes]) -> None:
        """Drop these users (erased, expired): no copy of them stays in memory."""
        entries = self._entries
        for key in keys:
            entries.pop(key, None)

    def clear(self) -> None:
        """Drop everything (after a rebalance: the partitions that moved are another worker's now)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
