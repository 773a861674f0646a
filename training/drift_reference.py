"""The feature reference a bundle carries for drift monitoring.

Rows are the features a worker would score just before the test cutoff: one row
per event in the last ``days`` days, as of that event (the worker scores a user
after each event). Not the training rows: those are snapshots at daily cutoffs,
where recency and the short windows look nothing like the moment after an event,
so every live window would read as drift. A recent window rather than all the
history, because tenure and running totals grow with the calendar.

Built in one pass over chunks (:class:`ReferenceBuilder`), so a log streamed in
chunks never has to be held whole; a sample of the window's events when it has
more than :data:`REFERENCE_ROWS`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from retention_model.events import Event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.derive import feature_matrix
from retention_model.features.state import DAY_MS, UserState, apply_event
from retention_model.monitoring.drift import DEFAULT_BINS, FeatureReference

__all__ = ["REFERENCE_DAYS", "REFERENCE_ROWS", "ReferenceBuilder", "feature_reference"]

#: Days of events before the cutoff the reference is drawn from.
REFERENCE_DAYS = 30
#: At most this many rows: plenty for ten bins per feature.
REFERENCE_ROWS = 50_000
#: States copied at snapshots are turned into rows this many at a time.
_BLOCK = 4096


class ReferenceBuilder:
    """Folds events (in log order, chunk by chunk) and keeps feature rows after the window's events.

    A user's row is taken once every event of that millisecond is in (the state
    the worker scores), i.e. when a later event of the user arrives, or at the end.
    """

    def __init__(
        self,
        until_ms: int,
        *,
        days: int = REFERENCE_DAYS,
        rate: float = 1.0,
        seed: int = 0,
        max_rows: int = REFERENCE_ROWS,
    ) -> None:
        """``rate``: share of the window's events sampled (pick it so that about ``max_rows`` remain)."""
        self.since_ms = until_ms - days * DAY_MS
        self.until_ms = until_ms
        self.days = days
        self.rate = rate
        self.max_rows = max_rows
        self._rng = np.random.default_rng(seed)
        self._states: dict[str, UserState] = {}
        self._pending: dict[str, int] = {}
        self._copies: list[UserState] = []
        self._times: list[int] = []
        self._blocks: list[np.ndarray] = []

    @classmethod
    def for_log(
        cls, until_ms: int, events: int, first_ms: int, last_ms: int, *, seed: int = 0, days: int = REFERENCE_DAYS
    ) -> ReferenceBuilder:
        """A builder whose sample rate leaves about :data:`REFERENCE_ROWS` rows of a log of ``events`` events."""
        in_window = events * min(1.0, days * DAY_MS / max(last_ms - first_ms, DAY_MS))
        return cls(until_ms, days=days, rate=min(1.0, 1.2 * REFERENCE_ROWS / max(in_window, 1.0)), seed=seed)

    def feed(self, events: Iterable[Event]) -> None:
        """Fold a chunk of the log; events after ``until_ms`` are skipped (the bundle never sees them)."""
        states, pending = self._states, self._pending
        for event in events:
            ts = event.ts_ms
            if ts > self.until_ms:
                continue
            user = event.user_id
            state = states.get(user)
            if state is None:
                state = states[user] = UserState()
            due = pending.get(user)
            if due is not None and ts > due:
                self._snapshot(state, pending.pop(user))
            apply_event(state, event)
            if ts > self.since_ms and (self.rate >= 1.0 or self._rng.random() < self.rate):
                pending[user] = max(ts, pending.get(user, ts))

    def _snapshot(self, state: UserState, at: int) -> None:
        self._copies.append(state.copy())
        self._times.append(at)
        if len(self._copies) >= _BLOCK:
            self._derive()

    def _derive(self) -> None:
        if self._copies:
            self._blocks.append(feature_matrix(self._copies, self._times).astype(np.float32))
            self._copies, self._times = [], []

    def rows(self) -> np.ndarray | None:
        """The feature rows (in :data:`FEATURE_NAMES` order; None when no event fell in the window).

        Also what ``retention report model --events`` counts into a bundle's bins:
        the live side of its PSI is then drawn exactly as the reference was.
        """
        for user, at in self._pending.items():
            self._snapshot(self._states[user], at)
        self._pending.clear()
        self._derive()
        if not self._blocks:
            return None
        matrix = np.concatenate(self._blocks).astype(np.float64)
        if len(matrix) > self.max_rows:
            matrix = matrix[np.sort(self._rng.choice(len(matrix), size=self.max_rows, replace=False))]
        return matrix

    def finish(self) -> FeatureReference | None:
        """The reference (None when no event fell in the window)."""
        matrix = self.rows()
        if matrix is None:
            return None
        source = f"features after each event in the {self.days} days before the cutoff ({len(matrix)} rows)"
        return FeatureReference.fit(matrix, FEATURE_NAMES, bins=DEFAULT_BINS, source=source)


def feature_reference(
    events: list[Event], until_ms: int, *, days: int = REFERENCE_DAYS, max_rows: int = REFERENCE_ROWS, seed: int = 0
) -> FeatureReference | None:
    """The reference of a bundle cut at ``until_ms``, from events in memory."""
    in_window = sum(1 for e in events if until_ms - days * DAY_MS < e.ts_ms <= until_ms)
    rate = min(1.0, 1.2 * max_rows / max(in_window, 1))
    builder = ReferenceBuilder(until_ms, days=days, rate=rate, seed=seed, max_rows=max_rows)
    builder.feed(events)
    return builder.finish()
