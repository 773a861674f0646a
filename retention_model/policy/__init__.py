"""Retention policy: who gets which intervention."""

from __future__ import annotations

from retention_model.policy.policy import Intervention, PolicyConfig, decide, tier_for

__all__ = ["Intervention", "PolicyConfig", "decide", "tier_for"]
