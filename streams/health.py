"""What the worker says about its own health: commit progress, the circuit breaker, users held, lag.

Each is a small reporter over the metrics, fed by the processor after a batch or
by an app timer; none changes what the worker does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from faust.types import TP
from prometheus_client import Gauge

from retention_model.policy.circuit import CircuitBreaker
from streams.commits import DeliveredOffsets
from streams.metrics import Metrics

__all__ = ["BreakerReport", "CommitWatchdog", "UserCount", "record_lag"]

log = logging.getLogger(__name__)

#: How often the commit watchdog looks at how far commits trail processing (seconds).
COMMIT_WATCH_S = 10.0


class CommitWatchdog:
    """Exports how far each partition's commit trails what was processed; warns when it is stuck.

    Commits come from the delivered-up-to offsets (``streams.commits``) and count as
    made when the broker confirms them. Should a partition's commit still stop
    moving (a broker refusing commits, a bug), every restart would re-read more.
    State stays exact (per-user offsets) and re-sent outputs keep their ids, but
    the growing re-read must not be silent: ``retention_uncommitted_records`` shows
    it and the ``RetentionCommitsStuck`` alert fires on it.
    """

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        #: Per events partition, the first and the highest source offset fully processed
        #: in this assignment generation.
        self.processed: dict[TP, tuple[int, int]] = {}
        self._seen: dict[TP, int | None] = {}

    def reset(self) -> None:
        """Forget progress (partitions revoked or reassigned)."""
        self.processed.clear()
        self._seen.clear()

    def record(self, batch: Mapping[TP, Sequence[Any]]) -> None:
        """A batch's records (offset order per partition) are processed and their outputs delivered."""
        processed = self.processed
        for tp, records in batch.items():
            first, _ = processed.get(tp, (records[0].offset, -1))
            processed[tp] = (first, records[-1].offset)

    def check(self, consumer: Any, commits: DeliveredOffsets) -> None:
        """Compare each assigned partition's confirmed commit with what was processed."""
        assignment = consumer.assignment()
        for tp, (first, offset) in list(self.processed.items()):
            if tp not in assignment:
                self.processed.pop(tp, None)
                self._seen.pop(tp, None)
                continue
            committed = commits.committed(tp)
            behind = offset + 1 - (first if committed is None else committed)
            self.gauge.labels(str(tp.partition)).set(max(0, behind))
            if behind <= 0:
                self._seen.pop(tp, None)
            elif self._seen.get(tp, -1) == committed:
                log.warning(
                    "commit of %s[%d] has not moved from %s while %d is processed: a restart would re-read %d records",
                    tp.topic,
                    tp.partition,
                    committed,
                    offset,
                    behind,
                )
            else:
                self._seen[tp] = committed


class BreakerReport:
    """Exports the circuit breaker's state, and logs each trip once."""

    def __init__(self, breaker: CircuitBreaker, metrics: Metrics) -> None:
        self.breaker = breaker
        self.metrics = metrics
        self._trips = 0

    def __call__(self) -> None:
        """Export now (an expired cooldown closes the breaker here too)."""
        breaker = self.breaker
        self.metrics.circuit_open.set(1 if breaker.is_open else 0)
        if breaker.trips > self._trips:
            self.metrics.circuit_trips.inc(breaker.trips - self._trips)
            self._trips = breaker.trips
            log.error(
                "circuit breaker open: %s; interventions are suppressed (rule circuit_open), scores go on. "
                "It closes after %g s, or with `retention circuit close`",
                breaker.reason,
                breaker.config.cooldown_s,
            )


class UserCount:
    """Keeps ``retention_users_tracked`` right without counting a RocksDB store every batch.

    In memory the count is a dict's length, taken every time. On RocksDB it is one
    scan per assignment, then new users are added as batches find them.
    """

    def __init__(self, gauge: Gauge, count: Callable[[], int], *, exact: bool) -> None:
        self.gauge = gauge
        self.count = count
        self.exact = exact
        self._recount = not exact

    def rebalanced(self) -> None:
        """The assignment changed: a RocksDB store is counted once more."""
        self._recount = not self.exact

    def refresh(self, new_users: int = 0) -> None:
        """After a batch (with the users it created), or from a timer once recovery is done."""
        if self.exact:
            self.gauge.set(self.count())
        elif self._recount:
            self._recount = False
            self.gauge.set(self.count())
        elif new_users:
            self.gauge.inc(new_users)


def record_lag(consumer: Any, batch: Mapping[TP, Sequence[Any]], gauge: Gauge) -> None:
    """Lag per partition from the high watermark of the last fetch (correct on Tansu too)."""
    if consumer is None:
        return
    for tp, records in batch.items():
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # no fetch answer yet for this partition
            continue
        if highwater is not None:
            gauge.labels(str(tp.partition)).set(max(0, highwater - records[-1].offset - 1))
