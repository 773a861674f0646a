"""What the pipeline keeps per source partition between batches: its stores, watermark,
silence-timer index, budget slice and outcome sample.

All of it is dropped after a rebalance (another worker may have moved the watermark,
filed timers or spent budget meanwhile) and rebuilt from the stores on next use.
"""

from __future__ import annotations

import orjson

from retention_model.pipeline.outcomes import OutcomeSample
from retention_model.pipeline.state_cache import StateCache
from retention_model.pipeline.stores import PartitionStores
from retention_model.pipeline.timers import SilenceTimers
from retention_model.policy.budget import BudgetLedger, Spend
from retention_model.policy.config import PolicyConfig

__all__ = ["PartitionContext"]


class PartitionContext:
    """One source partition as the pipeline sees it.

    Budget slices are stored as ``b"<partition>:<period>"`` -> JSON ``[money, count]``:
    each partition owns ``1/partitions`` of every cap (see
    :mod:`retention_model.policy.budget`).
    """

    __slots__ = ("_ledger", "cache", "outcomes", "partition", "stores", "timers", "watermark")

    def __init__(
        self, partition: int, stores: PartitionStores, cache: StateCache | None = None, outcome_sample: int = 0
    ) -> None:
        self.partition = partition
        self.stores = stores
        #: Decoded states between batches, shared by every partition of the pipeline.
        self.cache = cache
        #: Sampled scores waiting for their outcome (None: outcomes off).
        self.outcomes = OutcomeSample(outcome_sample) if outcome_sample else None
        self.timers = SilenceTimers(stores.timers, partition)
        #: Event time (ms) below which the partition's events are late; 0 before any.
        self.watermark = 0
        self._ledger: BudgetLedger | None = None

    @property
    def ledger(self) -> BudgetLedger | None:
        """The budget slice, if it was needed since the last rebalance."""
        return self._ledger

    def budget(self, policy: PolicyConfig, partitions: int) -> BudgetLedger:
        """The partition's budget slice; each period's spend is read from the store when first needed."""
        if self._ledger is None:
            store = self.stores.budgets
            prefix = f"{self.partition}:"

            def lookup(period: str) -> Spend | None:
                (raw,) = store.get_many([(prefix + period).encode()])
                if raw is None:
                    return None
                money, count = orjson.loads(raw)
                return float(money), int(count)

            self._ledger = BudgetLedger(policy, share=1.0 / partitions, lookup=lookup)
        return self._ledger

    def save_budget(self) -> None:
        """Write the periods spent from since the last save."""
        ledger = self._ledger
        if ledger is None or not ledger.dirty:
            return
        prefix = f"{self.partition}:"
        self.stores.budgets.put_many(
            [((prefix + period).encode(), orjson.dumps(list(ledger.spent[period]))) for period in sorted(ledger.dirty)]
        )
        ledger.dirty.clear()
