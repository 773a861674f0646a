"""The outcome join's place in a batch: snapshots before the fold and at the watermark, one model call.

The sample's rules are in :mod:`.outcomes`; here its states are read from the
partition store (decoded afresh, so the live states and the state cache are never
touched) and the snapshots of all partitions are scored in one model call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retention_model.events import Event
from retention_model.features.derive import feature_matrix
from retention_model.features.state import UserState, load_state
from retention_model.pipeline.outcomes import PendingScore, Snapshot
from retention_model.pipeline.partition import PartitionContext
from retention_model.pipeline.records import ModelCall
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import in_holdout, tier_for

__all__ = ["score_snapshots", "snapshots_at_watermark", "snapshots_before_fold"]


def snapshots_before_fold(
    context: PartitionContext, events: Mapping[bytes, list[tuple[Event, int]]], model: ModelCall
) -> list[Snapshot]:
    """Members whose events in this batch pass a cutoff, as of that cutoff (call before the fold)."""
    sample = context.outcomes
    if sample is None:
        return []
    keys = sample.passing(events)
    if not keys:
        return []
    return sample.crossing(events, _fresh_states(context, keys), model.horizon_ms, model.max_silence_ms)


def snapshots_at_watermark(context: PartitionContext, model: ModelCall) -> list[Snapshot]:
    """Members not yet snapshotted at the cutoffs the watermark passed (call once the batch's states are written)."""
    sample = context.outcomes
    if sample is None:
        return []
    keys = sample.due_members(context.watermark)
    if not keys:
        return []
    return sample.sweep(_fresh_states(context, keys), context.watermark, model.horizon_ms, model.max_silence_ms)


def _fresh_states(context: PartitionContext, keys: list[bytes]) -> dict[bytes, UserState | None]:
    """The stored states of ``keys``, decoded anew (never the live ones, never the cache's)."""
    raws = context.stores.states.get_many(keys)
    return {key: None if raw is None else load_state(raw) for key, raw in zip(keys, raws)}


async def score_snapshots(
    snapshots: list[tuple[PartitionContext, Snapshot]], model: ModelCall, policy: PolicyConfig
) -> None:
    """Score every snapshot as of its cutoff in one model call and file them in their samples; the shadow
    model's scores of the same snapshots are filed beside, flagged, so its live quality is known before it ships."""
    if not snapshots:
        return
    features = feature_matrix([s.state for _, s in snapshots], [s.cutoff_ms for _, s in snapshots])
    inference = await model.infer(features)
    scored: list[tuple[str, Any, bool]] = [(model.version, inference.risks, False)]
    if model.shadow_version is not None and inference.shadow_risks is not None:
        scored.append((model.shadow_version, inference.shadow_risks, True))
    holdouts = [in_holdout(snap.user_id, policy) for _, snap in snapshots]
    for version, risks, shadow in scored:
        for (context, snap), risk, holdout in zip(snapshots, risks, holdouts):
            sample = context.outcomes
            if sample is None or snap.key not in sample.members:
                continue  # left the sample meanwhile
            value = float(risk)
            sample.add(
                snap.key,
                PendingScore(
                    snap.user_id,
                    snap.cutoff_ms,
                    model.horizon_ms,
                    value,
                    tier_for(value, policy),
                    version,
                    holdout,
                    "cutoff",
                    snap.purchased_ms,
                    shadow,
                ),
            )
