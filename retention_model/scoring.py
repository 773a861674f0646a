"""One scoring pass over a micro-batch of users: features, model, profile, policy.

Split in three so a caller can run the model call off its event loop:
:func:`build_features` and :func:`finish_batch` are plain Python; the model call
in between is the one slow, GIL-releasing step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.derive import feature_matrix, profile, reasons
from retention_model.features.state import UserState
from retention_model.policy.policy import SCORE_SCHEMA, Intervention, PolicyConfig, decide, iso_ms, tier_for

__all__ = ["ScoredUser", "build_features", "finish_batch"]


@dataclass(frozen=True)
class ScoredUser:
    """The outcome of scoring one user at one event time."""

    user_id: str
    risk: float
    tier: str
    now_ms: int
    reasons: list[str]
    profile: dict[str, Any]
    interventions: list[Intervention]

    def score_record(self, model_version: str) -> dict[str, Any]:
        """Wire form for the scores topic (schema ``retention.score/v1``)."""
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


def build_features(states: list[UserState], now_ms: list[int]) -> np.ndarray:
    """Model input for a batch (thin alias kept for symmetry with finish_batch)."""
    return feature_matrix(states, now_ms)


def finish_batch(
    user_ids: list[str],
    states: list[UserState],
    now_ms: list[int],
    features: np.ndarray,
    risks: np.ndarray,
    *,
    model_version: str,
    config: PolicyConfig,
) -> list[ScoredUser]:
    """Profile, reasons and policy per user; records the score in each state."""
    out: list[ScoredUser] = []
    for i, user_id in enumerate(user_ids):
        state, now, risk = states[i], now_ms[i], float(risks[i])
        named = dict(zip(FEATURE_NAMES, features[i].tolist()))
        user_profile = profile(named, state, now).as_dict()
        user_reasons = reasons(named)
        interventions = decide(
            user_id=user_id,
            risk=risk,
            state=state,
            now_ms=now,
            model_version=model_version,
            reasons=user_reasons,
            profile=user_profile,
            config=config,
        )
        state.last_risk = risk
        state.last_scored_ms = now
        out.append(ScoredUser(user_id, risk, tier_for(risk, config), now, user_reasons, user_profile, interventions))
    return out
