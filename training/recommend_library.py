"""Library candidates for ``retention evaluate recommendations``: the ``implicit`` package.

Issue 21 asks that a well-kept library be measured where it might recommend better than
our own code. ``implicit`` (pip wheels, no compiler) fits alternating least squares and
item-item neighbours (cosine, BM25) on a user x item matrix; here that matrix holds, for
every buyer before the cutoff, the number of orders each item was in. Lists come from
``recommend`` with the user's own items allowed (buying again is most of what a grocery
shop sells), filled up with best sellers when shorter than K or when the user bought
nothing before the cutoff, as ``own_then_popular`` is.

``implicit`` is optional: without it the candidates are skipped and the report says how to
add them. The settings were chosen on the validation cutoffs (the Instacart sample without
each user's last order, the simulator a month earlier), never on the reported ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np

from retention_model.policy.buy_again import PurchaseHistory

__all__ = ["IMPLICIT_HELP", "LIBRARY_SETTINGS", "library_methods"]

IMPLICIT_HELP: Final = "implicit candidates skipped: implicit is not installed (pip install implicit)"
#: Method name -> (model, its settings). ALS: confidence 1 + alpha x orders (implicit's scaling).
LIBRARY_SETTINGS: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "implicit_als": ("als", {"factors": 128, "regularization": 0.05, "alpha": 10.0, "iterations": 15}),
    "implicit_cosine": ("cosine", {"K": 200}),
    "implicit_bm25": ("bm25", {"K": 200, "K1": 1.2, "B": 0.3}),
}

Method = Callable[[str], list[str]]


def _purchase_matrix(histories: Mapping[str, PurchaseHistory]) -> tuple[Any, dict[str, int], list[str]]:
    """Users x items CSR of the number of orders each item was in, with the row and column keys."""
    from scipy import sparse

    users = {user: row for row, user in enumerate(sorted(histories))}
    items = sorted({item for history in histories.values() for item in history.bought_ms})
    column = {item: j for j, item in enumerate(items)}
    rows, cols, counts = [], [], []
    for user, row in users.items():
        for item, times in histories[user].bought_ms.items():
            rows.append(row)
            cols.append(column[item])
            counts.append(float(len(times)))
    matrix = sparse.csr_matrix((counts, (rows, cols)), shape=(len(users), len(items)), dtype=np.float32)
    return matrix, users, items


def _model(kind: str, settings: dict[str, Any], seed: int) -> Any:
    """An unfitted ``implicit`` model on one thread (the machine is shared; the data are small)."""
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    if kind == "als":
        return AlternatingLeastSquares(**settings, use_gpu=False, num_threads=1, random_state=seed)
    if kind == "cosine":
        return CosineRecommender(**settings, num_threads=1)
    return BM25Recommender(**settings, num_threads=1)


def library_methods(
    histories: Mapping[str, PurchaseHistory], users: list[str], popular: list[str], k: int, seed: int = 42
) -> tuple[dict[str, Method], str | None]:
    """Each ``implicit`` candidate as user -> ranked items, or no method and why they were skipped."""
    try:
        import implicit  # noqa: F401  (only whether it is there)
        from threadpoolctl import threadpool_limits
    except ImportError:
        return {}, IMPLICIT_HELP
    if not histories:
        return {}, "implicit candidates skipped: no purchase before the cutoff"
    matrix, rows, items = _purchase_matrix(histories)
    known = [user for user in users if user in rows]
    user_rows = np.array([rows[user] for user in known], dtype=np.int32)
    lists: dict[str, dict[str, list[str]]] = {}
    # implicit warns, and runs slower, when BLAS spawns threads of its own inside its loops;
    # its neighbour models pass themselves a COO matrix and warn about it (nothing of ours).
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        for name, (kind, settings) in LIBRARY_SETTINGS.items():
            model = _model(kind, settings, seed)
            model.fit(matrix, show_progress=False)
            found: dict[str, list[str]] = {}
            if len(known):
                ids, scores = model.recommend(
                    user_rows, matrix[user_rows], N=min(k, len(items)), filter_already_liked_items=False
                )
                # A short list is padded (id -1, or a score of -inf; for neighbours, 0: no evidence).
                floor = -np.inf if kind == "als" else 0.0
                for user, row_ids, row_scores in zip(known, ids, scores, strict=True):
                    keep = (row_ids >= 0) & np.isfinite(row_scores) & (row_scores > floor)
                    found[user] = [items[j] for j in row_ids[keep]]
            lists[name] = found

    def method(found: dict[str, list[str]]) -> Method:
        def ranked(user: str) -> list[str]:
            mine = found.get(user, [])
            return (mine + [item for item in popular if item not in mine])[:k]

        return ranked

    return {name: method(found) for name, found in lists.items()}, None
