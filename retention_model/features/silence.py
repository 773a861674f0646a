"""Silence as a signal: when a quiet user is due to be scored again.

A user who stops sending events produces nothing to react to, so the worker keeps
a timer per user: the next *event time* at which their inactivity crosses a
threshold. Thresholds follow the user's own rhythm (2x and 3x their usual gap
between purchases) and fixed marks for everyone (7, 14, 30, 60, 90 days since
the last event). After the last mark the user is left alone.

The function is pure: it derives the next check from the state, so nothing extra
is stored and a stale timer is recognised by recomputing it.
"""

from __future__ import annotations

from typing import Final

from retention_model.features.definitions import SIGNALS
from retention_model.features.state import DAY_MS, UserState

__all__ = ["FIXED_SILENCE_DAYS", "RHYTHM_MULTIPLES", "next_check_ms"]

FIXED_SILENCE_DAYS: Final = (7, 14, 30, 60, 90)
RHYTHM_MULTIPLES: Final = (2.0, 3.0)
#: A rhythm-based check never comes sooner than this after the last event.
MIN_RHYTHM_SILENCE_MS: Final = 2 * DAY_MS
_PURCHASES: Final = [signal.on for signal in SIGNALS].index("purchases")


def check_times_ms(state: UserState) -> list[int]:
    """Every silence threshold of this user, ascending (event time, ms)."""
    if state.is_empty:
        return []
    times = {state.last_seen_ms + days * DAY_MS for days in FIXED_SILENCE_DAYS}
    purchases = state.totals[_PURCHASES]
    if purchases >= 2 and state.last_purchase_ms > state.first_purchase_ms:
        gap = (state.last_purchase_ms - state.first_purchase_ms) / (purchases - 1.0)
        earliest = state.last_seen_ms + MIN_RHYTHM_SILENCE_MS
        for multiple in RHYTHM_MULTIPLES:
            times.add(max(earliest, state.last_purchase_ms + int(multiple * gap)))
    return sorted(times)


def next_check_ms(state: UserState) -> int | None:
    """The first threshold after the user's last score (or last event), or None."""
    after = max(state.last_seen_ms, state.last_scored_ms)
    for t in check_times_ms(state):
        if t > after:
            return t
    return None
