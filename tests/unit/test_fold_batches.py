"""Folding a partition's log batch by batch gives every user the state of their events applied one at a time.

The worker's fold (:func:`fold_events`) takes a batch grouped by user, reads the states
through the decoded-state cache, and the batch's states are written back; batches arrive
with any cut, and a crash or rebalance re-delivers a stretch already folded. Whatever the
cuts, re-reads, cache size or cache loss, each user's stored state must be the one
:func:`apply_event` builds from their events in offset order, each once: the reference any
faster fold (column-wise, compiled) is held to.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from retention_model.events import Event, EventType, OrderLine
from retention_model.features.state import APPLIED, DAY_MS, UserState, apply_event, dump_state, load_state
from retention_model.pipeline import MemoryStore, fold_events
from retention_model.pipeline.state_cache import StateCache

T0 = 1_735_689_600_000
_USERS = ("u1", "u2", "u3")
_ITEMS = ("i1", "i2", "i3", "i4", "i5")
_CATEGORIES = ("books", "toys", "garden", "food", None)


@st.composite
def partition_logs(draw: st.DrawFn) -> list[Event]:
    """A partition's log: a few users' events interleaved, event times out of order, some retried."""
    n = draw(st.integers(min_value=1, max_value=40))
    log: list[Event] = []
    for i in range(n):
        user = draw(st.sampled_from(_USERS))
        kind = draw(st.sampled_from(list(EventType)))
        if log and draw(st.integers(0, 9)) == 0:  # a producer's retry: the same event at a new offset
            log.append(draw(st.sampled_from(log)))
            continue
        item = draw(st.sampled_from(_ITEMS))
        lines = [OrderLine(draw(st.sampled_from(_ITEMS)), None, 5.0, 1)] if kind is EventType.PURCHASE else None
        log.append(
            Event(
                event_id=f"{user}-e{i}",
                user_id=user,
                type=kind,
                ts_ms=T0 + draw(st.integers(min_value=0, max_value=120 * DAY_MS)),
                price=draw(st.floats(min_value=0, max_value=300)) if kind is EventType.PURCHASE else None,
                quantity=draw(st.integers(min_value=1, max_value=3)),
                rating=float(draw(st.integers(1, 5))) if kind is EventType.REVIEW else None,
                item_id=item if kind in (EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE) else None,
                order_id=f"{user}-o{draw(st.integers(0, 5))}" if kind is EventType.PURCHASE else None,
                category=draw(st.sampled_from(_CATEGORIES)),
                items=lines,
            )
        )
    return log


@st.composite
def deliveries(draw: st.DrawFn, length: int) -> list[tuple[int, int]]:
    """Offset ranges as the worker receives them: any cut, and now and then a re-read from further back."""
    ranges: list[tuple[int, int]] = []
    position = 0
    while position < length:
        start = position
        if ranges and draw(st.integers(0, 3)) == 0:
            start = draw(st.integers(min_value=0, max_value=position))
        end = draw(st.integers(min_value=start + 1, max_value=length))
        ranges.append((start, end))
        position = max(position, end)
    return ranges


@settings(max_examples=150, deadline=None)
@given(partition_logs(), st.data(), st.sampled_from([None, 1, 2, 100]), st.booleans())
def test_folding_in_batches_with_re_reads_equals_one_event_at_a_time(
    log: list[Event], data: st.DataObject, cache_users: int | None, lose_cache: bool
) -> None:
    store = MemoryStore()
    cache = None if cache_users is None else StateCache(cache_users)
    for start, end in data.draw(deliveries(len(log))):
        batch: dict[bytes, list[tuple[Event, int]]] = {}
        for offset in range(start, end):
            batch.setdefault(log[offset].user_id.encode(), []).append((log[offset], offset))
        folded = fold_events(batch, store, cache)
        written = [(key, dump_state(state), state) for key, state in folded.changed]
        store.put_many([(key, blob) for key, blob, _ in written])
        if cache is not None:
            cache.keep(written)
            if lose_cache and data.draw(st.booleans()):
                cache.clear()  # a rebalance: the next batch decodes from the store
    expected: dict[str, UserState] = {}
    counted_up_to: dict[str, int] = {}
    for offset, event in enumerate(log):
        if apply_event(expected.setdefault(event.user_id, UserState()), event, offset) is APPLIED:
            counted_up_to[event.user_id] = offset
    keys = [user.encode() for user in expected]
    stored = dict(zip(keys, store.get_many(keys)))
    for user, state in expected.items():
        blob = stored[user.encode()]
        assert blob is not None, user
        folded = load_state(blob)
        # Repeats after the last event that counted move the offset only when a batch writes the
        # state anyway: either way, a re-read of them finds them repeated again.
        assert counted_up_to[user] <= folded.offset <= state.offset, user
        folded.offset = state.offset
        assert folded == state, user
        assert dump_state(folded) == dump_state(state), user
