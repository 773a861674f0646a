"""Output stage: everything one model call writes, built complete where it is built.

Score records carry their trigger and, with a shadow model, the shadow's risk and
tier; decisions and interventions are in their wire forms; each state is its
blob; each user's next silence check is filed under its hour.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from retention_model.features.state import HOUR_MS, UserState, dump_state
from retention_model.pipeline.decide import ScoredUser
from retention_model.pipeline.records import BatchResult, Candidates, Inference
from retention_model.pipeline.state_cache import StateCache
from retention_model.pipeline.timers import timer_due_ms
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import tier_for

__all__ = ["add_records", "next_checks", "state_blobs"]


def state_blobs(candidates: Candidates, cache: StateCache | None = None) -> dict[int, list[tuple[bytes, bytes | None]]]:
    """Partition -> (user key, state blob) for every scored user, partitions ascending.

    ``cache`` keeps each state beside its blob, for the user's next batch.
    """
    out: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in sorted(set(candidates.partitions))}
    kept: list[tuple[bytes, bytes, UserState]] = []
    for key, state, partition in zip(candidates.keys, candidates.states, candidates.partitions):
        blob = dump_state(state)
        out[partition].append((key, blob))
        kept.append((key, blob, state))
    if cache is not None:
        cache.keep(kept)
    return out


def next_checks(candidates: Candidates, ttl_ms: int | None = None) -> dict[int, dict[int, list[bytes]]]:
    """Partition -> event-time hour -> users whose next silence check (or, with ``ttl_ms``, expiry) falls in it."""
    out: dict[int, dict[int, list[bytes]]] = {}
    for key, state, partition in zip(candidates.keys, candidates.states, candidates.partitions):
        due = timer_due_ms(state, ttl_ms)
        if due is not None:
            out.setdefault(partition, {}).setdefault(due // HOUR_MS, []).append(key)
    return out


def add_records(
    result: BatchResult,
    candidates: Candidates,
    scored: Sequence[ScoredUser],
    inference: Inference,
    *,
    model_version: str,
    shadow_version: str | None,
    config: PolicyConfig,
) -> None:
    """Append one model call's scores, decisions and interventions to ``result``, and count them."""
    counts = result.counts
    scores, decisions, interventions = result.scores, result.decisions, result.interventions
    tiers, decided, sent = counts.tiers, counts.decided, counts.interventions
    shadow_risks = inference.shadow_risks
    for index, (key, user, trigger) in enumerate(zip(candidates.keys, scored, candidates.triggers)):
        record = user.score_record(model_version)
        record["trigger"] = trigger
        if shadow_risks is not None:
            shadow_risk = float(shadow_risks[index])
            shadow_tier = tier_for(shadow_risk, config)
            record["shadow"] = {"model_version": shadow_version, "risk": round(shadow_risk, 6), "tier": shadow_tier}
            counts.shadow_differences.append(shadow_risk - user.risk)
            counts.shadow_agreement["yes" if shadow_tier == user.tier else "no"] += 1
        scores.append((key, orjson.dumps(record)))
        tiers[user.tier] += 1
        for decision in user.decisions:
            intervention = decision.intervention
            decisions.append((key, orjson.dumps(decision.as_dict())))
            decided[intervention.kind, decision.action, decision.rule] += 1
            if decision.action == "sent":
                interventions[intervention.kind].append((key, orjson.dumps(intervention.as_dict())))
                sent[intervention.kind, intervention.tier] += 1
    counts.silence_rescored += candidates.triggers.count("silence")
    counts.seen_ms.extend(seen for seen in candidates.seen_ms if seen)
