"""One scoring pass over a micro-batch of users: features, model, profile, policy.

Split in three so a caller can run the model call off its event loop:
:func:`build_features` and :func:`finish_batch` are plain Python; the model call
in between is the one slow, GIL-releasing step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from retention_model.features.derive import describing_rows, feature_dict, feature_matrix, profile, reasons
from retention_model.features.silence import next_check_ms
from retention_model.features.state import UserState
from retention_model.policy.budget import BudgetLedger
from retention_model.policy.circuit import CircuitBreaker
from retention_model.policy.config import PolicyConfig
from retention_model.policy.policy import SCORE_SCHEMA, Decision, Intervention, decide, iso_ms, tier_for
from retention_model.policy.recommend import Recommender

__all__ = ["ScoredUser", "build_features", "describe_user", "finish_batch"]


@dataclass(frozen=True)
class ScoredUser:
    """The outcome of scoring one user at one event time."""

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
    uplifts: np.ndarray | None = None,
    budgets: list[BudgetLedger | None] | None = None,
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
    rows = describing_rows(features)
    for i, user_id in enumerate(user_ids):
        state, now, risk = states[i], now_ms[i], float(risks[i])
        named = rows[i]
        user_profile = profile(named, state, now).as_dict()
        user_reasons = reasons(named)
        decisions = decide(
            user_id=user_id,
            risk=risk,
            state=state,
            now_ms=now,
            model_version=model_version,
            reasons=user_reasons,
            profile=user_profile,
            config=config,
            features=named,
            uplift=float(uplifts[i]) if uplifts is not None else None,
            budget=budgets[i] if budgets is not None else None,
            recommender=recommender,
            wall_ms=wall_ms,
            breaker=breaker,
        )
        state.last_risk = risk
        state.last_scored_ms = now
        out.append(ScoredUser(user_id, risk, tier_for(risk, config), now, user_reasons, user_profile, decisions))
    return out


def describe_user(user_id: str, state: UserState, as_of_ms: int | None = None) -> dict[str, Any]:
    """Everything an operator asks about one user, as JSON-ready data.

    Features are computed as of ``as_of_ms`` (event time), by default the later of
    the user's last event and last score.
    """
    as_of = as_of_ms if as_of_ms is not None else max(state.last_seen_ms, state.last_scored_ms)
    # Rounded for people: a decayed count of 0.9999999999999999 reads as 1.
    features = {name: round(value, 6) for name, value in feature_dict(state, as_of).items()}
    next_check = next_check_ms(state)

    def when(ts_ms: int) -> str | None:
        return iso_ms(ts_ms) if ts_ms else None

    return {
        "user_id": user_id,
        "as_of": iso_ms(as_of),
        "last_score": None
        if state.last_risk < 0
        else {"risk": round(state.last_risk, 6), "event_time": when(state.last_scored_ms)},
        "reasons": reasons(features),
        "profile": profile(features, state, as_of).as_dict(),
        "features": features,
        "first_seen": when(state.first_seen_ms),
        "last_seen": when(state.last_seen_ms),
        "last_purchase": when(state.last_purchase_ms),
        "next_silence_check": when(next_check) if next_check is not None else None,
        "last_coupon": when(state.last_coupon_ms),
        "last_recommendation": when(state.last_reco_ms),
        "interventions_sent": state.interventions_sent,
        "opted_out": state.opted_out,
        "coupon_redeemed": state.coupon_redeemed,
        "source_offset": state.offset,
    }
