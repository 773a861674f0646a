"""The worker's batch path as pure stages: raw records in, complete outputs out, no Kafka.

Stages, each a module with typed inputs and outputs (:mod:`.records`):
:mod:`.decode` (records -> events, rejects, watermark), :mod:`.fold` (events ->
states), :mod:`.timers` (silent users due), ``features.derive.feature_matrix``
(states -> features), the model call (handed in), :mod:`.decide` (policy) and
:mod:`.outputs` (records, state blobs, timers). :mod:`.batch` runs them per
micro-batch over the per-partition stores of :mod:`.stores`.
"""

from __future__ import annotations

from retention_model.pipeline.batch import MAX_SILENCE_ROUNDS, BatchPipeline, PipelineConfig
from retention_model.pipeline.decide import ScoredUser, decide_many
from retention_model.pipeline.decode import DecodeLimits, ahead_of_time, decode_records
from retention_model.pipeline.fold import Folded, fold_events
from retention_model.pipeline.records import (
    BatchCounts,
    BatchResult,
    Candidates,
    Decoded,
    Infer,
    Inference,
    ModelCall,
    RawRecord,
    Record,
    Reject,
)
from retention_model.pipeline.stores import KeyValueStore, MemoryStore, MemoryStores, PartitionStores
from retention_model.pipeline.timers import SilenceTimers, collect_due

__all__ = [
    "MAX_SILENCE_ROUNDS",
    "BatchCounts",
    "BatchPipeline",
    "BatchResult",
    "Candidates",
    "DecodeLimits",
    "Decoded",
    "Folded",
    "Infer",
    "Inference",
    "KeyValueStore",
    "MemoryStore",
    "MemoryStores",
    "ModelCall",
    "PartitionStores",
    "PipelineConfig",
    "RawRecord",
    "Record",
    "Reject",
    "ScoredUser",
    "SilenceTimers",
    "ahead_of_time",
    "collect_due",
    "decide_many",
    "decode_records",
    "fold_events",
]
