"""Outcome join at cutoffs: a bounded sample of users, scored as of each cutoff, resolved a horizon later.

Live figures must read against the bundle's test figures, so they are made the
same way: a user's risk **as of a cutoff**, from the events at or before it,
labelled *churned* when no purchase follows within the horizon. Scores taken
at events would not do: a user is scored the moment they act, when they look
most alive, and those scores rank far worse than cutoff scores of the same model.

The sample, per source partition: a **bottom-k sample of users**, at most
``capacity``, ranked by a hash of the user key, so membership does not depend on
behaviour. A user scored by the worker (after an event or a silence re-score)
joins when there is room or their rank beats the worst member's (who leaves,
with their pending scores). The cutoffs are multiples of the model's horizon
in event time (UTC); each member is snapshotted at every cutoff after they joined:

- a member whose events in a batch pass their next cutoff is snapshotted before
  the fold, from the stored state plus the batch's events at or before the cutoff;
- once the partition's watermark passes a cutoff, every member not yet
  snapshotted there is, from the stored state (it holds nothing later).

A member silent longer than the bundle's ``max_silence_days`` at a cutoff leaves
the sample, as training leaves such rows out. A snapshot resolves in the first
batch whose watermark reaches its cutoff plus the horizon. Purchases are read from
each batch's decoded events (the state keeps only the last few purchase times).

The sample is held in memory: a rebalance or restart forgets the partitions
involved (the sample fills again, outcomes resume a horizon later). An erased or
expired user leaves it with their pending scores.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from retention_model.events import Event, EventType
from retention_model.features.state import DAY_MS, UserState, apply_event, dump_state, load_state
from retention_model.policy.policy import iso_ms

__all__ = ["OUTCOME_SCHEMA", "Member", "Outcome", "OutcomeSample", "PendingScore", "Snapshot", "cutoff_after"]

OUTCOME_SCHEMA = "retention.outcome/v1"


def cutoff_after(ts_ms: int, period_ms: int) -> int:
    """The first cutoff (a multiple of ``period_ms`` since the epoch) strictly after ``ts_ms``."""
    return (ts_ms // period_ms + 1) * period_ms


@dataclass(slots=True)
class PendingScore:
    """One snapshot's score waiting for its horizon to close."""

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
    #: The shadow model's score of the same snapshot (never acted on; judged all the same).
    shadow: bool = False

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
            "shadow": score.shadow,
        }


def first_purchase_within(events: Iterable[tuple[Event, int]], after_ms: int, until_ms: int) -> int | None:
    """The earliest purchase time among ``events`` (with offsets) in (``after_ms``, ``until_ms``], or None.

    A retried purchase counts like the original: the question is whether the user bought, not how often.
    """
    times = [e.ts_ms for e, _ in events if e.type is _PURCHASE and after_ms < e.ts_ms <= until_ms]
    return min(times) if times else None


_PURCHASE = EventType.PURCHASE


def user_rank(key: bytes) -> int:
    """A uniform 64-bit rank of a user key, unrelated to the partitioner's hash (the sample's order)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8, person=b"retention-out").digest(), "big")


@dataclass(slots=True)
class Member:
    """A sampled user: who, their rank, and the next cutoff they are to be snapshotted at."""

    user_id: str
    rank: int
    next_cutoff_ms: int


@dataclass(slots=True)
class Snapshot:
    """A member's state as of a cutoff, to be scored (the state is a copy, never the live one)."""

    key: bytes
    user_id: str
    state: UserState
    cutoff_ms: int
    #: A purchase already seen after the cutoff and within the horizon (the batch's events), if any.
    purchased_ms: int | None = None


