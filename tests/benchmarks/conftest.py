"""Benchmark harness: every figure is recorded beside its reference from the same run.

Run with ``make bench``. Results go to ``$BENCH_JSON`` (default ``bench-results.json``)
and a table is printed at the end. ``make test`` never collects this folder.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

RESULTS: dict[str, Any] = {}


def record(
    key: str,
    value: float,
    *,
    unit: str = "",
    reference: str | list[str] | None = None,
    runs: list[float] | None = None,
) -> None:
    """Store one figure as ``group.name``; ``reference`` names the key (or keys) it is compared with.

    ``runs``: every run's value when ``value`` is their median; kept in the JSON under
    ``_meta.runs`` and shown as a range, so a reader sees how far the host moved them.
    """
    RESULTS[key] = value
    meta = RESULTS.setdefault("_meta", {})
    meta.setdefault("units", {})[key] = unit
    if reference is not None:
        meta.setdefault("references", {})[key] = reference if isinstance(reference, str) else list(reference)
    if runs is not None:
        meta.setdefault("runs", {})[key] = runs


@pytest.fixture(scope="session")
def bench() -> Iterator[Any]:
    yield record


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.uname().processor,
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not RESULTS:
        return
    RESULTS.setdefault("_meta", {})["machine"] = _machine()
    RESULTS["_meta"]["date"] = datetime.now(tz=UTC).date().isoformat()
    path = Path(os.environ.get("BENCH_JSON", "bench-results.json"))
    path.write_text(json.dumps(RESULTS, indent=2, sort_keys=True) + "\n")
    units = RESULTS["_meta"].get("units", {})
    references = RESULTS["_meta"].get("references", {})
    runs = RESULTS["_meta"].get("runs", {})
    lines = ["", f"{'benchmark':42s} {'value':>16s}  unit / reference (same run)"]
    for key in sorted(k for k in RESULTS if not k.startswith("_")):
        note = units.get(key, "")
        for ref in reference_keys(references.get(key)):
            if RESULTS.get(ref):
                note += f"  ({RESULTS[key] / RESULTS[ref]:.1f}x {ref})"
        if key in runs:
            low, high = min(runs[key]), max(runs[key])
            note += f"  [median of {len(runs[key])}: {_short(low)}-{_short(high)}]"
        value = RESULTS[key]
        shown = f"{value:,.1f}" if abs(value) >= 10 or value == 0 else f"{value:.3g}"  # shares and ratios
        lines.append(f"{key:42s} {shown:>16s}  {note}")
    lines.append(f"written to {path}")
    print("\n".join(lines))


def reference_keys(reference: str | list[str] | None) -> list[str]:
    """The keys a figure is compared with: none, one, or several (stored as a list)."""
    if reference is None:
        return []
    return [reference] if isinstance(reference, str) else list(reference)


def _short(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.3g}"
