"""Training at scale: the event log read in chunks, replayed once, into feature rows at cutoffs.

:func:`~training.eventlog.read_event_log` holds every event of a log
(about 550 bytes each in Python). Here a log is a re-readable :class:`EventLog` read
``chunk_rows`` records at a time (JSONL lines, Parquet record batches, CSV chunks),
decoded by the same rules; :func:`summarise` takes one pass (first and last event
time, counts, users out of time order) and :class:`Snapshots` a second, folding each
event into its user's :class:`UserState` with the worker's :func:`apply_event` and
turning the state into a feature row when a cutoff passes. What stays in memory is
one state per user, the feature rows (blocks of :data:`BLOCK_ROWS`, derived with the
worker's :func:`feature_matrix`) and the few event times the labels need.

The rows are exactly :func:`~retention_model.features.offline.features_at`'s, in its
order (by user in the order first seen, then by cutoff). For a user whose events
are in time order in the log, the state at a cutoff is the running state when the
first later event arrives. A user with an event earlier than the one before it (a
late event) is replayed as ``features_at`` does: per cutoff, from scratch, the
events visible at it, in log order; those users' events are kept until the end of
the pass (:func:`summarise` names them, so nothing else is kept).

The worker's batch fold (:func:`retention_model.pipeline.fold_events`) is not
reused: it reads and writes serialised states in a store and de-duplicates by
source offset, per micro-batch; the replay needs live states and a snapshot between
two events of one user. Both call the same :func:`apply_event`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retention_model.errors import EventLogError
from retention_model.events import Event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.derive import feature_matrix
from retention_model.features.state import UserState, apply_event
from training.eventlog import decode_rows, events_from_frame

__all__ = [
    "BLOCK_ROWS",
    "CHUNK_ROWS",
    "EventLog",
    "EventSource",
    "LogSummary",
    "Point",
    "Snapshots",
    "chunks_of",
    "event_chunks",
    "grid_points",
    "rereadable",
    "summarise",
]

#: Records decoded at a time.
CHUNK_ROWS = 65_536
#: Feature rows derived at a time (states copied at snapshots wait at most this long).
BLOCK_ROWS = 8_192


class EventLog:
    """An event log file (JSONL, Parquet or CSV in schema v1) read in chunks; each pass re-reads it.

    Bad rows raise :class:`EventLogError` as :func:`read_event_log` does, or with
    ``skip_invalid`` are counted by reason in :attr:`skipped` (on the first complete
    pass only, so a second pass does not count them twice).
    """

    def __init__(self, path: str | Path, *, skip_invalid: bool = False, chunk_rows: int = CHUNK_ROWS) -> None:
        self.path = Path(path)
        if self.path.suffix not in {".jsonl", ".json", ".ndjson", ".parquet", ".csv"}:
            msg = f"cannot read event log {self.path}: expected .jsonl, .parquet or .csv"
            raise EventLogError(msg)
        self.skip_invalid = skip_invalid
        self.chunk_rows = chunk_rows
        self.skipped: Counter[str] = Counter()
        self._counted = False

    def chunks(self) -> Iterator[list[Event]]:
        """The log's valid events in file order, ``chunk_rows`` records at a time."""
        skipped: Counter[str] = Counter()
        yield from event_chunks(self.path, skip_invalid=self.skip_invalid, skipped=skipped, chunk_rows=self.chunk_rows)
        if not self._counted:
            self.skipped, self._counted = skipped, True

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r})"


#: What training reads: a log file read in chunks, or events already in memory.
EventSource = EventLog | Sequence[Event]


def chunks_of(source: EventSource | Iterable[Event]) -> Iterator[Sequence[Event]]:
    """A source's events in chunks (events in memory are one chunk)."""
    if isinstance(source, EventLog):
        yield from source.chunks()
    elif isinstance(source, Sequence):
        yield source
    else:
        chunk: list[Event] = []
        for event in source:
            chunk.append(event)
            if len(chunk) == CHUNK_ROWS:
                yield chunk
                chunk = []
        yield chunk


def rereadable(source: EventSource | Iterable[Event]) -> EventSource:
    """The source itself when a second pass can read it again; a one-shot iterable, as a list."""
    return source if isinstance(source, EventLog | Sequence) else list(source)


def event_chunks(
    path: str | Path, *, skip_invalid: bool = False, skipped: Counter[str] | None = None, chunk_rows: int = CHUNK_ROWS
) -> Iterator[list[Event]]:
    """Read a log file's valid events in chunks; the rules and messages of :func:`read_event_log`.

    A Parquet or CSV error past the first chunk names the chunk's first row, then the
    row within it.
    """
    path = Path(path)
    if path.suffix in {".jsonl", ".json", ".ndjson"}:
        with path.open("rb") as handle:
            rows: list[tuple[str, bytes]] = []
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    rows.append((f"{path}:{line_no}", line.rstrip(b"\n")))
                    if len(rows) == chunk_rows:
                        yield decode_rows(rows, skip_invalid, skipped)
                        rows = []
            if rows:
                yield decode_rows(rows, skip_invalid, skipped)
        return
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as parquet:
            start = 0
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                frame = batch.to_pandas()
                source = str(path) if start == 0 else f"{path} (the chunk from row {start + 1})"
                yield events_from_frame(frame, skip_invalid=skip_invalid, skipped=skipped, source=source)
                start += len(frame)
        return
    if path.suffix == ".csv":
        import pandas as pd

        start = 0
        with pd.read_csv(path, dtype={"user_id": str, "event_id": str}, chunksize=chunk_rows) as reader:
            for frame in reader:
                source = str(path) if start == 0 else f"{path} (the chunk from row {start + 1})"
                yield events_from_frame(frame, skip_invalid=skip_invalid, skipped=skipped, source=source)
                start += len(frame)
        return
    msg = f"cannot read event log {path}: expected .jsonl, .parquet or .csv"
    raise EventLogError(msg)


