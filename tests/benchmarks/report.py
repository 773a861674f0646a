"""One benchmark run as a Markdown table: the figures docs/benchmarks.md quotes.

``python -m tests.benchmarks.report bench-results.json`` prints the table; the docs
hold the table made from the committed ``docs/bench-results.json`` (one run, never
figures copied by hand), and a unit test keeps the two equal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["render"]


def _fmt(value: float) -> str:
    if abs(value) >= 10 or value == 0:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def render(results: dict[str, Any]) -> str:
    """Every figure of one run beside its unit, its reference's value and ratio, and its range."""
    meta = results.get("_meta", {})
    units, references, runs = meta.get("units", {}), meta.get("references", {}), meta.get("runs", {})
    lines = ["| Figure | Value | Unit | Reference (same run) | Range of the runs |", "|---|---:|---|---|---|"]
    for key in sorted(k for k in results if not k.startswith("_")):
        value = results[key]
        reference = references.get(key)
        keys = [] if reference is None else [reference] if isinstance(reference, str) else reference
        compared = "; ".join(
            f"`{ref}` {_fmt(results[ref])}: {value / results[ref]:.2f}x" for ref in keys if results.get(ref)
        )
        spread = ""
        if key in runs:
            spread = f"{_fmt(min(runs[key]))}–{_fmt(max(runs[key]))} ({len(runs[key])} runs)"
        lines.append(f"| `{key}` | {_fmt(value)} | {units.get(key, '')} | {compared} | {spread} |")
    machine = meta.get("machine", {})
    if machine:
        lines.append("")
        lines.append(
            f"Machine: {machine.get('cpus')} CPUs, {machine.get('machine')}, Python {machine.get('python')}"
            + (f"; run {meta['date']}" if "date" in meta else "")
            + "."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results.json")
    print(render(json.loads(path.read_text())))
