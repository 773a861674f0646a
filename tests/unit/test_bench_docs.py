"""docs/benchmarks.md quotes one run: its tables are the ones made from docs/bench-results.json."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks.report import render, render_targets

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_tables_are_the_committed_runs() -> None:
    results = json.loads((ROOT / "docs" / "bench-results.json").read_text())
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    regenerate = "regenerate them: python -m tests.benchmarks.report docs/bench-results.json"
    assert render(results) in page, f"docs/benchmarks.md's figures are not the committed run's; {regenerate}"
    assert render_targets(results) in page, f"docs/benchmarks.md's targets table is stale; {regenerate}"
