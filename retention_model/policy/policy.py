"""Retention policy: from a churn score to interventions, pure and deterministic.

Risk tiers, one action per tier, a per-user cooldown per kind kept in the user's
state (so it survives restarts), a salted-hash holdout group that gets decisions but
no interventions (to measure the effect), and a deterministic id per decision so
subscribers can de-duplicate re-sends.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from retention_model.features.state import DAY_MS, UserState

__all__ = [
    "DECISION_SCHEMA",
    "INTERVENTION_SCHEMA",
    "SCORE_SCHEMA",
    "Decision",
    "Intervention",
    "PolicyConfig",
    "decide",
    "in_holdout",
    "iso_ms",
    "tier_for",
]

INTERVENTION_SCHEMA: Final = "retention.intervention/v1"
SCORE_SCHEMA: Final = "retention.score/v1"
DECISION_SCHEMA: Final = "retention.decision/v1"

Kind = Literal["coupon", "recommendation"]


@dataclass(frozen=True)
class PolicyConfig:
    """What the policy does per risk tier.

    Tiers: ``high`` at ``risk >= high_risk``, ``medium`` at ``risk >= medium_risk``,
    else ``low``. High-risk buyers get a coupon (and a recommendation); medium-risk
    users, and high-risk users who never bought, get a recommendation.
    """

    medium_risk: float = 0.5
    high_risk: float = 0.75
    coupon_value: float = 10.0
    coupon_min_spend: float = 30.0
    coupon_expiry_days: int = 14
    coupon_cooldown_days: float = 14.0
    recommendation_cooldown_days: float = 3.0
    currency: str = "EUR"
    #: Share of users in the control group, who get decisions but no interventions.
    holdout_share: float = 0.10
    holdout_salt: str = "retention-holdout-v1"

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_share < 1.0:
            msg = f"holdout_share must be in [0, 1), got {self.holdout_share}"
            raise ValueError(msg)
        if not 0.0 <= self.medium_risk <= self.high_risk <= 1.0:
            msg = f"need 0 <= medium_risk <= high_risk <= 1, got {self.medium_risk} and {self.high_risk}"
            raise ValueError(msg)


def tier_for(risk: float, config: PolicyConfig) -> str:
    """Risk tier name for a calibrated churn probability."""
    if risk >= config.high_risk:
        return "high"
    if risk >= config.medium_risk:
        return "medium"
    return "low"


def iso_ms(ts_ms: int) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2024-01-01T00:00:00.000Z``."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Intervention:
    """One intervention to publish; :meth:`as_dict` is its wire form."""

    intervention_id: str
    kind: Kind
    user_id: str
    tier: str
    risk: float
    model_version: str
    event_time_ms: int
    reasons: tuple[str, ...]
    profile: dict[str, Any]
    payload: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON body (schema ``retention.intervention/v1``)."""
        body: dict[str, Any] = {
            "schema": INTERVENTION_SCHEMA,
            "intervention_id": self.intervention_id,
            "kind": self.kind,
            "user_id": self.user_id,
            "tier": self.tier,
            "risk": round(self.risk, 6),
            "model_version": self.model_version,
            "event_time": iso_ms(self.event_time_ms),
            "reasons": list(self.reasons),
            "profile": self.profile,
        }
        body["offer" if self.kind == "coupon" else "recommendation"] = self.payload
        return body


def _intervention_id(user_id: str, kind: str, decision_offset: int, event_time_ms: int) -> str:
    key = f"{user_id}\x1f{kind}\x1f{decision_offset}\x1f{event_time_ms}".encode()
    return hashlib.sha256(key).hexdigest()[:24]


def in_holdout(user_id: str, config: PolicyConfig) -> bool:
    """Whether a user is in the control group: a salted hash, stable across processes and runs."""
    if config.holdout_share <= 0.0:
        return False
    digest = hashlib.sha256(f"{config.holdout_salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < config.holdout_share


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one kind of intervention, and why.

    ``action`` is ``sent``, ``held_out`` (control group: recorded, not sent) or
    ``suppressed`` (a cooldown held). ``intervention`` is what was or would have
    been sent.
    """

    action: Literal["sent", "held_out", "suppressed"]
    reason: str
    intervention: Intervention

    def as_dict(self) -> dict[str, Any]:
        """JSON body (schema ``retention.decision/v1``)."""
        body = self.intervention.as_dict()
        return {
            "schema": DECISION_SCHEMA,
            "decision_id": body["intervention_id"],
            "user_id": body["user_id"],
            "kind": body["kind"],
            "action": self.action,
            "reason": self.reason,
            "tier": body["tier"],
            "risk": body["risk"],
            "model_version": body["model_version"],
            "event_time": body["event_time"],
            "intervention": body,
        }


def decide(
    *,
    user_id: str,
    risk: float,
    state: UserState,
    now_ms: int,
    model_version: str,
    reasons: list[str],
    profile: dict[str, Any],
    config: PolicyConfig,
) -> list[Decision]:
    """Decisions for one scored user; records sends (and would-be sends) in ``state``.

    ``now_ms`` is event time. A low tier decides nothing. For each kind the tier
    calls for: a cooldown still running suppresses it; otherwise a control-group
    user is held out (and their cooldown starts as if it had been sent, so both
    groups keep the same cadence); everyone else is sent the intervention.
    """
    tier = tier_for(risk, config)
    if tier == "low":
        return []
    has_purchased = state.first_purchase_ms != 0
    holdout = in_holdout(user_id, config)

    def make(kind: Kind, payload: dict[str, Any]) -> Intervention:
        return Intervention(
            intervention_id=_intervention_id(user_id, kind, state.offset, now_ms),
            kind=kind,
            user_id=user_id,
            tier=tier,
            risk=risk,
            model_version=model_version,
            event_time_ms=now_ms,
            reasons=tuple(reasons),
            profile=profile,
            payload=payload,
        )

    wanted: list[tuple[Kind, int, float, dict[str, Any]]] = []
    if tier == "high" and has_purchased:
        offer = {
            "coupon_value": config.coupon_value,
            "currency": config.currency,
            "min_spend": config.coupon_min_spend,
            "expires_at": iso_ms(now_ms + config.coupon_expiry_days * DAY_MS),
        }
        wanted.append(("coupon", state.last_coupon_ms, config.coupon_cooldown_days, offer))
    categories = list(profile.get("top_categories", []))
    recommendation = {
        "categories": [{"category": c, "rank": i + 1} for i, c in enumerate(categories)],
        "strategy": "top_categories",
    }
    wanted.append(("recommendation", state.last_reco_ms, config.recommendation_cooldown_days, recommendation))

    out: list[Decision] = []
    for kind, last_ms, cooldown_days, payload in wanted:
        intervention = make(kind, payload)
        if last_ms and now_ms - last_ms < cooldown_days * DAY_MS:
            ago = (now_ms - last_ms) / DAY_MS
            out.append(
                Decision(
                    "suppressed",
                    f"cooldown: last {kind} {ago:.1f} days ago, cooldown {cooldown_days:g} days",
                    intervention,
                )
            )
            continue
        if kind == "coupon":
            state.last_coupon_ms = now_ms
        else:
            state.last_reco_ms = now_ms
        if holdout:
            out.append(Decision("held_out", f"control group ({config.holdout_share:.0%} holdout)", intervention))
        else:
            state.interventions_sent += 1
            out.append(Decision("sent", f"{tier} risk", intervention))
    return out
