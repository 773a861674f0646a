"""Erasure and expiry: a user's state and silence timers removed from a partition's stores.

An erasure request is a record on the events topic, keyed by the user like their
events: ``{"type": "erase", "user_id": ..., "request_id": ..., "ts": ...}``. On
the events topic it lands in the user's partition, in order with their events,
so the worker that owns the user handles it, events before it in the log are
forgotten with the rest, events after it start a new, empty history, and a crash
replays the request with everything before it (a separate topic would be read
at its own pace: a replay could re-apply events after the erasure was committed).
Older workers count it as an unknown event type and skip it.

Deleting through the stores writes a tombstone (key, no value) to each changelog,
and recovery replays those as deletions, so a restarted worker does not bring the
user back. Policy memory (cooldowns, caps, the opt-out flag) lives in the state
and goes with it: keeping an opt-out after erasure is the shop's system of record's job.

Expiry removes users silent longer than the state TTL the same way, from the
silence round (see :func:`~retention_model.pipeline.timers.collect_due`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import orjson

from retention_model.events import DecodeError
from retention_model.pipeline.partition import PartitionContext
from retention_model.pipeline.records import Erasure, KeyedRecords, RawRecord
from retention_model.schema import MAX_STRING_LEN

__all__ = ["ERASE_TYPE", "confirmations", "erase_request", "erase_users", "forwarded_request", "parse_erasure"]

#: The ``type`` of an erasure request on the events topic.
ERASE_TYPE: Final = "erase"


def erase_request(user_id: str, *, request_id: str, requested_ms: int) -> bytes:
    """The record value that asks the worker owning ``user_id`` to erase them (key: the user id)."""
    return orjson.dumps({"type": ERASE_TYPE, "user_id": user_id, "request_id": request_id, "ts": requested_ms})


def forwarded_request(value: bytes | None, fallback_ms: int) -> tuple[bytes, bytes] | str:
    """A record of the erasure-requests topic as (key, value) for the events topic, or why it is refused.

    The privacy system writes ``{"user_id": ..., "request_id": ..., "ts": ...}`` keyed as it
    likes (``type`` optional): the forwarder keys the request by the user, so it lands
    in the user's partition whatever the writer's partitioner. ``ts`` defaults to the
    record's timestamp (``fallback_ms``).
    """
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(body, dict):
        return "not a JSON object"
    if body.get("type", ERASE_TYPE) != ERASE_TYPE:
        return f"type is not {ERASE_TYPE!r}"
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_STRING_LEN:
        return f"user_id missing, not a string or over {MAX_STRING_LEN} characters"
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or len(request_id) > MAX_STRING_LEN:
        request_id = None
    requested = body.get("ts")
    requested_ms = requested if type(requested) is int else fallback_ms
    record = {"type": ERASE_TYPE, "user_id": user_id, "request_id": request_id, "ts": requested_ms}
    return user_id.encode(), orjson.dumps(record)


def parse_erasure(record: RawRecord, user_id: str) -> Erasure | DecodeError:
    """The erasure request in ``record`` (its ``type`` is :data:`ERASE_TYPE`), or why it is refused.

    ``request_id`` and ``ts`` are optional: a request without them is still honoured.
    """
    key = record.key
    if key is None or key != user_id.encode():
        return DecodeError("key_mismatch", f"record key {key!r} is not the erasure's user_id; key it by user_id")
    body = orjson.loads(record.value or b"{}")  # decode_event parsed it already: it is a JSON object
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or len(request_id) > MAX_STRING_LEN:
        request_id = None
    requested = body.get("ts")
    requested_ms = requested if type(requested) is int else None
    return Erasure(key, record.offset, request_id, requested_ms)


def erase_users(context: PartitionContext, keys: Sequence[bytes]) -> list[tuple[int, int]]:
    """Delete each user's state and every silence-timer entry naming them; per key: (state bytes, timer entries).

    Both deletions go through the stores, so their changelogs get the tombstones.
    """
    states = context.stores.states
    if context.cache is not None:
        context.cache.forget(keys)
    blobs = states.get_many(keys)
    states.put_many([(key, None) for key, blob in zip(keys, blobs) if blob is not None])
    removed = context.timers.remove(set(keys))
    if context.outcomes is not None:  # a pending score names the user: it goes too
        context.outcomes.drop(keys)
    return [(len(blob) if blob else 0, removed.get(key, 0)) for key, blob in zip(keys, blobs)]


def confirmations(
    erasures: Sequence[Erasure], removed: Sequence[tuple[int, int]], partition: int, erased_ms: int
) -> KeyedRecords:
    """One confirmation record per request (even when nothing was held), keyed by the user."""
    out: KeyedRecords = []
    for erasure, (state_bytes, timer_entries) in zip(erasures, removed):
        record = {
            "user_id": erasure.key.decode(),
            "request_id": erasure.request_id,
            "requested_at": erasure.requested_ms,
            "erased_at": erased_ms,
            "source": {"partition": partition, "offset": erasure.offset},
            "removed": {"state_bytes": state_bytes, "silence_timer_entries": timer_entries},
        }
        out.append((erasure.key, orjson.dumps(record)))
    return out
