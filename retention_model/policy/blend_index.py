"""The recommender's tables as arrays: every known item numbered, each co-purchase row and each
category's best sellers as positions and weights, so a buyer's blend is a few NumPy calls
instead of a few hundred dictionary updates (issue 21's serving budget).

A payload's work is its terms' (a few hundred), never the catalogue's: a real shop's
bundle names every item ever carted or bought, and arrays that size per payload took
3.9 times the instructions at 200,000 items (tests/benchmarks/NOTES.md, entry 44).

Read only once built, and built once per recommender (a model reload builds a new one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BlendIndex", "Row", "row_terms", "term_reason"]

#: Positions of items and their weights (a co-purchase row, a best-seller list); an item
#: may come twice in a row.
Row = tuple[np.ndarray, np.ndarray]


def _row(pairs: Iterable[tuple[str, float]], position: Mapping[str, int]) -> Row:
    found = list(pairs)
    cols = np.fromiter((position[item] for item, _ in found), dtype=np.int64, count=len(found))
    weights = np.fromiter((weight for _, weight in found), dtype=np.float64, count=len(found))
    return cols, weights


@dataclass
class BlendIndex:
    """Items numbered (and ranked by name, the blend's tie-break), with their rows as arrays and dicts."""

    #: In name order, so a position is also the name's rank (the blend's tie-break).
    items: list[str]
    position: dict[str, int]
    #: Co-purchase rows by seed, best-seller lists by category.
    also: dict[str, Row]
    lists: dict[str, Row]
    #: The same the other way round, for the reasons of the few items listed: each item's
    #: share on each category's list, and the seeds listing it with their similarities.
    listed_in: dict[str, dict[str, float]]
    bought_with: dict[str, dict[str, list[float]]]
    #: The best sellers overall per list size: their row, and their shares by name (for reasons).
    _overall: dict[int, tuple[Row, dict[str, float]]] = field(default_factory=dict)
    #: Per thread, one slot per known item for :meth:`_slots` (written before read, never cleared).
    _scratch: threading.local = field(default_factory=threading.local, compare=False, repr=False)

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

    def sum_terms(self, cols: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each item of ``cols`` once, with its ``values`` added up from 0.0 in their order (one
        ``np.add.at``, which adds element by element: the bits of a term-by-term sum)."""
        slot = self._slots(cols)
        sums = np.zeros(len(cols))
        np.add.at(sums, slot, values)
        standing = slot == np.arange(len(cols))  # one term per item: the one its slot names
        return cols[standing], sums[standing]

    def best_terms(self, cols: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each item of ``cols`` once, with its largest value and the first term that has it."""
        slot = self._slots(cols)
        order = np.arange(len(cols))
        best = np.full(len(cols), -np.inf)
        np.maximum.at(best, slot, values)
        reached = values == best[slot]
        winner = np.full(len(cols), len(cols))
        np.minimum.at(winner, slot[reached], order[reached])
        standing = slot == order
        return cols[standing], best[standing], winner[standing]

    def _slots(self, cols: np.ndarray) -> np.ndarray:
        """For each term, the index of one term of the same item, the same for all of them:
        items told apart in time linear in the terms, without sorting them."""
        seen = getattr(self._scratch, "seen", None)
        if seen is None:
            seen = self._scratch.seen = np.empty(len(self.items), dtype=np.int64)
        seen[cols] = np.arange(len(cols))  # whichever of an item's terms lands last stands for it
        return seen[cols]  # type: ignore[no-any-return]


def row_terms(rows: list[tuple[Row, float]], first: Row) -> Row:
    """Items and terms: ``first``'s, then each row's ``scale * weight``, rows in order and each
    row's items in theirs."""
    cols = np.concatenate([first[0], *(row[0] for row, _ in rows)])
    weights = np.concatenate([row[1] for row, _ in rows]) if rows else np.empty(0)
    scales = np.fromiter((scale for _, scale in rows), dtype=np.float64, count=len(rows))
    return cols, np.concatenate((first[1], np.repeat(scales, [len(row[0]) for row, _ in rows]) * weights))


def term_reason(
    index: BlendIndex,
    item: str,
    again: Mapping[str, tuple[float, str]],
    orders: float,
    seed_weights: Mapping[str, float],
    weighted: Mapping[str, float],
    overall: Mapping[str, float],
    popular_weight: float,
) -> str:
    """The largest of the terms :meth:`Recommender._blend` added up for ``item`` (ties by the reason's text).

    Each reason is one seed's, one category's, buy-again's or popularity's, so a reason's
    value is its own terms alone, summed in the blend's order.
    """
    parts: dict[str, float] = {}
    if item in again:
        score, why = again[item]
        parts[why] = score / orders
    listing = index.bought_with.get(item)
    if listing:
        # The fewer of the item's seeds and the user's: a best seller is listed by hundreds.
        seeds = listing.keys() & seed_weights.keys() if len(listing) > len(seed_weights) else listing
        for seed in seeds:
            weight = seed_weights.get(seed)
            if weight is not None:
                total = 0.0
                for similarity in listing[seed]:
                    total += weight * similarity
                parts[f"often bought with {seed}"] = total
    for category, share in index.listed_in.get(item, {}).items():
        weight = weighted.get(category)
        if weight is not None:
            parts[f"popular in {category}"] = weight * share
    share = overall.get(item)
    if share is not None:
        parts["popular"] = popular_weight * share
    # (value, reason) pairs zipped in C and compared as tuples: ties go to the larger text.
    return max(zip(parts.values(), parts))[1]
