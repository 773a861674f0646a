"""Offline path: features at (user, cutoff) points from a log of events (read from files in ``training.eventlog``).

It replays the log through the very same :func:`apply_event` and
:func:`feature_matrix` the worker runs, in log order per user (the order a
partition delivers them), so training rows and served rows cannot disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import pairwise

import numpy as np

from retention_model.events import Event, UnknownEventType
from retention_model.features.derive import feature_matrix
from retention_model.features.state import UserState, apply_event

__all__ = ["events_by_user", "features_at", "replay_states"]


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
