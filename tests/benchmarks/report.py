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

__all__ = ["TARGETS", "render", "render_targets"]

#: The targets the issues set, as (figure, comparison, bound): a number, or another
#: figure of the same run. Checked against one run by :func:`render_targets`; a figure
#: measured several times must meet its target in every run (its worst run is shown).
TARGETS: tuple[tuple[str, str, float | str], ...] = (
    ("core.events_per_s", ">=", 300_000),
    ("core.events_per_s_many_users", ">=", 150_000),
    ("e2e.events_per_s", ">=", 60_000),
    ("e2e.speedup_vs_naive", ">=", 100),
    ("e2e.events_per_s", ">=", "quix_noop.events_per_s"),
    ("e2e.events_per_s", ">=", "2.5 * quix_state.events_per_s"),
    ("e2e.p99_ms_at_10k", "<=", 100),
    ("scoring.cpu_rows_per_s_4096", ">=", 2_000_000),
    ("state.bytes_per_user", "<=", 1024),
    ("core.recommendation_share_of_batch", "<=", 0.10),
    ("state.rss_mb_1m_users", "<=", 2048),
    ("state.ttl_users_held", "<=", "1.01 * state.ttl_users_held_half"),
    ("train.events_per_s", ">=", 10_000_000 / 600),
    ("train.peak_rss_mb", "<=", 4096),
)


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


def _bound(results: dict[str, Any], bound: float | str) -> tuple[float | None, str]:
    """The bound's value in this run, and how to write it."""
    if not isinstance(bound, str):
        return float(bound), _fmt(bound)
    factor, _, key = bound.rpartition(" * ")
    value = results.get(key)
    scale = float(factor) if factor else 1.0
    shown = f"{factor}× `{key}`" if factor else f"`{key}`"
    return (None if value is None else scale * value), shown


def render_targets(results: dict[str, Any]) -> str:
    """Each target beside this run's figure: met, not met, or not measured in this run."""
    lines = ["| Figure | Target | This run | Met |", "|---|---|---:|---|"]
    for key, comparison, bound in TARGETS:
        limit, shown = _bound(results, bound)
        value = results.get(key)
        runs = results.get("_meta", {}).get("runs", {}).get(key)
        if value is not None and runs:
            value = min(runs) if comparison == ">=" else max(runs)
        if value is None or limit is None:
            verdict, figure = "not measured in this run", "–"
        else:
            met = value >= limit if comparison == ">=" else value <= limit
            verdict, figure = ("yes" if met else "**no**"), _fmt(value)
            if runs:
                figure += f" (worst of {len(runs)} runs)"
            if isinstance(bound, str):
                figure += f" (vs {_fmt(limit)})"
        lines.append(f"| `{key}` | {comparison} {shown} | {figure} | {verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results.json")
    results = json.loads(path.read_text())
    print(render(results))
    print()
    print(render_targets(results))