@dataclass(frozen=True)
class LogSummary:
    """What one pass over a log tells before any state is built."""

    events: int
    users: int
    first_ms: int
    last_ms: int
    #: Users with an event earlier than the one before it in the log.
    late_users: frozenset[str] = field(default_factory=frozenset)


def summarise(source: EventSource) -> LogSummary:
    """Count events and users, find the first and last event time and the users out of time order."""
    previous: dict[str, int] = {}
    late: set[str] = set()
    events = 0
    first = last = None
    for chunk in chunks_of(source):
        if not chunk:
            continue
        events += len(chunk)
        lo = min(e.ts_ms for e in chunk)
        hi = max(e.ts_ms for e in chunk)
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
        get = previous.get
        for event in chunk:
            user, ts = event.user_id, event.ts_ms
            before = get(user)
            if before is not None and ts < before:
                late.add(user)
            previous[user] = ts
    if first is None or last is None:
        return LogSummary(0, 0, 0, 0)
    return LogSummary(events, len(previous), first, last, frozenset(late))


#: A point: (visible_ms, at_ms): the state after the events with ts <= visible_ms,
#: its features evaluated at at_ms. Each user's points ascend.
Point = tuple[int, int]


class Snapshots:
    """Feature rows at each user's points, from events fed chunk by chunk in log order.

    ``points_of(user_id)`` gives a user's points (ascending, no repeats); a user with
    none keeps no state. ``late`` names users whose events are out of time order
    (:func:`summarise`): their events are kept and replayed per point at the end.
    ``visible_until``: events after it are ignored. ``order``: the users' output
    order (default: the order first seen in the log); rows within a user ascend.
    """

    def __init__(
        self,
        points_of: Callable[[str], Sequence[Point]],
        *,
        late: frozenset[str] | set[str] = frozenset(),
        visible_until: int | None = None,
        order: dict[str, int] | None = None,
    ) -> None:
        self._points_of = points_of
        self._late = late
        self._visible_until = visible_until
        self._order = order
        #: user -> [state (None without points), points, next point index, rank]
        self._users: dict[str, list] = {}
        self._kept: dict[str, list[Event]] = {}
        self._pending_states: list[UserState] = []
        self._pending_at: list[int] = []
        self._rank: list[int] = []
        self._at: list[int] = []
        self._user_ids: list[str] = []
        self._blocks: list[np.ndarray] = []

    def feed(self, events: Iterable[Event]) -> None:
        """Fold events (in log order) into their users' states, snapshotting each point they pass."""
        users = self._users
        until = self._visible_until
        late = self._late
        for event in events:
            ts = event.ts_ms
            if until is not None and ts > until:
                continue
            user_id = event.user_id
            entry = users.get(user_id)
            if entry is None:
                points = self._points_of(user_id)
                rank = len(users) if self._order is None else self._order.get(user_id, -1)
                entry = users[user_id] = [UserState() if points else None, points, 0, rank]
                if user_id in late and points:
                    self._kept[user_id] = []
            if not entry[1]:
                continue
            kept = self._kept.get(user_id)
            if kept is not None:
                kept.append(event)
                continue
            points, index = entry[1], entry[2]
            if index < len(points) and points[index][0] < ts:
                entry[2] = self._snapshot(user_id, entry, ts)
            apply_event(entry[0], event)

    def _snapshot(self, user_id: str, entry: list, before: int | None) -> int:
        """Rows at the user's points visible before ``before`` (None: all left); the next index."""
        state, points, index, rank = entry
        while index < len(points) and (before is None or points[index][0] < before):
            if not state.is_empty:
                self._row(user_id, rank, state.copy(), points[index][1])
            index += 1
        return index

    def _row(self, user_id: str, rank: int, state: UserState, at: int) -> None:
        self._user_ids.append(user_id)
        self._rank.append(rank)
        self._at.append(at)
        self._pending_states.append(state)
        self._pending_at.append(at)
        if len(self._pending_states) >= BLOCK_ROWS:
            self._derive()

    def _derive(self) -> None:
        if self._pending_states:
            self._blocks.append(feature_matrix(self._pending_states, self._pending_at))
            self._pending_states, self._pending_at = [], []

    def finish(self) -> tuple[list[tuple[str, int]], np.ndarray]:
        """The rows at every point not yet passed, then all rows: keys (user, at) and the feature matrix."""
        for user_id, entry in self._users.items():
            if user_id in self._kept:
                for visible, at in entry[1]:
                    state = UserState()  # as features_at replays a late user: the visible events, in log order
                    for event in self._kept[user_id]:
                        if event.ts_ms <= visible:
                            apply_event(state, event)
                    if not state.is_empty:
                        self._row(user_id, entry[3], state, at)
            elif entry[1]:
                entry[2] = self._snapshot(user_id, entry, None)
        self._kept.clear()
        self._derive()
        matrix = np.concatenate(self._blocks) if self._blocks else np.empty((0, len(FEATURE_NAMES)))
        self._blocks = []
        order = np.lexsort((np.asarray(self._at, dtype=np.int64), np.asarray(self._rank, dtype=np.int64)))
        keys = [(self._user_ids[i], self._at[i]) for i in order]
        return keys, matrix[order]


def grid_points(cutoffs: Iterable[int]) -> Callable[[str], Sequence[Point]]:
    """Every user at every cutoff (rows only where the user has been seen by then)."""
    points = tuple((c, c) for c in sorted(set(cutoffs)))
    return lambda _user_id: points
