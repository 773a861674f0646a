"""Decode stage: one partition's raw records into each user's events, plus rejects with reasons.

The partition's watermark moves here too: it is what the decoded event times
allow, minus the tolerated lateness, never ahead of the wall clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from retention_model.events import DecodeError, Event, EventType, decode_event
from retention_model.pipeline.erase import ERASE_TYPE, parse_erasure
from retention_model.pipeline.records import Decoded, Erasure, RawRecord, Reject

__all__ = ["DecodeLimits", "ahead_of_time", "decode_records"]


@dataclass(frozen=True)
class DecodeLimits:
    """How far event time may stray, in ms."""

    #: Lateness tolerated before the watermark moves on.
    lateness_ms: int
    #: How far an event may run ahead of its record's timestamp (or the wall clock).
    future_skew_ms: int
    #: A watermark advance larger than this in one batch is reported.
    watermark_jump_ms: int


def ahead_of_time(ts_ms: int, record_ms: int | None, wall_ms: int, skew_ms: int) -> DecodeError | None:
    """Why an event's time is too far ahead, or None: compared with its record's timestamp, or
    with the wall clock where the record has none or carries a future one itself.

    Examples:
        >>> ahead_of_time(1_000_000, 999_000, 2_000_000, 300_000) is None
        True
        >>> ahead_of_time(1_400_000, 1_000_000, 2_000_000, 300_000).reason
        'timestamp_in_future'
    """
    use_record = record_ms is not None and 0 < record_ms <= wall_ms + skew_ms
    reference = record_ms if use_record else wall_ms
    assert reference is not None
    if ts_ms <= reference + skew_ms:
        return None
    against = "record timestamp" if use_record else "wall clock"
    return DecodeError(
        "timestamp_in_future",
        f"ts {ts_ms} is {(ts_ms - reference) / 1000:.0f} s ahead of the {against}"
        f"; at most {skew_ms / 1000:g} s allowed (RETENTION_MAX_FUTURE_SKEW_S)",
    )


def decode_records(records: Sequence[RawRecord], *, watermark: int, wall_ms: int, limits: DecodeLimits) -> Decoded:
    """Decode one partition's records (in offset order), starting from its ``watermark``.

    A record is rejected when it does not decode, when its key is not the event's
    user id, or when its event time runs more than the skew ahead of the record's
    timestamp (or of ``wall_ms`` where the record's own timestamp is missing or
    ahead): one record's clock must not fire every silence timer and open fresh
    cooldowns and budgets. Unknown event types (a newer producer's) are counted only.
    An erasure request (:mod:`.erase`) drops the user's events read before it in
    this batch; the caller erases what is stored before folding what follows it.
    """
    lateness = limits.lateness_ms
    skew = limits.future_skew_ms
    by_user: dict[bytes, list[tuple[Event, int]]] = {}
    first_seen: dict[bytes, int | None] = {}
    rejects: list[Reject] = []
    erasures: list[Erasure] = []
    attributed: Counter[EventType] = Counter()
    unknown = late = 0
    previous = watermark
    for record in records:
        value = record.value if record.value is not None else b""
        decoded = decode_event(value)
        key = record.key
        if isinstance(decoded, Event):
            if key is None or key != decoded.user_id.encode():
                decoded = DecodeError(
                    "key_mismatch",
                    f"record key {key!r} is not the event's user_id; producers key events by user_id",
                )
            elif decoded.ts_ms - skew > min(record.timestamp or 0, wall_ms) and (
                ahead := ahead_of_time(decoded.ts_ms, record.timestamp, wall_ms, skew)
            ):
                decoded = ahead  # (the cheap test above is false for nearly every event)
            else:
                items = by_user.get(key)
                if items is None:
                    by_user[key] = [(decoded, record.offset)]
                    first_seen[key] = record.timestamp
                else:
                    items.append((decoded, record.offset))
                if decoded.intervention_id is not None:
                    attributed[decoded.type] += 1
                ts = decoded.ts_ms
                if ts < watermark:
                    late += 1
                elif ts - lateness > watermark:
                    watermark = ts - lateness
                continue
        if not isinstance(decoded, DecodeError) and decoded.type_name == ERASE_TYPE:
            decoded = parse_erasure(record, decoded.user_id)
            if isinstance(decoded, Erasure):
                by_user.pop(decoded.key, None)
                first_seen.pop(decoded.key, None)
                erasures.append(decoded)
                continue
        if isinstance(decoded, DecodeError):
            rejects.append(Reject(record, decoded))
        else:  # UnknownEventType: a newer producer's event, counted, not an error
            unknown += 1
    horizon = wall_ms + skew
    if watermark > horizon:  # never ahead of the wall clock, whatever the events say
        watermark = horizon
    jump = watermark - previous if previous and watermark - previous > limits.watermark_jump_ms else 0
    return Decoded(by_user, first_seen, rejects, unknown, attributed, late, watermark, jump, erasures)
