"""Decide stage: profile, reasons and policy for every scored user of one model call.

The policy's memory (cooldowns, caps) and the last score are recorded in each
state here, so the state written after this stage is the one the next event
finds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from retention_model.features.describe import FeatureRow, describe_many
from retention_model.features.state import UserState
from retention_model.policy.budget import BudgetLedger
from retention_model.policy.circuit import CircuitBreaker
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import SCORE_SCHEMA, Decision, Intervention, decide, iso_ms, tiers_for
from retention_model.policy.recommend import Recommender

__all__ = ["ScoredUser", "decide_many"]


class ScoredUser(NamedTuple):
    """The outcome of scoring one user at one event time (a named tuple: one is built per scored user)."""

    user_id: str
    risk: float
    tier: str
    now_ms: int
    reasons: list[str]
    profile: dict[str, Any]
    decisions: list[Decision]

    @property
    def interventions(self) -> list[Intervention]:
        """The interventions actually to send (not held out, not suppressed)."""
        return [d.intervention for d in self.decisions if d.action == "sent"]

    def score_record(self, model_version: str) -> dict[str, Any]:
        """Wire form for the scores topic (schema ``retention.score/v1``), before trigger and shadow."""
        return {
            "schema": SCORE_SCHEMA,
            "user_id": self.user_id,
            "risk": round(self.risk, 6),
            "tier": self.tier,
            "model_version": model_version,
            "event_time": iso_ms(self.now_ms),
            "reasons": self.reasons,
            "profile": self.profile,
        }


def decide_many(
    user_ids: Sequence[str],
    states: Sequence[UserState],
    now_ms: Sequence[int],
    features: np.ndarray,
    risks: np.ndarray,
    *,
    model_version: str,
    config: PolicyConfig,
    uplifts: np.ndarray | None = None,
    budgets: Sequence[BudgetLedger | None] | None = None,
    recommender: Recommender | None = None,
    wall_ms: int | None = None,
    breaker: CircuitBreaker | None = None,
) -> list[ScoredUser]:
    """Profile, reasons and policy per user; records the score in each state.

    ``uplifts`` (predicted effect of a coupon on P(retained), from the bundle's
    uplift model) feed expected-value targeting; ``budgets`` holds each user's
    budget slice (their partition's). ``wall_ms`` (processing time; None in a
    replay) and ``breaker`` hold the policy's limits in real time too (see
    :func:`~retention_model.policy.policy.decide`).
    """
    out: list[ScoredUser] = []
    profiles, all_reasons = describe_many(features, states)
    wide = np.asarray(risks, dtype=np.float64)  # exact: float32 widens without rounding
    tiers, risk_values = tiers_for(wide, config), wide.tolist()
    acting = {*config.coupon_tiers, *config.recommendation_tiers}
    for i, user_id in enumerate(user_ids):
        state, now, risk, tier = states[i], now_ms[i], risk_values[i], tiers[i]
        user_profile, user_reasons = profiles[i], all_reasons[i]
        decisions: list[Decision] = []
        # Most scored users are in a tier that wants nothing: the policy would return at once.
        if tier in acting:
            decisions = decide(
                user_id=user_id,
                risk=risk,
                state=state,
                now_ms=now,
                model_version=model_version,
                reasons=user_reasons,
                profile=user_profile,
                config=config,
                features=FeatureRow(features[i]),
                uplift=float(uplifts[i]) if uplifts is not None else None,
                budget=budgets[i] if budgets is not None else None,
                recommender=recommender,
                wall_ms=wall_ms,
                breaker=breaker,
            )
        state.last_risk = risk
        state.last_scored_ms = now
        out.append(ScoredUser(user_id, risk, tier, now, user_reasons, user_profile, decisions))
    return out
