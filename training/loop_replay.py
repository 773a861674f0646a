"""The closed loop in process: a simulated log through the batch pipeline, the responder answering.

No broker: the log goes through :class:`~retention_model.pipeline.BatchPipeline` in
batches, keyed and partitioned as a producer would; each batch's interventions go
to the :class:`~training.closed_loop.Responder`, whose events join the log at their
event time. Tests and measurements (live quality against ``evaluate model``, the
effect report against the true uplift) read what came out.
"""

from __future__ import annotations

import asyncio
import heapq
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from retention_model.events import Event, encode_event
from retention_model.pipeline import BatchPipeline, ModelCall, Record
from training.closed_loop import LoopFeed, Responder

__all__ = ["LoopRun", "run_closed_loop"]


@dataclass
class LoopRun:
    """What the worker published, and every event it saw (generated and responses, in feed order)."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def run_closed_loop(
    pipeline: BatchPipeline,
    model: ModelCall,
    per_user: Sequence[Sequence[Event]],
    responder: Responder,
    *,
    partitions: int,
    batch_size: int = 2000,
) -> LoopRun:
    """Feed the users' events (each list in time order) through ``pipeline``, answering its interventions."""
    feed = LoopFeed(heapq.merge(*per_user, key=lambda e: e.ts_ms))
    offsets = Counter[int]()
    run = LoopRun()
    batch: dict[int, list[Record]] = {}

    def flush() -> None:
        result = asyncio.run(pipeline.process(batch, model))
        run.decisions.extend(orjson.loads(v) for _, v in result.decisions)
        run.outcomes.extend(orjson.loads(v) for _, v in result.outcomes)
        for records in result.interventions.values():
            for _, value in records:
                feed.add(responder.respond(orjson.loads(value)))

    for n, event in enumerate(feed, 1):
        key = event.user_id.encode()
        partition = zlib.crc32(key) % partitions
        batch.setdefault(partition, []).append(Record(key, encode_event(event), offsets[partition], event.ts_ms))
        offsets[partition] += 1
        if n % batch_size == 0:
            flush()
            batch = {}
    if batch:
        flush()
    run.events = feed.emitted
    return run
