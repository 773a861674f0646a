"""Coupon budget caps that hold across workers, restarts and rebalances.

Each source partition owns an equal slice of every cap (``share = 1/partitions``)
and keeps its spend in a changelog-backed table keyed by partition and period.
A partition is processed by one worker at a time and its spend moves with it on
a rebalance, so the sum over all workers can never pass a cap, with no
coordination between them. A live worker counts each coupon against its event
day (``day:``) and its real, processing-time day (``wall:``), and refuses one
that would pass the daily cap of either: a replayed or far-future event time
cannot open a fresh day's budget. The price is that a busy partition can run out of its
slice while a quiet one still has money left; with users hashed evenly over
partitions the slices fill at nearly the same rate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from retention_model.policy.config import PolicyConfig

__all__ = ["BudgetLedger", "Spend", "day_period", "wall_day_period"]

#: (money, count) spent in a period.
Spend = tuple[float, int]

TOTAL_PERIOD = "total"


def day_period(now_ms: int) -> str:
    """The budget period of an event time: its UTC calendar day."""
    return "day:" + datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def wall_day_period(wall_ms: int) -> str:
    """The budget period of a processing time: the real UTC calendar day."""
    return "wall:" + datetime.fromtimestamp(wall_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _periods(scope: str, now_ms: int, wall_ms: int | None) -> tuple[str, ...]:
    if scope != "daily":
        return (TOTAL_PERIOD,)
    if wall_ms is None:
        return (day_period(now_ms),)
    return (day_period(now_ms), wall_day_period(wall_ms))


class BudgetLedger:
    """Spend against the policy's caps for one slice of the budget.

    ``lookup`` reads a period's spend from durable storage the first time it is
    needed; :attr:`dirty` lists the periods to write back after a batch.
    """

    def __init__(
        self,
        config: PolicyConfig,
        share: float = 1.0,
        lookup: Callable[[str], Spend | None] | None = None,
    ) -> None:
        if not 0.0 < share <= 1.0:
            msg = f"budget share must be in (0, 1], got {share}"
            raise ValueError(msg)
        self.config = config
        self.share = share
        self.lookup = lookup
        self.spent: dict[str, Spend] = {}
        self.dirty: set[str] = set()

    def _get(self, period: str) -> Spend:
        if period not in self.spent:
            found = self.lookup(period) if self.lookup is not None else None
            self.spent[period] = found if found is not None else (0.0, 0)
        return self.spent[period]

    def _caps(self) -> list[tuple[str, str, float, str]]:
        c = self.config
        return [
            ("daily", "money", c.budget_daily_money * self.share, f"{c.currency}"),
            ("daily", "count", c.budget_daily_count * self.share, "coupons"),
            ("total", "money", c.budget_total_money * self.share, f"{c.currency}"),
            ("total", "count", c.budget_total_count * self.share, "coupons"),
        ]

    def refusal(self, now_ms: int, amount: float, wall_ms: int | None = None) -> str | None:
        """Why one more coupon of ``amount`` would break a cap, or None if it fits.

        ``wall_ms`` (processing time) adds the real day's cap to the event day's.
        """
        for scope, unit, cap, label in self._caps():
            if cap <= 0:
                continue
            for period in _periods(scope, now_ms, wall_ms):
                money, count = self._get(period)
                used, extra = (money, amount) if unit == "money" else (count, 1)
                if used + extra > cap + 1e-9:
                    day = " (real day)" if period.startswith("wall:") else ""
                    return f"budget: {scope}{day} {unit} cap reached ({used:g} of {cap:g} {label} in this slice)"
        return None

    def spend(self, now_ms: int, amount: float, wall_ms: int | None = None) -> None:
        """Record one coupon of ``amount`` in the day's (event and real) and the total spend."""
        for period in (*_periods("daily", now_ms, wall_ms), TOTAL_PERIOD):
            money, count = self._get(period)
            self.spent[period] = (money + amount, count + 1)
            self.dirty.add(period)

    def remaining(self, now_ms: int, wall_ms: int | None = None) -> dict[str, float]:
        """Money and count left today and in total in this slice (inf where uncapped)."""
        out: dict[str, float] = {}
        for scope, unit, cap, _ in self._caps():
            used = 0.0
            for period in _periods(scope, now_ms, wall_ms):
                money, count = self._get(period)
                used = max(used, money if unit == "money" else count)
            out[f"{scope}_{unit}"] = max(0.0, cap - used) if cap > 0 else float("inf")
        return out
