"""``retention export``: scores or decisions to JSONL, optionally pseudonymised.

Analysts often need the decision log without the user ids in it. With a key, each
user id becomes ``HMAC-SHA256(key, user_id)`` (hex, 32 characters): the same user
gets the same pseudonym in every export made with that key, so exports still join
with each other, while without the key nobody can go back to the id.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson

from streams.kafka import read_topic_values
from streams.settings import Settings

__all__ = ["export_records", "pseudonymise", "pseudonymise_record"]

PSEUDONYM_PREFIX = "p-"


def pseudonymise(user_id: str, key: bytes) -> str:
    """Keyed, stable, one-way pseudonym of a user id."""
    return PSEUDONYM_PREFIX + hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:32]


def pseudonymise_record(record: dict[str, Any], key: bytes) -> dict[str, Any]:
    """A score or decision record with every user id replaced (nested interventions too)."""
    out = dict(record)
    if "user_id" in out:
        out["user_id"] = pseudonymise(str(out["user_id"]), key)
    inner = out.get("intervention")
    if isinstance(inner, dict) and "user_id" in inner:
        out["intervention"] = {**inner, "user_id": pseudonymise(str(inner["user_id"]), key)}
    return out


def export_records(settings: Settings, topic: str, out: str | Path, *, pseudonymised: bool) -> int:
    """Write every record of ``topic`` as one JSON line; returns how many."""
    key = settings.export_key.encode() if pseudonymised else None
    if pseudonymised and not key:
        msg = "--pseudonymise needs a key: set RETENTION_EXPORT_KEY (kept out of logs and errors)"
        raise ValueError(msg)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("wb") as handle:
        for value in read_topic_values(settings, topic):
            record = orjson.loads(value)
            if key is not None:
                record = pseudonymise_record(record, key)
            handle.write(orjson.dumps(record) + b"\n")
            n += 1
    return n
