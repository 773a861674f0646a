"""The Qini coefficient and the uplift at the top of a ranking: how uplift learners are judged."""

from __future__ import annotations

import numpy as np

__all__ = ["qini"]


def qini(scores: np.ndarray, treated: np.ndarray, y: np.ndarray, top: float = 0.3) -> dict[str, float]:
    """Qini coefficient and uplift in the top share of a ranking, on a randomised log.

    The Qini curve at the top n users is Y_T(n) - Y_C(n)·N_T(n)/N_C(n); the
    coefficient is the mean gap between it and the random-targeting line, as a
    share of all users (0 for random targeting, higher is better).
    """
    order = np.argsort(-scores, kind="stable")
    t = treated[order].astype(float)
    yy = y[order].astype(float)
    n_t = np.cumsum(t)
    n_c = np.cumsum(1.0 - t)
    y_t = np.cumsum(yy * t)
    y_c = np.cumsum(yy * (1.0 - t))
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = np.where(n_c > 0, y_t - y_c * n_t / np.maximum(n_c, 1.0), 0.0)
    n = len(yy)
    random_line = np.arange(1, n + 1) / n * curve[-1]
    k = max(1, round(top * n))
    top_t, top_c = t[:k].astype(bool), ~t[:k].astype(bool)
    uplift_top = float(yy[:k][top_t].mean() - yy[:k][top_c].mean()) if top_t.any() and top_c.any() else 0.0
    overall = float(yy[t.astype(bool)].mean() - yy[~t.astype(bool)].mean())
    return {
        "qini_coefficient": float(np.mean(curve - random_line) / n),
        f"uplift_at_{int(top * 100)}": uplift_top,
        "uplift_overall": overall,
    }