@dataclass(slots=True)
class OutcomeSample:
    """One partition's sampled users and their pending cutoff scores (see the module docstring).

    Examples:
        >>> sample = OutcomeSample(capacity=10)
        >>> sample.enroll(b"u1", "u1", now_ms=5, period_ms=DAY_MS)
        True
        >>> sample.members[b"u1"].next_cutoff_ms == DAY_MS
        True
    """

    capacity: int
    members: dict[bytes, Member] = field(default_factory=dict)
    pending: dict[bytes, list[PendingScore]] = field(default_factory=dict)
    #: (-rank, key): the worst-ranked member on top, for the bottom-k rule.
    _worst: list[tuple[int, bytes]] = field(default_factory=list)
    #: (due time, key, cutoff): popped in due order; an entry whose score is gone is skipped.
    _due: list[tuple[int, bytes, int]] = field(default_factory=list)
    #: Members who left because they were silent past the limit at a cutoff, since the last take.
    left_silent: int = 0
    #: No member's next cutoff is below this (it may be lower than the true least: a scan then fixes it).
    _next_sweep_ms: float = float("inf")

    def __post_init__(self) -> None:
        if self.capacity <= 0:
            msg = f"capacity must be a positive number of users, got {self.capacity}"
            raise ValueError(msg)

    def __len__(self) -> int:
        """Pending scores."""
        return sum(len(scores) for scores in self.pending.values())

    def enroll(self, key: bytes, user_id: str, now_ms: int, period_ms: int) -> bool:
        """Take a scored user into the sample if there is room or they outrank the worst member."""
        members = self.members
        if key in members:
            return False
        rank = user_rank(key)
        worst = self._worst
        if len(members) >= self.capacity:
            while worst and worst[0][1] not in members:  # left since
                heapq.heappop(worst)
            if not worst or rank >= -worst[0][0]:
                return False
            self.drop([heapq.heappop(worst)[1]])
        member = members[key] = Member(user_id, rank, cutoff_after(now_ms, period_ms))
        heapq.heappush(worst, (-rank, key))
        self._next_sweep_ms = min(self._next_sweep_ms, member.next_cutoff_ms)
        return True

    def crossing(
        self,
        events: Mapping[bytes, list[tuple[Event, int]]],
        stored: Mapping[bytes, UserState | None],
        period_ms: int,
        max_silence_ms: int | None,
    ) -> list[Snapshot]:
        """Snapshots of members whose batch events pass their next cutoff: ``stored`` (the pre-batch
        states of the :meth:`passing` keys, decoded afresh: they are changed here) plus the batch's
        events at or before each cutoff. Their next cutoffs move past the batch's last event; a cutoff
        the member was silent past the limit at gives no row (they are active again).
        """
        out: list[Snapshot] = []
        for key, stored_state in stored.items():
            member = self.members[key]
            state = stored_state if stored_state is not None else UserState()
            user_events = events[key]
            latest = max(e.ts_ms for e, _ in user_events)
            applied = 0
            ordered = sorted(user_events, key=lambda pair: pair[0].ts_ms)
            cutoff = member.next_cutoff_ms
            while cutoff < latest:
                while applied < len(ordered) and ordered[applied][0].ts_ms <= cutoff:
                    apply_event(state, *ordered[applied])
                    applied += 1
                silent = max_silence_ms is not None and cutoff - state.last_seen_ms > max_silence_ms
                if not state.is_empty and not silent:
                    bought = first_purchase_within(user_events, cutoff, cutoff + period_ms)
                    out.append(Snapshot(key, member.user_id, _copy(state), cutoff, bought))
                cutoff += period_ms
            member.next_cutoff_ms = cutoff
        return out

    def passing(self, events: Mapping[bytes, list[tuple[Event, int]]]) -> list[bytes]:
        """Members among a batch's users (user -> events) with an event after their next cutoff."""
        members = self.members
        out = []
        for key, user_events in events.items():
            member = members.get(key)
            if member is not None and any(e.ts_ms > member.next_cutoff_ms for e, _ in user_events):
                out.append(key)
        return out

    def due_members(self, watermark: int) -> list[bytes]:
        """Members whose next cutoff the watermark has reached (a scan only when one may have)."""
        if watermark < self._next_sweep_ms:
            return []
        due = [key for key, member in self.members.items() if member.next_cutoff_ms <= watermark]
        if not due:
            self._next_sweep_ms = min((m.next_cutoff_ms for m in self.members.values()), default=float("inf"))
        return due

    def sweep(
        self, stored: Mapping[bytes, UserState | None], watermark: int, period_ms: int, max_silence_ms: int | None
    ) -> list[Snapshot]:
        """Snapshots at every cutoff up to ``watermark`` of the :meth:`due_members` (their ``stored`` states
        hold nothing after those cutoffs); members silent past ``max_silence_ms`` leave."""
        out: list[Snapshot] = []
        leaving: list[bytes] = []
        for key, state in stored.items():
            member = self.members[key]
            cutoff = member.next_cutoff_ms
            while cutoff <= watermark:
                if state is None or (max_silence_ms is not None and cutoff - state.last_seen_ms > max_silence_ms):
                    leaving.append(key)
                    break
                out.append(Snapshot(key, member.user_id, state, cutoff))
                cutoff += period_ms
            member.next_cutoff_ms = cutoff
        self.left_silent += len(leaving)
        self.drop(leaving)
        self._next_sweep_ms = min((m.next_cutoff_ms for m in self.members.values()), default=float("inf"))
        return out

    def add(self, key: bytes, score: PendingScore) -> None:
        """File a scored snapshot until its horizon closes."""
        self.pending.setdefault(key, []).append(score)
        heapq.heappush(self._due, (score.due_ms, key, score.scored_ms))

    def observe(self, events: Mapping[bytes, list[tuple[Event, int]]]) -> None:
        """Note the purchases among a batch's decoded events (user -> events) of users with scores pending."""
        pending = self.pending
        for key, user_events in events.items():
            scores = pending.get(key)
            if scores is None:
                continue
            for score in scores:
                bought = first_purchase_within(user_events, score.scored_ms, score.due_ms)
                if bought is not None and (score.purchased_ms is None or bought < score.purchased_ms):
                    score.purchased_ms = bought

    def resolve(self, watermark: int) -> list[Outcome]:
        """Take out every score whose horizon closed at or below ``watermark``, earliest first."""
        due, pending = self._due, self.pending
        out: list[Outcome] = []
        while due and due[0][0] <= watermark:
            _, key, scored_ms = heapq.heappop(due)
            scores = pending.get(key)
            if not scores:
                continue  # dropped (erased, evicted) since
            for i, score in enumerate(scores):
                if score.scored_ms == scored_ms:
                    del scores[i]
                    out.append(Outcome(key, score))
                    break
            if not scores:
                del pending[key]
        return out

    def drop(self, keys: Iterable[bytes]) -> None:
        """Forget ``keys`` (erased, expired, evicted or silent users) and their pending scores."""
        for key in keys:
            self.members.pop(key, None)
            self.pending.pop(key, None)
        if len(self._due) > 2 * max(len(self.pending), 64):  # keep the heap near the sample's size
            self._due = [entry for entry in self._due if entry[1] in self.pending]
            heapq.heapify(self._due)
        if len(self._worst) > 2 * max(len(self.members), 64):
            self._worst = [entry for entry in self._worst if entry[1] in self.members]
            heapq.heapify(self._worst)

    def take_left_silent(self) -> int:
        """Members who left for silence since the last call (for a counter)."""
        left, self.left_silent = self.left_silent, 0
        return left


def _copy(state: UserState) -> UserState:
    return load_state(dump_state(state))
