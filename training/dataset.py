"""Labelled rows from an event log, and which cutoffs train, calibrate, validate and test.

A row is one user at one cutoff: features from the events at or before it (the
worker's own code), labels from the ``horizon_days`` after it. Cutoffs lie every
``cutoff_step_days`` back from the *test cutoff* D. Everything that trains a model
for D has its labels closed by D, so nothing after D is used:

* the model is fitted on every earlier cutoff whose label window has closed, and
  calibrated on the most recent such cutoff(s), the period closest to serving;
* candidates are compared at several *rolling origins* before D, each with the
  same rule applied to the data before it.

Rows of users silent for more than ``max_silence_days`` are left out (the worker
stops scoring a silent user after its last silence check); every report says how
many rows that filter removed.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from retention_model.errors import SettingsError, TrainingDataError
from retention_model.events import Event, EventType
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.state import DAY_MS
from training.replay import EventSource, LogSummary, Snapshots, chunks_of, grid_points, rereadable, summarise

__all__ = [
    "SECONDARY_DAYS",
    "CutoffPlan",
    "Dataset",
    "DatasetBuilder",
    "Origin",
    "TimeSplit",
    "TrainConfig",
    "build_dataset",
    "choose_cutoffs",
    "day",
    "parse_cutoff",
    "plan_cutoffs",
    "time_split",
]

log = logging.getLogger(__name__)

#: Window of the secondary labels (purchase, cancellation, review within 7 days).
SECONDARY_DAYS = 7


@dataclass(frozen=True)
class TrainConfig:
    """How to cut, label, compare and fit."""

    horizon_days: int = 30
    cutoff_step_days: int = 14
    min_history_days: int = 28
    #: Rows of users silent longer than this at their cutoff are left out (None: keep
    #: all). The worker's last silence check is at 90 days; after it nobody is scored.
    max_silence_days: int | None = 120
    #: Rolling origins at which candidates are compared, ``origin_spacing_days`` apart.
    origins: int = 3
    origin_spacing_days: int = 28
    #: The most recent labelled cutoffs the model is calibrated (and early-stopped) on.
    calibration_cutoffs: int = 1
    #: Fit rows per rolling origin at most (a seeded sample, stratified by cutoff and churn;
    #: None: all): the candidates' comparison, not the shipped model, which sees every row.
    selection_max_rows: int | None = 60_000
    #: The test cutoff D in epoch ms; None: the last one the log labels in full.
    cutoff_ms: int | None = None
    epochs: int = 40
    batch_size: int = 512
    seed: int = 42
    hidden: tuple[int, ...] = (64, 32)

    def __post_init__(self) -> None:
        positive = ("horizon_days", "cutoff_step_days", "origins", "origin_spacing_days", "calibration_cutoffs")
        optional = ("max_silence_days", "selection_max_rows")  # None: no limit
        floors = {**dict.fromkeys((*positive, "epochs", "batch_size", *optional), 1), "min_history_days": 0}
        for name, low in floors.items():
            value = getattr(self, name)
            if (value is None and name not in optional) or (value is not None and value < low):
                msg = f"TrainConfig {name} must be at least {low}{' or None' * (name in optional)}; got {value}"
                raise SettingsError(msg)


def day(ms: int) -> str:
    """An epoch-ms instant as an ISO date (or timestamp when it is not midnight UTC)."""
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.date().isoformat() if ms % DAY_MS == 0 else stamp.isoformat(timespec="seconds")


def parse_cutoff(text: str) -> int:
    """``2011-09-10`` (midnight UTC) or ``2011-09-10T00:00:00+00:00`` as epoch ms.

    Examples:
        >>> parse_cutoff("2011-09-10")
        1315612800000
        >>> parse_cutoff("2011-09-10T02:00:00+02:00")
        1315612800000
    """
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"cutoff {text!r} is not an ISO-8601 date or timestamp (2011-09-10 or 2011-09-10T00:00:00+00:00)"
        raise SettingsError(msg) from exc
    if stamp.tzinfo is None:
        if len(text) > 10:
            msg = f"cutoff {text!r} has no zone offset; add Z or +hh:mm, or give a date (midnight UTC)"
            raise SettingsError(msg)
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


@dataclass(frozen=True)
class Origin:
    """A point before the test cutoff at which candidates are fitted and judged."""

    at: int
    fit: tuple[int, ...]
    calibration: tuple[int, ...]


@dataclass(frozen=True)
class CutoffPlan:
    """Every cutoff's role for one test cutoff."""

    test: int
    #: Whether the log covers the test cutoff's label window (test figures exist).
    test_labelled: bool
    fit: tuple[int, ...]
    calibration: tuple[int, ...]
    origins: tuple[Origin, ...]

    @property
    def all_cutoffs(self) -> list[int]:
        """Every cutoff a row is needed at, ascending."""
        wanted = {*self.fit, *self.calibration, *(self.test,) * self.test_labelled}
        for origin in self.origins:
            wanted.update((origin.at, *origin.fit, *origin.calibration))
        return sorted(wanted)

    def describe(self) -> dict[str, object]:
        """The plan as dates, for bundle.json and reports."""
        return {
            "test": day(self.test),
            "test_labelled": self.test_labelled,
            "fit": [day(c) for c in self.fit],
            "calibration": [day(c) for c in self.calibration],
            "origins": [
                {
                    "at": day(o.at),
                    "fit": f"{day(o.fit[0])}..{day(o.fit[-1])}",
                    "calibration": [day(c) for c in o.calibration],
                }
                for o in self.origins
            ],
        }


