"""Outcome join: a bounded sample of each partition's scores, resolved when their horizon closes.

The worker knows how right a score was once event time passes the score's time
plus the model's horizon: the user purchased within it (retained) or not
(churned, the event the risk is a probability of). The same events say so, so
no offline job is needed.

The sample, per source partition: **at most one pending score per user**, the
first score made while that user had none pending (an event or a silence
re-score); once it resolves, the user's next score may enter. At most
``capacity`` scores are pending per partition; a score offered while the sample
is full is skipped and counted, never waited for. Purchases are read from each batch's
decoded events before the fold (not from the state, which keeps only the last
few purchase times: a replayed batch can span months), and a score resolves in
the first batch whose partition watermark reaches its time plus the horizon. A
purchase later than the allowed lateness behind the watermark may come after
its score resolved: it is not counted.

The sample is held in memory: a rebalance or restart forgets the pending scores
of the partitions involved (their outcomes are not published; the sample fills
again within one horizon). An erased user's pending score is dropped with them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS
from retention_model.policy.policy import iso_ms

__all__ = ["OUTCOME_SCHEMA", "Outcome", "OutcomeSample", "PendingScore"]

OUTCOME_SCHEMA = "retention.outcome/v1"


@dataclass(slots=True)
class PendingScore:
    """One sampled score waiting for its horizon to close."""

    user_id: str
    scored_ms: int
    horizon_ms: int
    risk: float
    tier: str
    model_version: str
    holdout: bool
    trigger: str
    #: The first purchase seen after the score and within the horizon (None: none yet).
    purchased_ms: int | None = None

    @property
    def due_ms(self) -> int:
        """Event time at which the outcome is known."""
        return self.scored_ms + self.horizon_ms


@dataclass(frozen=True, slots=True)
class Outcome:
    """A resolved score: what it said, and what the user did within the horizon."""

    key: bytes
    score: PendingScore

    @property
    def churned(self) -> bool:
        """No purchase within the horizon after the score (the event the risk predicts)."""
        return self.score.purchased_ms is None

    def record(self) -> dict[str, Any]:
        """Wire form for the outcomes topic (schema ``retention.outcome/v1``)."""
        score = self.score
        return {
            "schema": OUTCOME_SCHEMA,
            "user_id": score.user_id,
            "model_version": score.model_version,
            "risk": round(score.risk, 6),
            "tier": score.tier,
            "holdout": score.holdout,
            "trigger": score.trigger,
            "scored_at": iso_ms(score.scored_ms),
            "resolved_at": iso_ms(score.due_ms),
            "horizon_days": round(score.horizon_ms / DAY_MS, 3),
            "churned": self.churned,
            "purchased_at": None if score.purchased_ms is None else iso_ms(score.purchased_ms),
        }


def first_purchase_within(events: Iterable[tuple[Event, int]], after_ms: int, until_ms: int) -> int | None:
    """The earliest purchase time among ``events`` (with offsets) in (``after_ms``, ``until_ms``], or None.

    A retried purchase counts like the original: the question is whether the user bought, not how often.
    """
    times = [e.ts_ms for e, _ in events if e.type is _PURCHASE and after_ms < e.ts_ms <= until_ms]
    return min(times) if times else None


_PURCHASE = EventType.PURCHASE


class OutcomeSample:
    """One partition's pending scores (see the module docstring for which are sampled).

    Examples:
        >>> sample = OutcomeSample(capacity=10)
        >>> sample.offer(b"u1", PendingScore("u1", 0, DAY_MS, 0.8, "high", "v1", False, "event"))
        True
        >>> [o.churned for o in sample.resolve(watermark=DAY_MS)]
        [True]
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            msg = f"capacity must be a positive number of pending scores, got {capacity}"
            raise ValueError(msg)
        self.capacity = capacity
        self.pending: dict[bytes, PendingScore] = {}
        #: (due time, key, scored time): popped in due order; an entry whose score is gone is skipped.
        self._due: list[tuple[int, bytes, int]] = []
        #: Scores offered while the sample was full, since the last :meth:`take_skipped`.
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.pending)

    def offer(self, key: bytes, score: PendingScore) -> bool:
        """Sample ``score`` if its user has none pending and there is room; whether it was taken."""
        pending = self.pending
        if key in pending:
            return False
        if len(pending) >= self.capacity:
            self.skipped += 1
            return False
        pending[key] = score
        heapq.heappush(self._due, (score.due_ms, key, score.scored_ms))
        return True

    def observe(self, events: Mapping[bytes, list[tuple[Event, int]]]) -> None:
        """Note the purchases among a batch's decoded events (user -> events) of users with a score pending."""
        pending = self.pending
        for key, user_events in events.items():
            score = pending.get(key)
            if score is None:
                continue
            bought = first_purchase_within(user_events, score.scored_ms, score.due_ms)
            if bought is not None and (score.purchased_ms is None or bought < score.purchased_ms):
                score.purchased_ms = bought

    def resolve(self, watermark: int) -> list[Outcome]:
        """Take out every score whose horizon closed at or below ``watermark``, earliest first."""
        due, pending = self._due, self.pending
        out: list[Outcome] = []
        while due and due[0][0] <= watermark:
            _, key, scored_ms = heapq.heappop(due)
            score = pending.get(key)
            if score is None or score.scored_ms != scored_ms:
                continue  # dropped (erased) since
            del pending[key]
            out.append(Outcome(key, score))
        return out

    def drop(self, keys: Iterable[bytes]) -> None:
        """Forget the pending scores of ``keys`` (erased or expired users)."""
        for key in keys:
            self.pending.pop(key, None)
        if len(self._due) > 2 * max(len(self.pending), 64):  # keep the heap near the sample's size
            self._due = [entry for entry in self._due if entry[1] in self.pending]
            heapq.heapify(self._due)

    def take_skipped(self) -> int:
        """Scores skipped since the last call (for a counter)."""
        skipped, self.skipped = self.skipped, 0
        return skipped
