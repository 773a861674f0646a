"""The user's last K events as a matrix, for a sequence model (GRU / 1-D convolution).

One definition for training and for serving, like the window features. Each row
describes one event as of the scoring time: its type (one-hot), how long ago it
was, the gap to the event before it, its money value, its rating, and whether it
answered an intervention. Rows are oldest first and left-padded with zeros; the
last column marks real rows, so padding is never mistaken for an event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS

__all__ = ["SEQUENCE_COLUMNS", "SEQUENCE_LENGTH", "event_sequence", "sequence_batch"]

#: Events kept per user (the issue bounds it at 32).
SEQUENCE_LENGTH = 32
_TYPES = list(EventType)
SEQUENCE_COLUMNS: tuple[str, ...] = (
    *(f"type_{t.wire_name}" for t in _TYPES),
    "log1p_age_days",
    "log1p_gap_days",
    "log1p_amount",
    "rating_scaled",
    "attributed",
    "present",
)
_TYPE_COLUMN = {t: i for i, t in enumerate(_TYPES)}
_AGE, _GAP, _AMOUNT, _RATING, _ATTRIBUTED, _PRESENT = range(len(_TYPES), len(SEQUENCE_COLUMNS))


def event_sequence(events: Sequence[Event], as_of_ms: int, length: int = SEQUENCE_LENGTH) -> np.ndarray:
    """The last ``length`` events at or before ``as_of_ms`` (in time order) as a float32 matrix."""
    visible = sorted((e for e in events if e.ts_ms <= as_of_ms), key=lambda e: e.ts_ms)[-length:]
    out = np.zeros((length, len(SEQUENCE_COLUMNS)), dtype=np.float32)
    start = length - len(visible)
    previous: int | None = None
    for row, event in enumerate(visible, start=start):
        out[row, _TYPE_COLUMN[event.type]] = 1.0
        out[row, _AGE] = math.log1p((as_of_ms - event.ts_ms) / DAY_MS)
        out[row, _GAP] = math.log1p((event.ts_ms - previous) / DAY_MS) if previous is not None else 0.0
        out[row, _AMOUNT] = math.log1p(event.amount)
        out[row, _RATING] = (event.rating / 5.0) if event.rating is not None else 0.0
        out[row, _ATTRIBUTED] = 1.0 if event.intervention_id is not None else 0.0
        out[row, _PRESENT] = 1.0
        previous = event.ts_ms
    return out


def sequence_batch(
    events_per_user: dict[str, list[Event]], points: Sequence[tuple[str, int]], length: int = SEQUENCE_LENGTH
) -> np.ndarray:
    """Sequences for (user_id, as_of_ms) points, shape (points, length, columns)."""
    out = np.zeros((len(points), length, len(SEQUENCE_COLUMNS)), dtype=np.float32)
    for i, (user_id, as_of) in enumerate(points):
        out[i] = event_sequence(events_per_user.get(user_id, []), as_of, length)
    return out
