"""What the worker commits for the events topic: one "delivered up to" offset per partition.

Faust commits from a list of every acknowledged offset per partition, guarded by the
offset it believes committed. On a new assignment that belief is overwritten by a seek
that read the broker before the worker's own commits landed, and faust-streaming 0.15.3
also believes commits that failed; from then on the list has a hole at its head and
Faust never commits the partition again (issue 16). Kafka Streams (its task commit)
and Quix Streams (its checkpoint) keep one number per partition instead. So does this
module, owned by the worker and read by the commit path in ``streams.compat``:

* an offset is marked only once every record before it, in this partition and
  consumer generation, was processed and its outputs delivered (the batch drain marks
  after delivery, in batch order), so a commit never runs ahead of delivery;
* marks belong to one generation: a commit made after a rebalance never carries an
  offset delivered before it, and a batch that spans a rebalance marks nothing;
* "committed" is what the broker confirmed in this generation; a failed commit leaves
  it unchanged, and the next commit tries again from the delivered mark.
"""

from __future__ import annotations

from collections.abc import Mapping

from faust.types import TP

__all__ = ["DeliveredOffsets"]


class DeliveredOffsets:
    """Per partition of one topic: delivered up to, and confirmed committed, in the current generation."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        #: The consumer generation the marks belong to (None: nothing delivered yet).
        self.generation: int | None = None
        self._delivered: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}
        #: Per partition, an offset the marks may not pass in this generation (records
        #: there were dropped unprocessed, so nothing from them on may be committed).
        self._ceiling: dict[TP, int] = {}

    def _adopt(self, generation: int) -> None:
        if generation != self.generation:
            self.generation = generation
            self._delivered.clear()
            self._committed.clear()
            self._ceiling.clear()

    def delivered(self, generation: int, upto: Mapping[TP, int]) -> None:
        """Every record before ``upto[tp]`` is processed and delivered (under ``generation``,
        the current one: the caller checks)."""
        self._adopt(generation)
        marks = self._delivered
        ceiling = self._ceiling
        for tp, offset in upto.items():
            if tp in ceiling:
                offset = min(offset, ceiling[tp])
            if offset > marks.get(tp, -1):
                marks[tp] = offset

    def dropped(self, generation: int, tp: TP, offset: int) -> None:
        """Records from ``offset`` on were dropped unprocessed: never commit past it this generation."""
        self._adopt(generation)
        self._ceiling[tp] = min(offset, self._ceiling.get(tp, offset))

    def to_commit(self, generation: int) -> dict[TP, int]:
        """Offsets delivered beyond what the broker confirmed; none for another generation."""
        if generation != self.generation:
            return {}
        committed = self._committed
        return {tp: offset for tp, offset in self._delivered.items() if offset > committed.get(tp, -1)}

    def confirmed(self, generation: int, offsets: Mapping[TP, int]) -> None:
        """The broker took these commits, made under ``generation``."""
        if generation != self.generation:
            return
        committed = self._committed
        for tp, offset in offsets.items():
            if tp.topic == self.topic and offset > committed.get(tp, -1):
                committed[tp] = offset

    def committed(self, tp: TP) -> int | None:
        """The offset the broker confirmed for ``tp`` in this generation, if any."""
        return self._committed.get(tp)

    def delivered_up_to(self, tp: TP) -> int | None:
        """The delivered mark of ``tp`` in this generation, if any."""
        return self._delivered.get(tp)
