"""Feature drift: the population stability index of live features against the bundle's reference.

Training records, per feature, quantile cut points and the share of reference
rows in each bin (:class:`FeatureReference`); the worker counts the rows it
scores into the same bins, columnar over a batch's feature matrix
(:meth:`FeatureReference.bin_counts`), keeps the counts of its last scores
(:class:`DriftWindow`) and turns them into a PSI per feature (:func:`psi`).

PSI = sum over bins of (live - reference) * ln(live / reference). Rule of thumb:
below 0.1 stable, 0.1-0.25 moving, above 0.25 a shift the model was not trained on.
Quantile bins, so the figure does not depend on a feature's scale or on the
log transform the model applies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_BINS", "EXTRAS_KEY", "PSI_ALERT", "DriftWindow", "FeatureReference", "bundle_reference", "psi"]

#: Quantile bins per feature (fewer where a feature has few distinct values).
DEFAULT_BINS = 10
#: The conventional "significant shift" threshold; the alert rule uses it too.
PSI_ALERT = 0.25
#: Where a bundle keeps the reference (``bundle.json``'s ``extras``).
EXTRAS_KEY = "feature_reference"
#: Share used in place of an empty bin, so ln() stays finite (a common choice).
_FLOOR = 1e-4


def _round(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


@dataclass(frozen=True)
class FeatureReference:
    """Bins and reference shares of every feature, in model input order.

    Bin ``i`` of a feature is ``(cuts[i-1], cuts[i]]``; the first is open below and
    the last above, so a live value outside the reference range still lands in a bin.
    """

    names: tuple[str, ...]
    #: Per feature, ascending cut points (bins = cuts + 1).
    cuts: tuple[tuple[float, ...], ...]
    #: Per feature, the reference share of each bin (sums to 1).
    shares: tuple[tuple[float, ...], ...]
    #: Reference rows the shares come from, and what they were.
    rows: int
    source: str = ""

    @classmethod
    def fit(
        cls, matrix: np.ndarray, names: Sequence[str], *, bins: int = DEFAULT_BINS, source: str = ""
    ) -> FeatureReference:
        """Quantile cut points and shares from reference rows (one row per scoring moment)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(names) or len(matrix) == 0:
            msg = f"reference rows must be a non-empty (rows, {len(names)}) matrix; got shape {matrix.shape}"
            raise ValueError(msg)
        quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        cuts = []
        for column in matrix.T:
            points = np.unique(_round(np.quantile(column, quantiles)))
            # A cut at the maximum leaves an always-empty last bin: drop it.
            cuts.append(tuple(float(c) for c in points if c < column.max()))
        partial = cls(tuple(names), tuple(cuts), tuple((1.0,) * (len(c) + 1) for c in cuts), len(matrix), source)
        counts = partial.bin_counts(matrix)
        shares = tuple(tuple(_round(row[: len(c) + 1] / len(matrix))) for row, c in zip(counts, cuts, strict=True))
        return cls(tuple(names), tuple(cuts), shares, len(matrix), source)

    @property
    def width(self) -> int:
        """Bins of the feature with the most."""
        return max(len(c) for c in self.cuts) + 1

    def bin_counts(self, matrix: np.ndarray) -> np.ndarray:
        """Rows per (feature, bin) of a feature matrix, an int64 array (features, :attr:`width`).

        Columnar: one comparison against every cut of every feature, then one
        ``bincount``; a few NumPy passes per batch whatever its size.
        """
        matrix = np.asarray(matrix, dtype=np.float64)
        n_features, width = len(self.names), self.width
        if len(matrix) == 0:
            return np.zeros((n_features, width), dtype=np.int64)
        padded = np.full((n_features, width - 1), np.inf)
        for j, cuts in enumerate(self.cuts):
            padded[j, : len(cuts)] = cuts
        # Bin index = number of cuts strictly below the value (NaN: bin 0).
        index = (matrix[:, :, None] > padded[None, :, :]).sum(axis=2)
        flat = index + np.arange(n_features)[None, :] * width
        return np.bincount(flat.ravel(), minlength=n_features * width).reshape(n_features, width)

    def psi(self, counts: np.ndarray) -> np.ndarray:
        """PSI of each feature for live ``counts`` (as :meth:`bin_counts` makes them), all at once."""
        expected = np.zeros((len(self.names), self.width))
        for j, shares in enumerate(self.shares):
            expected[j, : len(shares)] = shares
        used = np.zeros_like(expected, dtype=bool)
        for j, shares in enumerate(self.shares):
            used[j, : len(shares)] = True
        live = np.asarray(counts, dtype=np.float64)
        totals = live.sum(axis=1, keepdims=True)
        actual = np.maximum(np.divide(live, totals, out=np.zeros_like(live), where=totals > 0), _FLOOR)
        expected = np.maximum(expected, _FLOOR)
        terms = np.where(used, (actual - expected) * np.log(actual / expected), 0.0)
        return np.where(totals[:, 0] > 0, terms.sum(axis=1), 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in a bundle."""
        return {
            "rows": self.rows,
            "source": self.source,
            "features": {
                name: {"cuts": list(c), "shares": list(s)}
                for name, c, s in zip(self.names, self.cuts, self.shares, strict=True)
            },
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], names: Sequence[str]) -> FeatureReference:
        """Read the JSON form back, in ``names`` order; raises ValueError naming what is wrong."""
        features = raw["features"]
        missing = [n for n in names if n not in features]
        if missing:
            msg = f"the feature reference lacks {', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}"
            raise ValueError(msg)
        cuts = tuple(tuple(float(v) for v in features[n]["cuts"]) for n in names)
        shares = tuple(tuple(float(v) for v in features[n]["shares"]) for n in names)
        for name, c, s in zip(names, cuts, shares, strict=True):
            if len(s) != len(c) + 1 or list(c) != sorted(c):
                msg = f"the feature reference of {name} has {len(c)} cuts (ascending?) and {len(s)} shares"
                raise ValueError(msg)
        return cls(tuple(names), cuts, shares, int(raw.get("rows", 0)), str(raw.get("source", "")))


def bundle_reference(extras: dict[str, Any], names: Sequence[str]) -> FeatureReference | None:
    """The reference in a bundle's extras (None for a bundle trained before drift monitoring).

    Raises ValueError when it is there but malformed.
    """
    raw = extras.get(EXTRAS_KEY)
    return None if raw is None else FeatureReference.from_dict(raw, names)


def psi(reference: Sequence[float], live_counts: Sequence[float] | np.ndarray) -> float:
    """Population stability index of live bin counts against reference shares (0 with no live rows)."""
    live = np.asarray(live_counts, dtype=np.float64)
    total = live.sum()
    if total <= 0:
        return 0.0
    expected = np.maximum(np.asarray(reference, dtype=np.float64), _FLOOR)
    actual = np.maximum(live / total, _FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class DriftWindow:
    """Bin counts of the last ``size`` scored rows, as ``parts`` slices (a sliding window by count).

    Counted against one reference at a time: a new reference (a reloaded model)
    starts the window afresh, since counts in other bins cannot be compared.
    """

    def __init__(self, size: int, parts: int = 4) -> None:
        if size < parts or parts < 1:
            msg = f"a drift window needs size >= parts >= 1; got size={size}, parts={parts}"
            raise ValueError(msg)
        self.slice_rows = size // parts
        self.parts = parts
        self.reference: FeatureReference | None = None
        self._full: deque[tuple[np.ndarray, int]] = deque(maxlen=parts)
        self._current: np.ndarray | None = None
        self._current_rows = 0

    @property
    def rows(self) -> int:
        """Rows in the window now."""
        return sum(rows for _, rows in self._full) + self._current_rows

    def add(self, reference: FeatureReference, counts: np.ndarray, rows: int) -> None:
        """Add one batch's bin counts (``rows`` scored rows) counted against ``reference``."""
        if reference is not self.reference:
            self.reference = reference
            self._full.clear()
            self._current, self._current_rows = None, 0
        self._current = counts.copy() if self._current is None else self._current + counts
        self._current_rows += rows
        if self._current_rows >= self.slice_rows:
            # A slice closes with whole batches: it may hold a little more than its share.
            self._full.append((self._current, self._current_rows))
            self._current, self._current_rows = None, 0

    def counts(self) -> np.ndarray | None:
        """Summed counts of the window (None before any row)."""
        parts = [counts for counts, _ in self._full] + ([self._current] if self._current is not None else [])
        return sum(parts[1:], parts[0].copy()) if parts else None

    def psi(self) -> np.ndarray | None:
        """PSI per feature over the window (None before any row)."""
        counts = self.counts()
        if counts is None or self.reference is None:
            return None
        return self.reference.psi(counts)
