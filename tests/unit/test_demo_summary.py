"""The demo's closing summary: what a newcomer reads about latency."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace
from typing import Any

import pytest

from streams.demo import _print_summary
from streams.settings import Settings


def _summary(p99_ms: float) -> dict[str, Any]:
    return {
        "events_produced": 1_000,
        "events_consumed": 1_000,
        "events_applied": 990,
        "events_dead_lettered": 6,
        "events_ignored": 4,
        "scores": 300,
        "tiers": {"low": 250, "medium": 30, "high": 20},
        "interventions": {"coupon": 5, "recommendation": 7},
        "decisions": {"sent": 12, "held_out": 2, "suppressed": 3},
        "holdout_share": 0.143,
        "decision_rules": {"tier": 12},
        "latency_ms_p50": 40.0,
        "latency_ms_p99": p99_ms,
        "latency_target_ms": 100,
        "effect": None,
        "model_live": {},
        "model_version": "abc",
        "seconds": 20.0,
    }


def _latency_line(p99_ms: float, *, embedded: bool = True) -> str:
    out = io.StringIO()
    reader = SimpleNamespace(samples={})
    _print_summary(out, _summary(p99_ms), reader, Settings(), embedded=embedded)  # type: ignore[arg-type]
    (line,) = [line for line in out.getvalue().splitlines() if "event to decision" in line]
    return line


@pytest.mark.parametrize(("p99_ms", "explained"), [(90.0, False), (125.0, True)])
def test_a_p99_over_the_target_says_the_broker_load_and_worker_share_the_cores(p99_ms: float, explained: bool) -> None:
    line = _latency_line(p99_ms)
    assert f"p99 {p99_ms:.0f} ms (target 100 ms" in line
    assert (f"; the broker, the load and the worker share {os.cpu_count()} cores here" in line) is explained


def test_with_a_broker_elsewhere_only_the_load_and_the_worker_share_the_cores() -> None:
    line = _latency_line(125.0, embedded=False)
    assert f"; the load and the worker share {os.cpu_count()} cores here" in line
