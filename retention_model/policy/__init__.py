"""Retention policy: who gets which intervention, within which limits."""

from __future__ import annotations

from retention_model.policy.budget import BudgetLedger
from retention_model.policy.config import PolicyConfig, PolicyFileError, load_policy
from retention_model.policy.policy import Decision, Intervention, decide, in_holdout, tier_for
from retention_model.policy.recommend import Recommender
from retention_model.policy.recommend_learn import learn_recommendations

__all__ = [
    "BudgetLedger",
    "Decision",
    "Intervention",
    "PolicyConfig",
    "PolicyFileError",
    "Recommender",
    "decide",
    "in_holdout",
    "learn_recommendations",
    "load_policy",
    "tier_for",
]
