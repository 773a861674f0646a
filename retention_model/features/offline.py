"""Offline path: features at (user, cutoff) points from an event log.

It replays the log through the very same :func:`apply_event` and
:func:`feature_matrix` the worker runs, in log order per user (the order a
partition delivers them), so training rows and served rows cannot disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from retention_model.events import DecodeError, Event, EventType, UnknownEventType, decode_event
from retention_model.features.derive import feature_matrix
from retention_model.features.state import UserState, apply_event

__all__ = [
    "events_by_user",
    "events_from_frame",
    "features_at",
    "read_event_log",
    "replay_states",
]


def read_event_log(path: str | Path) -> list[Event]:
    """Read a JSONL, Parquet or CSV event log in schema v1, in file order.

    Rows are validated by the stream's decoder; a bad row raises with its line
    number, because a training set with silently dropped rows is worse than none.
    """
    path = Path(path)
    if path.suffix in {".jsonl", ".json", ".ndjson"}:
        events: list[Event] = []
        with path.open("rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                decoded = decode_event(line.rstrip(b"\n"))
                if isinstance(decoded, DecodeError):
                    msg = f"{path}:{line_no}: {decoded.reason}: {decoded.detail}"
                    raise ValueError(msg)
                if isinstance(decoded, Event):
                    events.append(decoded)
        return events
    if path.suffix == ".parquet":
        return events_from_frame(pd.read_parquet(path))
    if path.suffix == ".csv":
        return events_from_frame(pd.read_csv(path, dtype={"user_id": str, "event_id": str}))
    msg = f"cannot read event log {path}: expected .jsonl, .parquet or .csv"
    raise ValueError(msg)


def events_from_frame(frame: pd.DataFrame) -> list[Event]:
    """Convert a DataFrame in schema v1 (``ts`` as epoch ms or tz-aware datetimes)."""
    ts = frame["ts"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        if ts.dt.tz is None:
            msg = "event log column ts has no time zone; localise it to UTC first"
            raise ValueError(msg)
        # as_unit: pandas 2 stores nanoseconds, pandas 3 may store micro- or milliseconds.
        ts_ms = ts.dt.tz_convert("UTC").dt.as_unit("ms").astype("int64")
    else:
        ts_ms = ts.astype("int64")
    columns = {name: frame[name].tolist() for name in frame.columns if name != "ts"}
    n = len(frame)
    ts_list = ts_ms.tolist()

    def col(name: str) -> list[object]:
        return columns.get(name, [None] * n)

    def clean(value: object) -> object:
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value

    types = {t.wire_name: t for t in EventType}
    out: list[Event] = []
    names = ("item_id", "category", "order_id", "session_id", "coupon_id", "intervention_id")
    optional = {name: col(name) for name in names}
    prices, quantities, ratings = col("price"), col("quantity"), col("rating")
    for i, (event_id, user_id, type_name) in enumerate(zip(col("event_id"), col("user_id"), col("type"))):
        event_type = types.get(str(type_name))
        if event_type is None:
            continue
        price, quantity, rating = clean(prices[i]), clean(quantities[i]), clean(ratings[i])
        out.append(
            Event(
                event_id=str(event_id),
                user_id=str(user_id),
                type=event_type,
                ts_ms=int(ts_list[i]),
                price=float(price) if price is not None else None,  # type: ignore[arg-type]
                quantity=int(quantity) if quantity is not None else None,  # type: ignore[call-overload]
                rating=float(rating) if rating is not None else None,  # type: ignore[arg-type]
                **{name: (None if clean(v[i]) is None else str(v[i])) for name, v in optional.items()},
            )
        )
    return out


def events_by_user(events: Iterable[Event | UnknownEventType]) -> dict[str, list[Event]]:
    """Group events per user, keeping log order within each user."""
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if isinstance(event, Event):
            grouped[event.user_id].append(event)
    return dict(grouped)


def replay_states(events: Iterable[Event]) -> dict[str, UserState]:
    """Final state per user after applying the whole log in order."""
    states: dict[str, UserState] = {}
    for event in events:
        state = states.get(event.user_id)
        if state is None:
            state = states[event.user_id] = UserState()
        apply_event(state, event)
    return states


def _snapshots(user_events: list[Event], cutoffs: list[int]) -> Iterator[tuple[int, UserState]]:
    """State after every event with ts <= cutoff, for each cutoff (ascending).

    The yielded state may be reused for the next cutoff: read it before resuming.
    """
    in_time_order = all(a.ts_ms <= b.ts_ms for a, b in pairwise(user_events))
    state = UserState()
    pos = 0
    for cutoff in cutoffs:
        if in_time_order:
            while pos < len(user_events) and user_events[pos].ts_ms <= cutoff:
                apply_event(state, user_events[pos])
                pos += 1
        else:
            # Late events: replay, in log order, just the events visible at this
            # cutoff, so the arithmetic order matches the stream's exactly.
            state = UserState()
            for event in user_events:
                if event.ts_ms <= cutoff:
                    apply_event(state, event)
        yield cutoff, state


def features_at(
    events_per_user: dict[str, list[Event]], points: Iterable[tuple[str, int]]
) -> tuple[list[tuple[str, int]], np.ndarray]:
    """Feature rows for (user_id, cutoff_ms) points, using events with ts <= cutoff.

    Returns the points in output order (grouped by user, cutoffs ascending) and a
    float64 matrix with :data:`FEATURE_NAMES` columns. Users with no event at or
    before a cutoff are left out.
    """
    cutoffs_by_user: dict[str, list[int]] = defaultdict(list)
    for user_id, cutoff in points:
        cutoffs_by_user[user_id].append(cutoff)
    keys: list[tuple[str, int]] = []
    snapshots: list[UserState] = []
    for user_id, cutoffs in cutoffs_by_user.items():
        user_events = events_per_user.get(user_id, [])
        for cutoff, state in _snapshots(user_events, sorted(set(cutoffs))):
            if state.is_empty:
                continue
            keys.append((user_id, cutoff))
            snapshots.append(state.copy())
    return keys, feature_matrix(snapshots, [cutoff for _, cutoff in keys])
