"""Live effect: retention of the sampled users, eligible against the randomised holdout.

The outcome sample takes users by a hash of their key, whatever the policy did,
and the policy's holdout is another hash of the user id, so within the sample the
holdout is a randomised control. Retention (a purchase within the horizon after a
cutoff) of eligible users minus that of holdout users is the **intent-to-treat**
effect of the policy as a whole: every eligible user counts, acted on or not, so it
is diluted by the many the policy never touched. It cannot say which intervention
worked (``retention report effect`` can, per decision); it can say, live and
without an offline job, that the policy is not making things worse.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from retention_model.monitoring.quality import EventTimeWindow

__all__ = ["Z_95", "EffectWindow", "LiveEffect", "uplift_interval"]

#: Two-sided 95% normal quantile.
Z_95 = 1.959964


def uplift_interval(retained_t: int, n_t: int, retained_c: int, n_c: int) -> tuple[float, float, float] | None:
    """Difference of retention shares (treated - control) with its 95% normal-approximation interval.

    None when either group is empty.

    Examples:
        >>> [round(x, 3) for x in uplift_interval(60, 100, 50, 100)]
        [0.1, -0.037, 0.237]
    """
    if n_t <= 0 or n_c <= 0:
        return None
    p_t, p_c = retained_t / n_t, retained_c / n_c
    uplift = p_t - p_c
    half = Z_95 * math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    return uplift, uplift - half, uplift + half


@dataclass(frozen=True, slots=True)
class LiveEffect:
    """Eligible against holdout over a window: n and retained share per group, the uplift and its 95% interval."""

    n_eligible: int
    n_holdout: int
    retained_eligible: float | None
    retained_holdout: float | None
    uplift: float | None
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain figures (for JSON)."""
        return asdict(self)


class EffectWindow(EventTimeWindow):
    """Resolved outcomes of every model version over the last ``span_ms`` of event time, by group;
    at most ``max_outcomes`` (oldest go first)."""

    def __init__(self, span_ms: int, max_outcomes: int = 200_000) -> None:
        super().__init__(span_ms, max_outcomes)

    def add(self, resolved_ms: int, holdout: bool, churned: bool) -> None:
        """One outcome; outcomes older than the window's start fall out."""
        self._append((resolved_ms, holdout, churned))

    def figures(self) -> LiveEffect:
        """The window's figures now."""
        n = {True: 0, False: 0}
        retained = {True: 0, False: 0}
        for _, holdout, churned in self._rows:
            n[holdout] += 1
            retained[holdout] += not churned
        interval = uplift_interval(retained[False], n[False], retained[True], n[True])
        uplift, low, high = interval if interval is not None else (None, None, None)
        return LiveEffect(
            n_eligible=n[False],
            n_holdout=n[True],
            retained_eligible=retained[False] / n[False] if n[False] else None,
            retained_holdout=retained[True] / n[True] if n[True] else None,
            uplift=uplift,
            ci_low=low,
            ci_high=high,
        )
