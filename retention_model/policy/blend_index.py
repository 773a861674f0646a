"""The recommender's tables as arrays: every known item numbered, each co-purchase row and each
category's best sellers as positions and weights, so a buyer's blend is a few NumPy adds
instead of a few hundred dictionary updates (issue 21's serving budget).

Read only once built, and built once per recommender (a model reload builds a new one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BlendIndex", "Row", "add_rows"]

#: Positions of items and their weights (a co-purchase row, a best-seller list); ``repeats``:
#: an item comes twice, so it must be added with ``np.add.at`` to count each time.
Row = tuple[np.ndarray, np.ndarray, bool]


def _row(pairs: Iterable[tuple[str, float]], position: Mapping[str, int]) -> Row:
    found = list(pairs)
    cols = np.fromiter((position[item] for item, _ in found), dtype=np.int64, count=len(found))
    weights = np.fromiter((weight for _, weight in found), dtype=np.float64, count=len(found))
    return cols, weights, len(set(cols.tolist())) < len(cols)


@dataclass
class BlendIndex:
    """Items numbered (and ranked by name, the blend's tie-break), with their rows as arrays and dicts."""

    items: list[str]
    position: dict[str, int]
    #: Each item's place in name order.
    name_rank: np.ndarray
    #: Co-purchase rows by seed, best-seller lists by category.
    also: dict[str, Row]
    lists: dict[str, Row]
    #: The same the other way round, for the reasons of the few items listed: each item's
    #: share on each category's list, and the seeds listing it with their similarities.
    listed_in: dict[str, dict[str, float]]
    bought_with: dict[str, dict[str, list[float]]]
    #: The best sellers overall per list size: their row, and their shares by name (for reasons).
    _overall: dict[int, tuple[Row, dict[str, float]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        also_bought: Mapping[str, list[tuple[str, float]]],
        category_shares: Mapping[str, list[tuple[str, float]]],
        overall: list[tuple[str, int]],
        category_of: Mapping[str, str],
    ) -> BlendIndex:
        names: set[str] = set(also_bought) | set(category_of) | {item for item, _ in overall}
        for found in also_bought.values():
            names.update(item for item, _ in found)
        for shares in category_shares.values():
            names.update(item for item, _ in shares)
        items = sorted(names)
        position = {item: i for i, item in enumerate(items)}
        listed_in: dict[str, dict[str, float]] = {}
        for category, shares in category_shares.items():
            for item, share in shares:
                listed_in.setdefault(item, {})[category] = share
        bought_with: dict[str, dict[str, list[float]]] = {}
        for seed, found in also_bought.items():
            for item, similarity in found:
                bought_with.setdefault(item, {}).setdefault(seed, []).append(similarity)
        return cls(
            items,
            position,
            np.arange(len(items), dtype=np.int64),  # sorted: position is the name's rank
            {seed: _row(found, position) for seed, found in also_bought.items()},
            {category: _row(shares, position) for category, shares in category_shares.items()},
            listed_in,
            bought_with,
        )

    def overall(self, size: int, shares: Callable[[int], list[tuple[str, float]]]) -> Row:
        """The best sellers overall for lists of ``size`` (``shares(size)`` computes them once per size)."""
        return self._overall_of(size, shares)[0]

    def overall_shares(self, size: int, shares: Callable[[int], list[tuple[str, float]]]) -> dict[str, float]:
        """The same best sellers' shares by item name: the same for every buyer, named once per size."""
        return self._overall_of(size, shares)[1]

    def _overall_of(self, size: int, shares: Callable[[int], list[tuple[str, float]]]) -> tuple[Row, dict[str, float]]:
        found = self._overall.get(size)
        if found is None:
            listed = shares(size)
            found = self._overall[size] = (_row(listed, self.position), dict(listed))
        return found


def add_rows(scores: np.ndarray, touched: np.ndarray, rows: list[tuple[Row, float]]) -> None:
    """``scores[item] += scale * weight`` for each item of each row, rows in order and each row's
    items in theirs (one ``np.add.at``, which adds element by element, so each item's terms are
    summed in that order); mark them touched."""
    rows = [(row, scale) for row, scale in rows if len(row[0])]
    if not rows:
        return
    cols = np.concatenate([row[0] for row, _ in rows])
    weights = np.concatenate([row[1] for row, _ in rows])
    scales = np.repeat(
        np.fromiter((scale for _, scale in rows), dtype=np.float64, count=len(rows)), [len(row[0]) for row, _ in rows]
    )
    np.add.at(scores, cols, scales * weights)
    touched[cols] = True
