"""Silence timers of one partition: users due for re-scoring, filed by event-time hour.

A bucket is keyed ``b"<partition>:<hour>"`` and holds the newline-separated keys
of users whose next silence check falls in that hour. Stale entries are fine: the
due time is recomputed from the state before anyone is re-scored, so a user who
was active since, or is filed twice, is simply passed over. The hours that hold a
bucket are indexed in memory, rebuilt from the store's keys after a rebalance.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from retention_model.features.silence import next_check_ms
from retention_model.features.state import HOUR_MS, UserState, load_state
from retention_model.pipeline.state_cache import StateCache
from retention_model.pipeline.stores import KeyValueStore

__all__ = ["SilenceTimers", "collect_due", "timer_due_ms"]


class SilenceTimers:
    """One partition's timer buckets over its store, with the index of hours they cover."""

    def __init__(self, store: KeyValueStore, partition: int) -> None:
        self.store = store
        self.partition = partition
        self._prefix = f"{partition}:".encode()
        self._hours: set[int] | None = None

    def _bucket(self, hour: int) -> bytes:
        return self._prefix + str(hour).encode()

    def hours(self) -> set[int]:
        """Hours holding a bucket (read from the store on first use)."""
        if self._hours is None:
            prefix = self._prefix
            self._hours = {int(key[len(prefix) :]) for key in self.store.all_keys() if key.startswith(prefix)}
        return self._hours

    def pop_due(self, watermark: int) -> list[list[bytes]]:
        """Take out every bucket whose hour lies wholly below ``watermark``: their user keys, earliest hour first.

        The buckets are deleted as they are read, before anyone is filed again, so a
        timer filed after this into an hour being emptied is never lost.
        """
        hours = self.hours()
        due = sorted(h for h in hours if (h + 1) * HOUR_MS <= watermark)
        if not due:
            return []
        buckets = [self._bucket(hour) for hour in due]
        contents = self.store.get_many(buckets)
        hours.difference_update(due)
        self.store.put_many([(bucket, None) for bucket in buckets])
        return [raw.split(b"\n") for raw in contents if raw]

    def file(self, due: Mapping[int, list[bytes]]) -> None:
        """Add users to the buckets of the hours their next checks fall in (hour -> user keys)."""
        if not due:
            return
        buckets = [self._bucket(hour) for hour in due]
        existing = self.store.get_many(buckets)
        writes: list[tuple[bytes, bytes | None]] = []
        for bucket, old, keys in zip(buckets, existing, due.values()):
            joined = b"\n".join(keys)
            writes.append((bucket, old + b"\n" + joined if old else joined))
        self.store.put_many(writes)
        self.hours().update(due)

    def remove(self, keys: set[bytes]) -> dict[bytes, int]:
        """Take ``keys`` out of every bucket (erasure): how many entries each had.

        Reads every bucket of the partition, so it is for the rare erasure, not the
        silence round (an expired user's only timer was the bucket just popped).
        """
        hours = sorted(self.hours())
        if not keys or not hours:
            return {}
        buckets = [self._bucket(hour) for hour in hours]
        removed: dict[bytes, int] = {}
        writes: list[tuple[bytes, bytes | None]] = []
        for hour, bucket, raw in zip(hours, buckets, self.store.get_many(buckets)):
            if not raw:
                continue
            entries = raw.split(b"\n")
            kept = [entry for entry in entries if entry not in keys]
            if len(kept) == len(entries):
                continue
            for entry in entries:
                if entry in keys:
                    removed[entry] = removed.get(entry, 0) + 1
            writes.append((bucket, b"\n".join(kept) if kept else None))
            if not kept:
                self._hours.discard(hour)  # type: ignore[union-attr]
        self.store.put_many(writes)
        return removed


def timer_due_ms(state: UserState, ttl_ms: int | None) -> int | None:
    """When to look at the user next: their next silence check, or their expiry if that comes first.

    After the last silence mark a user has no check; with a TTL their expiry is
    still filed, so a one-time visitor's state does not stay for ever.
    """
    due = next_check_ms(state)
    if ttl_ms is None or state.is_empty:
        return due
    expires = state.last_seen_ms + ttl_ms
    return expires if due is None or expires < due else due


def collect_due(
    timers: SilenceTimers,
    states: KeyValueStore,
    watermark: int,
    exclude: Container[bytes],
    *,
    ttl_ms: int | None = None,
    expired: list[bytes] | None = None,
    cache: StateCache | None = None,
) -> list[tuple[bytes, UserState, int]]:
    """Users of one partition whose silence check fell due below ``watermark``: (key, state, due time).

    Users in ``exclude`` (scored in this round already) are left for the next
    round, when their new timer comes up; so is anyone already taken here. With
    ``ttl_ms``, a user silent that long at ``watermark`` is not scored but added to
    ``expired`` (the caller deletes them): :func:`timer_due_ms` filed their timer.
    A state taken from ``cache`` and not returned is put back (it is unchanged).
    """
    out: list[tuple[bytes, UserState, int]] = []
    taken: set[bytes] = set()
    for bucket in timers.pop_due(watermark):
        candidates = [key for key in set(bucket) if key not in exclude and key not in taken]
        for key, raw in zip(candidates, states.get_many(candidates)):
            if raw is None:
                continue
            state = load_state(raw) if cache is None else cache.load(key, raw)
            assert state is not None
            if ttl_ms is not None and expired is not None and state.last_seen_ms + ttl_ms <= watermark:
                expired.append(key)
                taken.add(key)
                continue
            due = next_check_ms(state)
            if due is None or due > watermark:
                if cache is not None:
                    cache.keep([(key, raw, state)])
                continue  # stale entry: the user was active since, or already re-scored
            out.append((key, state, due))
            taken.add(key)
    return out
