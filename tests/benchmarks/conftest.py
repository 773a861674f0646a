"""Benchmark harness: every figure is recorded beside its reference from the same run.

Run with ``make bench``. Results go to ``$BENCH_JSON`` (default ``bench-results.json``)
and a table is printed at the end. ``make test`` never collects this folder.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RESULTS: dict[str, Any] = {}


def record(key: str, value: float, *, unit: str = "", reference: str | None = None) -> None:
    """Store one figure as ``group.name``; ``reference`` names the key it is compared with."""
    RESULTS[key] = value
    RESULTS.setdefault("_meta", {}).setdefault("units", {})[key] = unit
    if reference is not None:
        RESULTS["_meta"].setdefault("references", {})[key] = reference


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
    if RESULTS.get("e2e.events_per_s") and RESULTS.get("naive.events_per_s"):
        RESULTS["e2e.speedup_vs_naive"] = RESULTS["e2e.events_per_s"] / RESULTS["naive.events_per_s"]
    path = Path(os.environ.get("BENCH_JSON", "bench-results.json"))
    path.write_text(json.dumps(RESULTS, indent=2, sort_keys=True) + "\n")
    units = RESULTS["_meta"].get("units", {})
    references = RESULTS["_meta"].get("references", {})
    lines = ["", f"{'benchmark':42s} {'value':>16s}  unit / reference (same run)"]
    for key in sorted(k for k in RESULTS if not k.startswith("_")):
        ref = references.get(key)
        note = units.get(key, "")
        if ref is not None and ref in RESULTS and RESULTS[ref]:
            note += f"  ({RESULTS[key] / RESULTS[ref]:.1f}x {ref})"
        value = RESULTS[key]
        shown = f"{value:,.1f}" if abs(value) >= 10 or value == 0 else f"{value:.3g}"  # shares and ratios
        lines.append(f"{key:42s} {shown:>16s}  {note}")
    lines.append(f"written to {path}")
    print("\n".join(lines))
