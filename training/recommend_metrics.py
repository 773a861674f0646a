"""Top-K ranking metrics per user, catalogue coverage, and paired bootstrap intervals.

Every method is scored on the same users, so the bootstrap resamples users once per
replicate and applies the draw to every method: the interval of a difference then
reflects how the methods differ on the same people, which is far narrower than two
separate intervals would suggest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse

__all__ = ["METRICS", "bootstrap_report", "ranking_metrics"]

#: Per-user metrics, in the order :func:`ranking_metrics` returns them.
METRICS = ("hit_rate", "recall", "ndcg")


def ranking_metrics(ranked: Sequence[str], relevant: set[str], k: int) -> tuple[float, float, float]:
    """Hit (any of the first ``k`` relevant), recall (share of relevant found) and NDCG@k.

    NDCG uses binary relevance: DCG = sum of 1/log2(rank + 1) over relevant items in
    the list, divided by the DCG of a list with all relevant items first.

    Examples:
        >>> ranking_metrics(["a", "b", "c"], {"b", "z"}, k=3)
        (1.0, 0.5, 0.38685280723454163)
        >>> ranking_metrics(["a"], set(), k=3)
        (0.0, 0.0, 0.0)
    """
    if not relevant:
        return 0.0, 0.0, 0.0
    top = list(ranked[:k])
    found = [rank for rank, item in enumerate(top, start=1) if item in relevant]
    dcg = sum(1.0 / math.log2(rank + 1) for rank in found)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return float(bool(found)), len(found) / len(relevant), dcg / ideal


def _interval(samples: np.ndarray, centre_on: float | None = None) -> list[float]:
    """The 2.5th and 97.5th percentiles; with ``centre_on``, their spread moved onto that value.

    Coverage counts distinct items over distinct users, and a resample holds about 63%
    of the users, so resampled coverage sits below the observed one: its interval is
    the bootstrap's spread around the observed value instead.
    """
    low, high = np.percentile(samples, [2.5, 97.5])
    if centre_on is not None:
        shift = centre_on - float(np.mean(samples))
        low, high = low + shift, high + shift
    return [round(float(low), 4), round(float(high), 4)]


def _coverages(weights: np.ndarray, shown: sparse.csr_matrix, catalogue: int, chunk: int = 200) -> np.ndarray:
    """Coverage in each replicate: items recommended to at least one drawn user / catalogue."""
    out = np.empty(weights.shape[0])
    shown_t = shown.T.tocsr()
    for start in range(0, weights.shape[0], chunk):
        block = weights[start : start + chunk]
        out[start : start + len(block)] = (shown_t @ block.T > 0).sum(axis=0) / catalogue
    return out


def bootstrap_report(
    per_user: dict[str, np.ndarray],
    shown: dict[str, sparse.csr_matrix],
    catalogue: int,
    reference: str,
    ratio_to: str,
    replicates: int = 1000,
    seed: int = 42,
) -> dict[str, Any]:
    """Means with 95% intervals per method, and the reference minus each other method.

    ``per_user[m]`` is users x :data:`METRICS`; ``shown[m]`` a users x catalogue 0/1
    matrix of what ``m`` recommended. The rows of every method are the same users.
    ``ratio_to`` names the method whose hit rate the reference's is divided by.
    """
    names = list(per_user)
    n = next(iter(per_user.values())).shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(replicates, n))
    weights = np.zeros((replicates, n))
    np.add.at(weights, (np.repeat(np.arange(replicates), n), draws.ravel()), 1.0)
    means = {m: weights @ per_user[m] / n for m in names}  # replicates x metrics
    coverage = {m: _coverages(weights, shown[m], catalogue) for m in names}
    point_coverage = {m: float((np.asarray(shown[m].sum(axis=0)) > 0).sum() / catalogue) for m in names}

    def figures(m: str) -> dict[str, dict[str, Any]]:
        out = {
            metric: {"value": round(float(per_user[m][:, j].mean()), 4), "ci95": _interval(means[m][:, j])}
            for j, metric in enumerate(METRICS)
        }
        point = point_coverage[m]
        out["coverage"] = {"value": round(point, 4), "ci95": _interval(coverage[m], centre_on=point)}
        return out

    def difference(m: str) -> dict[str, dict[str, Any]]:
        out = {}
        for j, metric in enumerate(METRICS):
            gap = per_user[reference][:, j].mean() - per_user[m][:, j].mean()
            out[metric] = {
                "difference": round(float(gap), 4),
                "ci95": _interval(means[reference][:, j] - means[m][:, j]),
            }
        gap = point_coverage[reference] - point_coverage[m]
        out["coverage"] = {
            "difference": round(gap, 4),
            "ci95": _interval(coverage[reference] - coverage[m], centre_on=gap),
        }
        return out

    base = means[ratio_to][:, 0]
    ratio = np.divide(means[reference][:, 0], base, out=np.full_like(base, np.nan), where=base > 0)
    point_base = per_user[ratio_to][:, 0].mean()
    point = per_user[reference][:, 0].mean() / point_base if point_base > 0 else math.nan
    return {
        "methods": {m: figures(m) for m in names},
        f"{reference}_minus": {m: difference(m) for m in names if m != reference},
        f"hit_rate_ratio_to_{ratio_to}": {
            "value": round(float(point), 3),
            "ci95": _interval(ratio[np.isfinite(ratio)]) if np.isfinite(ratio).any() else [math.nan, math.nan],
        },
    }
