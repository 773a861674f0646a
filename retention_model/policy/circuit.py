"""A circuit breaker on interventions: a surge is a bug or an attack until a person says otherwise.

Cooldowns, caps and budgets bound what one user or one day can receive. They do
not notice when the whole stream suddenly asks for ten times the usual number of
coupons: a replayed log, a producer with a broken clock, a model gone wrong. The
breaker counts interventions (sent or held out) per wall-clock minute; when a
minute's count would pass ``surge_factor`` times the trailing average (never less
than ``min_per_minute``) or the absolute ``max_per_minute``, it opens. The
average spans the whole trailing window, minutes before the start counting as
zeros, so set ``min_per_minute`` above a normal busy minute. While open,
every intervention is refused (the decision is still made and logged, with rule
``circuit_open``); scores keep flowing. It closes after ``cooldown_s`` or when an
operator closes it.

The clock is processing time and is injected, so tests drive it. The breaker is
per worker and in memory: a restarted worker starts closed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CircuitBreaker", "CircuitConfig"]


@dataclass(frozen=True)
class CircuitConfig:
    """When the breaker opens, and for how long."""

    #: A minute may hold this many times the trailing per-minute average...
    surge_factor: float = 10.0
    #: ...but never fewer than this many (a quiet start must not trip it).
    min_per_minute: int = 300
    #: Absolute ceiling per minute (0: none).
    max_per_minute: int = 20_000
    #: Minutes the trailing average covers.
    trailing_minutes: int = 60
    #: Seconds an open breaker stays open before it closes by itself (0: only an operator closes it).
    cooldown_s: float = 900.0


class CircuitBreaker:
    """Admits or refuses each intervention; opens on a surge (see the module docstring)."""

    def __init__(self, config: CircuitConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._minute = -1
        self._count = 0
        #: Counts of the trailing full minutes (zeros included), oldest first.
        self._history: deque[int] = deque(maxlen=config.trailing_minutes)
        self.opened_at: float | None = None
        self.reason = ""
        self.trips = 0

    @property
    def is_open(self) -> bool:
        """Whether interventions are being refused now (an expired cooldown closes it)."""
        if self.opened_at is None:
            return False
        cooldown = self.config.cooldown_s
        if cooldown > 0 and self.clock() - self.opened_at >= cooldown:
            self.close()
            return False
        return True

    def limit(self) -> int:
        """Interventions the current minute may hold before the breaker opens."""
        self._roll()
        config = self.config
        # Over the whole trailing window, minutes before the worker started as zeros: a
        # storm's own first minutes must not raise the bar for the next ones.
        trailing = sum(self._history) / config.trailing_minutes
        allowed = max(config.min_per_minute, int(config.surge_factor * trailing))
        if config.max_per_minute > 0:
            allowed = min(allowed, config.max_per_minute)
        return allowed

    def admit(self) -> bool:
        """Count one intervention if the breaker allows it; open it if this one would pass the limit."""
        if self.is_open:
            return False
        limit = self.limit()
        if self._count + 1 > limit:
            self.open(f"interventions this minute would pass {limit} (trailing average x {self.config.surge_factor:g})")
            return False
        self._count += 1
        return True

    def open(self, reason: str) -> None:
        """Refuse interventions from now on, until the cooldown or :meth:`close`."""
        if self.opened_at is None:
            self.trips += 1
        self.opened_at = self.clock()
        self.reason = reason

    def close(self) -> None:
        """Admit interventions again (an operator's command, or the cooldown's end)."""
        self.opened_at = None
        self.reason = ""

    def status(self) -> dict[str, object]:
        """What an operator asks: open or not, since when, why, and the current limit."""
        is_open = self.is_open
        limit = self.limit()
        return {
            "open": is_open,
            "opened_at": self.opened_at,
            "reason": self.reason,
            "trips": self.trips,
            "this_minute": self._count,
            "limit_per_minute": limit,
        }

    def _roll(self) -> None:
        minute = int(self.clock() // 60)
        if minute == self._minute:
            return
        if self._minute >= 0:
            self._history.append(self._count)
            # Minutes with no intervention at all count as zeros in the average.
            for _ in range(min(minute - self._minute - 1, self.config.trailing_minutes)):
                self._history.append(0)
        self._minute = minute
        self._count = 0
