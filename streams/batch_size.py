"""How big a micro-batch may grow, and how long it may wait, against a latency target.

Bigger batches amortise the fixed cost of a model call and of a produce flush, but
every event in a batch waits for the whole batch. Like Triton's dynamic batcher the
worker dispatches a batch when it is full or when its oldest event has waited the
queue delay, whichever comes first; unlike a fixed size, the cap here follows the
measured cost per event, so a batch never takes longer to process than its share
of the target. The queue delay and the processing share together stay inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AdaptiveBatchSize"]


@dataclass
class AdaptiveBatchSize:
    """Grows the batch cap while full batches finish well inside their budget; shrinks it when one overruns.

    ``latency_target_s`` is what one event may spend from arrival to decision:
    a quarter of it (at most ``max_wait_s``) is the queue delay, half of it is
    the processing budget of one batch, and the rest is headroom for the batch
    ahead of it still running. Processing a batch costs a fixed part (a model
    call, a produce flush) plus a part per event, so cost per event falls as
    batches grow: the cap is searched upward to the largest size that fits the
    budget, rather than derived from an average that the fixed part inflates.
    """

    latency_target_s: float
    max_size: int
    max_wait_s: float
    min_size: int = 64
    grow: float = 1.25
    shrink: float = 0.7
    #: Events a batch may gather now.
    size: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.latency_target_s <= 0:
            raise ValueError(f"latency_target_s must be positive, got {self.latency_target_s}")
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {self.max_size}")
        if not (self.grow > 1 and 0 < self.shrink < 1):
            raise ValueError("grow must exceed 1 and shrink must lie in (0, 1)")
        self.min_size = min(self.min_size, self.max_size)
        self.size = self.max_size  # start at the cap: the first overrun brings it down

    @property
    def queue_delay_s(self) -> float:
        """Longest the oldest event of a forming batch waits for company."""
        return min(self.max_wait_s, self.latency_target_s / 4)

    @property
    def budget_s(self) -> float:
        """Longest one batch may take to process."""
        return self.latency_target_s / 2

    def observe(self, events: int, seconds: float) -> None:
        """Adjust the cap after a batch of ``events`` took ``seconds`` to process."""
        if events <= 0 or seconds < 0:
            return
        if seconds > self.budget_s:
            # Too slow: below what this batch held, whether or not it was full.
            self.size = max(self.min_size, int(min(self.size, events) * self.shrink))
        elif events >= self.size and seconds < self.budget_s * self.shrink:
            # A full batch with room to spare: larger ones cost less per event.
            self.size = min(self.max_size, max(self.size + 1, int(self.size * self.grow)))
