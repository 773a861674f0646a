"""Fold stage: each touched user's events into their state, read from the partition's store.

Effectively-once lives in :func:`~retention_model.features.state.apply_event`: an
event at or below the state's source offset (a re-read after a crash) or with a
recently seen id (a producer's retry) changes nothing, so only users for whom at
least one event counted come back to be scored and written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from retention_model.events import Event, EventType
from retention_model.features.state import APPLIED, UserState, apply_event, load_state
from retention_model.pipeline.state_cache import StateCache
from retention_model.pipeline.stores import KeyValueStore

__all__ = ["Folded", "fold_events"]


@dataclass(slots=True)
class Folded:
    """Users whose state changed (first-seen order), and what became of each event."""

    changed: list[tuple[bytes, UserState]] = field(default_factory=list)
    #: (event type, ``apply_event`` outcome) -> events.
    outcomes: Counter[tuple[EventType, str]] = field(default_factory=Counter)
    #: Users with no stored state before this batch.
    new_users: int = 0


def fold_events(
    events: Mapping[bytes, list[tuple[Event, int]]], states: KeyValueStore, cache: StateCache | None = None
) -> Folded:
    """Apply each user's events (with their source offsets) to their stored state, in order.

    The states are read with one ``get_many`` and not written back: the caller
    writes them once they are scored, with the score in them. With ``cache``, a
    state written by the last batches is taken from it instead of decoded.
    """
    folded = Folded()
    outcomes = folded.outcomes
    keys = list(events)
    load = _decode if cache is None else cache.load
    for key, raw in zip(keys, states.get_many(keys)):
        state = load(key, raw)
        if state is None:
            state = UserState()
            folded.new_users += 1
        applied = 0
        for event, offset in events[key]:
            outcome = apply_event(state, event, offset)
            outcomes[event.type, outcome] += 1
            if outcome is APPLIED:
                applied += 1
        if applied:
            folded.changed.append((key, state))
    return folded


def _decode(_key: bytes, raw: bytes | None) -> UserState | None:
    return None if raw is None else load_state(raw)