def _split_closed(grid: list[int], by: int, horizon: int, calibration: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(fit, calibration) among the grid cutoffs whose labels close by ``by``."""
    closed = [c for c in grid if c + horizon <= by]
    return tuple(closed[:-calibration]), tuple(closed[-calibration:])


def plan_cutoffs(first_ms: int, last_ms: int, config: TrainConfig) -> CutoffPlan:
    """Cut the log's time line for the test cutoff (given, or the last one labelled in full)."""
    horizon = config.horizon_days * DAY_MS
    step = config.cutoff_step_days * DAY_MS
    test = config.cutoff_ms
    if test is None:
        test = last_ms - horizon
        test -= test % DAY_MS
    if test > last_ms + DAY_MS or test <= first_ms:
        msg = f"cutoff {day(test)} is outside the event log ({day(first_ms)} to {day(last_ms)})"
        raise TrainingDataError(msg)
    earliest = first_ms + config.min_history_days * DAY_MS
    grid = sorted(test - j * step for j in range(0, max(0, (test - earliest) // step) + 1))
    fit, calibration = _split_closed(grid, test, horizon, config.calibration_cutoffs)
    origins: list[Origin] = []
    for at in reversed([c for c in grid if c + horizon <= test]):
        if origins and at > origins[-1].at - config.origin_spacing_days * DAY_MS:
            continue
        o_fit, o_cal = _split_closed(grid, at, horizon, config.calibration_cutoffs)
        if o_fit:
            origins.append(Origin(at, o_fit, o_cal))
        if len(origins) == config.origins:
            break
    if not origins:
        # An origin one horizon before the test cutoff, and calibration and fit
        # cutoffs one horizon before that: every step rounds up to the cutoff grid.
        per_horizon = math.ceil(config.horizon_days / config.cutoff_step_days)
        needed = config.min_history_days + config.cutoff_step_days * (2 * per_horizon + config.calibration_cutoffs)
        where = "before" if config.cutoff_ms is not None else "before the test cutoff, and one horizon after it:"
        total = needed + (0 if config.cutoff_ms is not None else config.horizon_days)
        msg = (
            f"the event log spans {(last_ms - first_ms) / DAY_MS:.0f} days ({day(first_ms)} to {day(last_ms)}); "
            f"with a {config.horizon_days}-day horizon and cutoffs every {config.cutoff_step_days} days, training "
            f"needs {needed} days {where} {day(test)} ({total} days in all: {config.min_history_days} days of "
            f"history, {config.calibration_cutoffs + 1} cutoffs, two horizons to label and validate them). "
            "Use a shorter --horizon-days or a later --cutoff"
        )
        raise TrainingDataError(msg)
    return CutoffPlan(
        test=test,
        test_labelled=test + horizon <= last_ms,
        fit=fit,
        calibration=calibration,
        origins=tuple(origins),
    )


@dataclass
class Dataset:
    """Feature rows with labels, one per (user, cutoff)."""

    keys: list[tuple[str, int]]
    features: np.ndarray
    churn: np.ndarray
    purchase_7d: np.ndarray
    cancel_7d: np.ndarray
    review_7d: np.ndarray
    spend_h: np.ndarray
    #: Cutoff of every row the silence filter removed (for the reports' counts).
    silenced: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def take(self, mask: np.ndarray) -> Dataset:
        """Rows where ``mask`` is true."""
        idx = np.flatnonzero(mask)
        return Dataset(
            [self.keys[i] for i in idx],
            self.features[idx],
            self.churn[idx],
            self.purchase_7d[idx],
            self.cancel_7d[idx],
            self.review_7d[idx],
            self.spend_h[idx],
            self.silenced,
        )

    def at(self, cutoffs: tuple[int, ...] | list[int]) -> Dataset:
        """Rows at any of these cutoffs."""
        return self.take(np.isin(self.cutoffs, np.asarray(cutoffs, dtype=np.int64)))

    @property
    def cutoffs(self) -> np.ndarray:
        """Cutoff time of every row."""
        return np.asarray([c for _, c in self.keys], dtype=np.int64)

    def counts(self, cutoffs: tuple[int, ...] | list[int]) -> dict[str, int]:
        """Rows kept at these cutoffs and rows the silence filter removed there."""
        wanted = np.asarray(cutoffs, dtype=np.int64)
        return {
            "rows": int(np.isin(self.cutoffs, wanted).sum()),
            "removed_silent": int(np.isin(self.silenced, wanted).sum()),
        }


class DatasetBuilder:
    """Labelled rows at every cutoff, from a log fed chunk by chunk in log order (see :mod:`training.replay`).

    Memory: one state per user, the feature rows, and each user's purchase, cancel
    and review times (the labels look ahead of the cutoffs).
    """

    def __init__(self, cutoffs: Iterable[int], config: TrainConfig, *, late: frozenset[str] = frozenset()) -> None:
        self.config = config
        self._snapshots = Snapshots(grid_points(cutoffs), late=late)
        #: Per labelled type, per user: (time, amount) of each purchase, the time of each cancel or review.
        self._times: dict[EventType, defaultdict[str, list]] = {kind: defaultdict(list) for kind in _LABELLED}

    def feed(self, events: Iterable[Event]) -> None:
        """The next events of the log, in log order."""
        events = events if isinstance(events, Sequence) else list(events)
        self._snapshots.feed(events)
        times = self._times
        for event in events:
            per_user = times.get(event.type)
            if per_user is not None:
                per_user[event.user_id].append((event.ts_ms, event.amount) if event.type is _PURCHASE else event.ts_ms)

    def finish(self) -> Dataset:
        """The rows (by user in the order first seen, then by cutoff), filtered and labelled."""
        config = self.config
        keys, matrix = self._snapshots.finish()
        silenced = np.empty(0, dtype=np.int64)
        if config.max_silence_days is not None:
            recency = matrix[:, FEATURE_NAMES.index("recency_days")]
            keep = recency <= config.max_silence_days
            silenced = np.asarray([c for (_, c), kept in zip(keys, keep, strict=True) if not kept], dtype=np.int64)
            keys = [k for k, kept in zip(keys, keep, strict=True) if kept]
            matrix = matrix[keep]

        horizon, short = config.horizon_days * DAY_MS, SECONDARY_DAYS * DAY_MS
        purchases, cancels, reviews = ({u: sorted(t) for u, t in self._times.pop(k).items()} for k in _LABELLED)
        bought = {u: [t for t, _ in p] for u, p in purchases.items()}
        labels = np.zeros((len(keys), 5))
        none: list = []
        for row, (user_id, cutoff) in enumerate(keys):
            ts = bought.get(user_id, none)
            lo, hi = bisect_right(ts, cutoff), bisect_right(ts, cutoff + horizon)
            labels[row] = (
                float(lo == hi),
                _any_in(ts, cutoff, short),
                _any_in(cancels.get(user_id, none), cutoff, short),
                _any_in(reviews.get(user_id, none), cutoff, short),
                sum(a for _, a in purchases[user_id][lo:hi]) if hi > lo else 0.0,
            )
        return Dataset(keys, matrix, *(labels[:, i] for i in range(5)), silenced=silenced)


_PURCHASE = EventType.PURCHASE
#: The types the labels read, purchases first.
_LABELLED = (EventType.PURCHASE, EventType.CANCEL_ORDER, EventType.REVIEW)


def _any_in(times: list[int], after: int, span: int) -> float:
    """1.0 when a time in the sorted ``times`` lies in (after, after + span]."""
    idx = bisect_right(times, after)
    return 1.0 if idx < len(times) and times[idx] <= after + span else 0.0


def build_dataset(
    events: EventSource | Iterable[Event], cutoffs: list[int], config: TrainConfig, *, summary: LogSummary | None = None
) -> Dataset:
    """Labelled feature rows at every cutoff for every user seen at or before it.

    ``events``: in memory, or an :class:`~training.replay.EventLog` read in chunks: one
    pass, after one for :func:`~training.replay.summarise` unless ``summary`` is given.
    """
    if summary is None:
        events = rereadable(events)  # two passes: a one-shot iterable is read into a list
        summary = summarise(events)
    builder = DatasetBuilder(cutoffs, config, late=summary.late_users)
    for chunk in chunks_of(events):
        builder.feed(chunk)
    return builder.finish()


def choose_cutoffs(first_ms: int, last_ms: int, config: TrainConfig) -> list[int]:
    """Cutoffs every ``cutoff_step_days`` from the log's start, each with a full label horizon after it."""
    start = first_ms + config.min_history_days * DAY_MS
    end = last_ms - config.horizon_days * DAY_MS
    start -= start % DAY_MS
    return list(range(start, end + 1, config.cutoff_step_days * DAY_MS))


@dataclass
class TimeSplit:
    """Rows at earlier cutoffs to train on, the next to validate, the last to test.

    Each later set's cutoff is at least one horizon after the rows before it were
    labelled, so no label window overlaps a later set's features. Used by the
    sequence-model comparison; training proper uses :func:`plan_cutoffs`.
    """

    train: Dataset
    validation: Dataset
    test: Dataset
    train_cutoffs: list[int]
    val_cutoff: int
    test_cutoff: int


def time_split(events: list[Event], config: TrainConfig) -> TimeSplit:
    """Cut, label and split an event log by time into train, validation and test."""
    first_ms = min(e.ts_ms for e in events)
    last_ms = max(e.ts_ms for e in events)
    cutoffs = choose_cutoffs(first_ms, last_ms, config)
    horizon = config.horizon_days * DAY_MS
    test_cutoff = cutoffs[-1] if cutoffs else 0
    val_cutoff = max((c for c in cutoffs if c <= test_cutoff - horizon), default=0)
    train_cutoffs = [c for c in cutoffs if c <= val_cutoff - horizon]
    if not train_cutoffs:
        per_horizon = math.ceil(config.horizon_days / config.cutoff_step_days) * config.cutoff_step_days
        needed = config.min_history_days + 2 * per_horizon + config.horizon_days
        msg = (
            f"the event log spans {(last_ms - first_ms) / DAY_MS:.0f} days; a time split with a "
            f"{config.horizon_days}-day horizon needs at least {needed} days"
        )
        raise TrainingDataError(msg)
    data = build_dataset(events, cutoffs, config)
    at = data.cutoffs
    return TimeSplit(
        train=data.take(at <= val_cutoff - horizon),
        validation=data.take(at == val_cutoff),
        test=data.take(at == test_cutoff),
        train_cutoffs=train_cutoffs,
        val_cutoff=val_cutoff,
        test_cutoff=test_cutoff,
    )
