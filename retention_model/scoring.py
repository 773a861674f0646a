"""What an operator asks about one user: features, profile, reasons and policy memory.

The batch path (features, model, policy for many users) is :mod:`retention_model.pipeline`.
"""

from __future__ import annotations

from typing import Any

from retention_model.features.derive import feature_dict
from retention_model.features.describe import profile, reasons
from retention_model.features.silence import next_check_ms
from retention_model.features.state import UserState
from retention_model.policy.policy import iso_ms

__all__ = ["describe_user"]


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
        "profile": profile(features, state).as_dict(),
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
