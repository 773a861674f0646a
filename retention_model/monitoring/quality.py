"""Live model quality: how right the scores were, over a sliding event-time window of outcomes.

A resolved outcome (:mod:`retention_model.pipeline.outcomes`) pairs a score's
risk with what happened within the horizon: ``churned`` is 1 when the user did
not purchase, the event the risk is a probability of. The figures are the ones
``retention evaluate model`` and the bundle's ``metrics.test`` report
(ROC-AUC, Brier, expected calibration error over ten equal-width bins), so a
live figure reads against the training-time one directly; plus the top tier's
lift, the churn rate among ``high``-tier scores over the churn rate of all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from retention_model.features.state import DAY_MS

__all__ = [
    "CALIBRATION_BINS",
    "EventTimeWindow",
    "LiveQuality",
    "QualityWindow",
    "brier_score",
    "calibration_table",
    "cumulative_gains",
    "expected_calibration_error",
    "lift_by_decile",
    "live_quality",
    "outcome_quality",
    "quality_report",
    "roc_auc",
    "score_distribution",
    "top_tier_lift",
]

#: Equal-width risk bins of the expected calibration error (as in ``training.metrics``).
CALIBRATION_BINS = 10
#: Spans of score time up to this many days are shown per day, longer ones per week.
DAILY_UP_TO_DAYS = 14


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by midranks (a tie counts one half); None when one class is missing.

    Examples:
        >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    positives = float(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranked = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Midranks: every run of equal scores shares the mean of its positions.
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(ranked)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float(((ranks * labels).sum() - positives * (positives + 1) / 2) / (positives * negatives))


def brier_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean squared difference between risk and outcome (0 is perfect; 0.25 is a coin at 50%)."""
    return float(np.mean((np.asarray(scores, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2))


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Mean |observed - predicted| over equal-width risk bins, weighted by rows.

    Examples:
        >>> expected_calibration_error(np.array([1, 0]), np.array([0.5, 0.5]))
        0.0
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    index = np.minimum((scores * bins).astype(int), bins - 1)
    gap = np.abs(np.bincount(index, labels, minlength=bins) - np.bincount(index, scores, minlength=bins))
    return float(gap.sum() / len(labels))


def top_tier_lift(labels: np.ndarray, top: np.ndarray) -> float | None:
    """Churn rate among the top tier's scores over the churn rate of all; None without either."""
    labels = np.asarray(labels, dtype=np.float64)
    top = np.asarray(top, dtype=bool)
    base = labels.mean() if len(labels) else 0.0
    if not top.any() or base == 0:
        return None
    return float(labels[top].mean() / base)


@dataclass(frozen=True)
class LiveQuality:
    """Quality figures over ``n`` resolved outcomes; a figure is None when it is undefined there."""

    n: int
    churn_rate: float | None
    roc_auc: float | None
    brier: float | None
    ece: float | None
    top_tier_lift: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        """The figures by name, rounded for a report."""
        out: dict[str, float | int | None] = {"n": self.n}
        for name in ("roc_auc", "brier", "ece", "top_tier_lift", "churn_rate"):
            value = getattr(self, name)
            out[name] = None if value is None else round(value, 6)
        return out


def live_quality(
    churned: Sequence[bool] | np.ndarray, risks: Sequence[float] | np.ndarray, top: Sequence[bool] | np.ndarray
) -> LiveQuality:
    """The figures of resolved outcomes: ``churned`` (no purchase within the horizon), ``risks``, ``top`` (high tier).

    Examples:
        >>> live_quality([True, False], [0.9, 0.2], [True, False]).roc_auc
        1.0
    """
    labels = np.asarray(churned, dtype=np.float64)
    scores = np.asarray(risks, dtype=np.float64)
    if len(labels) == 0:
        return LiveQuality(0, None, None, None, None, None)
    return LiveQuality(
        n=len(labels),
        churn_rate=float(labels.mean()),
        roc_auc=roc_auc(labels, scores),
        brier=brier_score(labels, scores),
        ece=expected_calibration_error(labels, scores),
        top_tier_lift=top_tier_lift(labels, np.asarray(top, dtype=bool)),
    )


def outcome_quality(outcomes: Iterable[Mapping[str, Any]]) -> LiveQuality:
    """The figures of ``retention.outcome/v1`` records (as read from the outcomes topic)."""
    rows = [(bool(o["churned"]), float(o["risk"]), o.get("tier") == "high") for o in outcomes]
    return live_quality([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def calibration_table(churned: np.ndarray, risks: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Per equal-width risk bin with scores in it: the range, n, mean risk and observed churn rate."""
    labels = np.asarray(churned, dtype=np.float64)
    scores = np.asarray(risks, dtype=np.float64)
    index = np.minimum((scores * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append(
                {
                    "risk_from": b / bins,
                    "risk_to": (b + 1) / bins,
                    "n": int(mask.sum()),
                    "mean_risk": round(float(scores[mask].mean()), 6),
                    "churn_rate": round(float(labels[mask].mean()), 6),
                }
            )
    return out


def _risk_groups(risks: np.ndarray) -> list[np.ndarray]:
    """Row indices ranked by risk, highest first (ties in input order), in ten near-equal groups."""
    order = np.argsort(-np.asarray(risks, dtype=np.float64), kind="mergesort")
    return [rows for rows in np.array_split(order, 10) if len(rows)]


def lift_by_decile(churned: np.ndarray, risks: np.ndarray) -> list[dict[str, Any]]:
    """Scores ranked by risk, highest first, in ten near-equal groups: n, churn rate and lift over the base rate.

    Examples:
        >>> [d["lift"] for d in lift_by_decile(np.array([1] * 10 + [0] * 10), np.linspace(1, 0, 20))][:2]
        [2.0, 2.0]
    """
    labels = np.asarray(churned, dtype=np.float64)
    base = float(labels.mean()) if len(labels) else 0.0
    out = []
    for decile, rows in enumerate(_risk_groups(risks), start=1):
        rate = float(labels[rows].mean())
        out.append(
            {
                "decile": decile,
                "n": len(rows),
                "churn_rate": round(rate, 6),
                "lift": round(rate / base, 6) if base else None,
            }
        )
    return out


def cumulative_gains(churned: np.ndarray, risks: np.ndarray) -> list[dict[str, Any]]:
    """Share of all churners among the riskiest tenths, beside random targeting's (the share of scores taken).

    The same ten groups as :func:`lift_by_decile`: how much of the churn a campaign
    reaching the top x% by risk would reach. ``gain`` is None without a churner.

    Examples:
        >>> [g["gain"] for g in cumulative_gains(np.array([1] * 10 + [0] * 10), np.linspace(1, 0, 20))][:5]
        [0.2, 0.4, 0.6, 0.8, 1.0]
    """
    labels = np.asarray(churned, dtype=np.float64)
    total = float(labels.sum())
    out, taken, captured = [], 0, 0.0
    for decile, rows in enumerate(_risk_groups(risks), start=1):
        taken += len(rows)
        captured += float(labels[rows].sum())
        out.append(
            {
                "decile": decile,
                "top_share": round(taken / len(labels), 6),
                "churners": int(captured),
                "gain": round(captured / total, 6) if total else None,
                "random": round(taken / len(labels), 6),
            }
        )
    return out


def score_distribution(
    churned: np.ndarray,
    risks: np.ndarray,
    times_ms: np.ndarray,
    period: Literal["auto", "day", "week"] = "auto",
) -> dict[str, Any]:
    """Risk quantiles and churn rate per day or week (UTC, weeks from Monday) of ``times_ms``.

    Who gets scored moves before quality does: a risk distribution creeping up
    with a flat churn rate is a shift in the traffic or a model reading it wrong.
    ``auto`` is per day over spans up to :data:`DAILY_UP_TO_DAYS` days, else per week.
    """
    labels = np.asarray(churned, dtype=np.float64)
    scores = np.asarray(risks, dtype=np.float64)
    days = np.asarray(times_ms, dtype=np.int64) // DAY_MS
    if period == "auto":
        period = "day" if len(days) == 0 or days.max() - days.min() < DAILY_UP_TO_DAYS else "week"
    # Day 0 (1970-01-01) was a Thursday: three days back is a Monday.
    starts = days if period == "day" else days - (days + 3) % 7
    buckets = []
    for start in np.unique(starts):
        mask = starts == start
        p10, p50, p90 = np.quantile(scores[mask], [0.1, 0.5, 0.9])
        buckets.append(
            {
                "start": datetime.fromtimestamp(int(start) * 86_400, tz=UTC).date().isoformat(),
                "n": int(mask.sum()),
                "mean_risk": round(float(scores[mask].mean()), 6),
                "p10": round(float(p10), 6),
                "p50": round(float(p50), 6),
                "p90": round(float(p90), 6),
                "churn_rate": round(float(labels[mask].mean()), 6),
            }
        )
    return {"period": period, "buckets": buckets}


def quality_report(
    outcomes: Sequence[Mapping[str, Any]],
    window_days: float | None = None,
    period: Literal["auto", "day", "week"] = "auto",
) -> dict[str, Any]:
    """Live figures of outcome records: all, per model version, the holdout alone, and the ranking figures.

    A shadow model's outcomes (``shadow``: its scores of the same cutoff snapshots) count
    in ``by_version`` only; every other figure is the live model's.

    ``window_days`` keeps the outcomes resolved within that many days before the
    latest one (the worker's window); None keeps all. The holdout's figures are the
    model untouched by what it triggered: a coupon that brings a user back makes a
    right "high risk" look wrong. The score distribution is bucketed by when the
    scores were made (``scored_at``), or by ``resolved_at`` when a record lacks it.
    """
    if window_days is not None and outcomes:
        ends = [_ms(o["resolved_at"]) for o in outcomes]
        start = max(ends) - window_days * DAY_MS
        outcomes = [o for o, end in zip(outcomes, ends, strict=True) if end > start]
    every = outcomes
    versions = sorted({str(o["model_version"]) for o in outcomes})
    shadow_versions = sorted({str(o["model_version"]) for o in outcomes if o.get("shadow")})
    outcomes = [o for o in outcomes if not o.get("shadow")]  # what the live model said, and acted on
    labels = np.array([bool(o["churned"]) for o in outcomes])
    risks = np.array([float(o["risk"]) for o in outcomes])
    time_key = "scored_at" if all(o.get("scored_at") for o in outcomes) else "resolved_at"
    times = np.array([_ms(o[time_key]) for o in outcomes], dtype=np.int64)
    return {
        "model_live": outcome_quality(outcomes).as_dict(),
        "by_version": {v: outcome_quality(o for o in every if o["model_version"] == v).as_dict() for v in versions},
        "shadow_versions": shadow_versions,
        "holdout": outcome_quality(o for o in outcomes if o.get("holdout")).as_dict(),
        "calibration": calibration_table(labels, risks),
        "lift_by_decile": lift_by_decile(labels, risks),
        "cumulative_gains": cumulative_gains(labels, risks),
        "score_distribution": {"time": time_key, **score_distribution(labels, risks, times, period)},
        "window_days": window_days,
    }


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


class EventTimeWindow:
    """Rows placed at the event time their outcome resolved, over the last ``span_ms``, at most ``max_rows``.

    Event time, not arrival: an outcome is placed at the moment its horizon
    closed, so a replay and live traffic slide the window alike. The count bound
    keeps memory fixed when outcomes come faster than expected (oldest go first).
    Each row's first field is that resolution time.
    """

    def __init__(self, span_ms: int, max_rows: int) -> None:
        if span_ms <= 0 or max_rows <= 0:
            msg = f"span_ms and max_outcomes must be positive, got {span_ms} and {max_rows}"
            raise ValueError(msg)
        self.span_ms = span_ms
        self._rows: deque[tuple[Any, ...]] = deque(maxlen=max_rows)
        #: Latest resolution time seen (event time, ms); the window ends here.
        self.end_ms = 0

    def _append(self, row: tuple[Any, ...]) -> None:
        """One row; rows older than the window's start fall out."""
        self._rows.append(row)
        if row[0] > self.end_ms:
            self.end_ms = row[0]
        start = self.end_ms - self.span_ms
        rows = self._rows
        while rows and rows[0][0] <= start:
            rows.popleft()

    def __len__(self) -> int:
        return len(self._rows)


class QualityWindow(EventTimeWindow):
    """Resolved outcomes of one model version over the last ``span_ms`` of event time, at most ``max_outcomes``."""

    def __init__(self, span_ms: int, max_outcomes: int = 50_000) -> None:
        super().__init__(span_ms, max_outcomes)

    def add(self, resolved_ms: int, risk: float, churned: bool, top: bool) -> None:
        """One outcome, resolved at ``resolved_ms``; outcomes older than the window's start fall out."""
        self._append((resolved_ms, risk, churned, top))

    def figures(self) -> LiveQuality:
        """The window's figures now (an outcome resolved out of order counts until it is first in line)."""
        rows = self._rows
        return live_quality([r[2] for r in rows], [r[1] for r in rows], [r[3] for r in rows])
