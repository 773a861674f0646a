"""The typed values the batch pipeline's stages hand each other.

Kept apart from the stages so that each stage module imports only the values it
reads and makes, and a test can build any stage's input by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from retention_model.events import DecodeError, Event, EventType
from retention_model.features.state import DAY_MS, UserState
from retention_model.monitoring.drift import FeatureReference
from retention_model.pipeline.outcomes import Outcome
from retention_model.policy.recommend import Recommender

__all__ = [
    "BatchCounts",
    "BatchResult",
    "Candidates",
    "Decoded",
    "Erasure",
    "Infer",
    "Inference",
    "KeyedRecords",
    "ModelCall",
    "RawRecord",
    "Record",
    "Reject",
]

#: Records for one topic, keyed by user: (key, JSON value).
KeyedRecords = list[tuple[bytes, bytes]]


class RawRecord(Protocol):
    """A consumed record as the pipeline reads it.

    A Protocol, not a class: aiokafka's ``ConsumerRecord`` already has these
    attributes, and converting every record of a busy stream would cost more than
    decoding it.
    """

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...


class Record(NamedTuple):
    """A :class:`RawRecord` built by hand (tests, offline runs); ``timestamp`` is the producer's, in ms."""

    key: bytes | None
    value: bytes | None
    offset: int
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that goes to the dead-letter topic, and why."""

    record: RawRecord
    error: DecodeError


@dataclass(frozen=True, slots=True)
class Erasure:
    """An erasure request read from the events topic (see :mod:`.erase`)."""

    key: bytes
    offset: int
    #: The requester's id for it, echoed in the confirmation (None: none given).
    request_id: str | None
    #: When it was requested (the record's ``ts``, epoch ms), if given.
    requested_ms: int | None


@dataclass(slots=True)
class Decoded:
    """One partition's records after decoding.

    ``events`` holds each user's events with their offsets, users in first-seen
    order and events in offset order; ``first_seen_ms`` the producer timestamp of
    each user's first record in the batch (where the decision latency starts).
    """

    events: dict[bytes, list[tuple[Event, int]]]
    first_seen_ms: dict[bytes, int | None]
    rejects: list[Reject]
    unknown: int
    attributed: Counter[EventType]
    late: int
    #: The partition's watermark after this batch (event time, ms).
    watermark: int
    #: How far the watermark moved in this batch when that passed the jump threshold, else 0.
    jump_ms: int
    #: Erasure requests in offset order; each user's events before their request are dropped from ``events``.
    erasures: list[Erasure] = field(default_factory=list)


class Candidates:
    """Users gathered for one model call, with why and as of when each is scored."""

    __slots__ = ("keys", "keys_set", "now_ms", "partitions", "seen_ms", "states", "triggers", "user_ids")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.keys_set: set[bytes] = set()
        self.user_ids: list[str] = []
        self.states: list[UserState] = []
        self.now_ms: list[int] = []
        self.partitions: list[int] = []
        self.triggers: list[str] = []
        #: Producer timestamp of the user's first event in the batch (None for a silence re-score).
        self.seen_ms: list[int | None] = []

    def add(self, key: bytes, state: UserState, now_ms: int, partition: int, trigger: str, seen_ms: int | None) -> None:
        """Score ``key`` as of ``now_ms`` (event time) because of ``trigger`` (``event`` or ``silence``)."""
        self.keys.append(key)
        self.keys_set.add(key)
        self.user_ids.append(key.decode())
        self.states.append(state)
        self.now_ms.append(now_ms)
        self.partitions.append(partition)
        self.triggers.append(trigger)
        self.seen_ms.append(seen_ms)

    def __len__(self) -> int:
        return len(self.keys)


class Inference(NamedTuple):
    """What the model says about a feature matrix, row by row."""

    risks: np.ndarray
    #: Predicted effect of a coupon on P(retained), where the bundle has an uplift model.
    uplifts: np.ndarray | None = None
    #: The shadow model's risks (published beside the live ones, never acted on).
    shadow_risks: np.ndarray | None = None


#: The model call: features in, inference out. Awaitable, so the caller decides which
#: thread runs it (a worker keeps its event loop free; a test just returns).
Infer = Callable[[np.ndarray], Awaitable[Inference]]


@dataclass(frozen=True)
class ModelCall:
    """The model one batch is scored with, and what its records name."""

    infer: Infer
    version: str
    recommender: Recommender | None = None
    #: Version of the shadow model whose risks ``infer`` returns too, if any.
    shadow_version: str | None = None
    #: The bundle's feature reference: event-triggered rows are counted into its bins (drift).
    reference: FeatureReference | None = None
    #: The model's label horizon (ms): P(no purchase within it) is what ``risks`` are.
    horizon_ms: int = 30 * DAY_MS
    #: Users silent longer than this at a cutoff had no training rows (the bundle's filter); None: no limit.
    max_silence_ms: int | None = 120 * DAY_MS


@dataclass(slots=True)
class BatchCounts:
    """What happened in a batch, for metrics and logs (the pipeline itself records none)."""

    events_in: int = 0
    outcomes: Counter[tuple[EventType, str]] = field(default_factory=Counter)
    unknown: int = 0
    attributed: Counter[EventType] = field(default_factory=Counter)
    late: int = 0
    #: Partition -> how far its watermark jumped (ms), for jumps over the threshold.
    watermark_jumps: dict[int, int] = field(default_factory=dict)
    new_users: int = 0
    #: Users per model call.
    scored_per_call: list[int] = field(default_factory=list)
    tiers: Counter[str] = field(default_factory=Counter)
    #: (kind, action, rule) -> decisions.
    decided: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: (kind, tier) -> interventions sent.
    interventions: Counter[tuple[str, str]] = field(default_factory=Counter)
    silence_rescored: int = 0
    #: Users erased on request, and users dropped for silence past the state TTL.
    erased: int = 0
    expired: int = 0
    #: Shadow risk minus live risk, per scored user (with a shadow model).
    shadow_differences: list[float] = field(default_factory=list)
    #: "yes"/"no" -> whether the shadow model's tier agreed with the live one.
    shadow_agreement: Counter[str] = field(default_factory=Counter)
    #: Producer timestamps (ms) of the events whose scores this batch publishes.
    seen_ms: list[int] = field(default_factory=list)
    #: Event time and wall clock of the last round that decided under budgets (None: none did).
    budget_now_ms: int | None = None
    budget_wall_ms: int | None = None
    #: Event-triggered rows per (feature, bin) of ``feature_reference`` (drift; None without one).
    feature_bins: np.ndarray | None = None
    feature_rows: int = 0
    feature_reference: FeatureReference | None = None
    #: Cutoff scores whose horizon closed in this batch (see :mod:`.outcomes`).
    resolved: list[Outcome] = field(default_factory=list)
    #: Sampled users who left the sample in this batch, silent past the bundle's limit at a cutoff.
    outcome_left_silent: int = 0
    #: Cutoff scores pending, and users sampled, in every partition after this batch (None: outcomes off).
    outcomes_pending: int | None = None
    outcome_users: int | None = None


@dataclass(slots=True)
class BatchResult:
    """Everything a batch publishes, complete, and its counts.

    State, timer and budget writes are not here: they went to the stores as each
    round finished, since the next round reads them.
    """

    scores: KeyedRecords = field(default_factory=list)
    decisions: KeyedRecords = field(default_factory=list)
    #: Intervention kind -> records for that kind's topic.
    interventions: dict[str, KeyedRecords] = field(default_factory=lambda: {"coupon": [], "recommendation": []})
    rejects: list[Reject] = field(default_factory=list)
    #: One confirmation per erasure request, for the erasures topic.
    erasures: KeyedRecords = field(default_factory=list)
    #: One record per resolved outcome, for the outcomes topic.
    outcomes: KeyedRecords = field(default_factory=list)
    counts: BatchCounts = field(default_factory=BatchCounts)
