"""Coupon budget gauges: what this worker's slices have spent, beside their caps.

The spend itself is kept and written by the pipeline (one slice per source
partition, in the ``policy-budget`` table); this module only exports it.
"""

from __future__ import annotations

from collections.abc import Mapping

from retention_model.policy.budget import BudgetLedger, day_period, wall_day_period
from retention_model.policy.config import PolicyConfig
from streams.metrics import Metrics

__all__ = ["report_budgets"]


def report_budgets(
    metrics: Metrics,
    ledgers: Mapping[int, BudgetLedger],
    policy: PolicyConfig,
    partitions: int,
    now_ms: int,
    wall_ms: int | None,
) -> None:
    """Set spent and cap, daily and total, money and count, over the slices in use.

    "Daily" is the wall-clock day for a live worker and the event day of ``now_ms``
    in a replay (``wall_ms`` None); the caps shown are the slices' share of the
    policy's.
    """
    today = day_period(now_ms) if wall_ms is None else wall_day_period(wall_ms)
    share = len(ledgers) / partitions
    for scope, period in (("daily", today), ("total", "total")):
        spent = [ledger.spent.get(period, (0.0, 0)) for ledger in ledgers.values()]
        for unit, index, cap in (
            ("money", 0, policy.budget_daily_money if scope == "daily" else policy.budget_total_money),
            ("count", 1, policy.budget_daily_count if scope == "daily" else policy.budget_total_count),
        ):
            metrics.budget_spent.labels(scope, unit).set(sum(s[index] for s in spent))
            metrics.budget_cap.labels(scope, unit).set(cap * share)
