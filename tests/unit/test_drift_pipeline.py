"""Injected drift through the worker's own path: PSI of exactly the shifted features passes 0.25.

A reference is fitted as training fits it (features after each event in the last
30 days of a simulated log); a second, independent simulation runs through the
batch pipeline in process and its event-triggered rows are counted into the
reference's bins, as the worker counts them. Shifted prices must move the money
features and nothing else; thinned visits the activity features and not the
money-per-order ones; the same traffic process must stay quiet.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator

import msgspec
import numpy as np
import pytest

from retention_model.events import Event, EventType, encode_event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.state import DAY_MS
from retention_model.monitoring.drift import PSI_ALERT, DriftWindow, FeatureReference
from retention_model.pipeline import (
    BatchPipeline,
    DecodeLimits,
    Inference,
    MemoryStores,
    ModelCall,
    PipelineConfig,
    Record,
)
from retention_model.policy.config import PolicyConfig
from training.drift_reference import REFERENCE_DAYS, feature_reference
from training.simulator import SimConfig, simulate

USERS, DAYS, PARTITIONS = 500, 100, 4
#: Features computed from money: a price shift may move these, and only these.
MONEY = {n for n in FEATURE_NAMES if n.startswith("spend_")} | {"avg_order_value", "avg_item_price"}
#: Money per order or per item does not depend on how often a user visits.
PER_ORDER = {"avg_order_value", "avg_item_price"}


@pytest.fixture(scope="module")
def reference() -> tuple[FeatureReference, int]:
    events = list(simulate(SimConfig(users=USERS, days=DAYS, seed=11)))
    end = max(e.ts_ms for e in events)
    ref = feature_reference(events, end)
    assert ref is not None and ref.rows > 10_000
    return ref, end


@pytest.fixture(scope="module")
def live() -> list[Event]:
    return list(simulate(SimConfig(users=USERS, days=DAYS, seed=12)))


def rounds(events: list[Event]) -> Iterator[list[Event]]:
    """Each day's events as batches holding at most one event per user, in each user's order.

    A worker fed in real time scores a user after each event (batches of tens of
    ms); this is the same per-user sequence of scores in far fewer batches.
    """
    by_day: dict[int, dict[str, list[Event]]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        by_day[event.ts_ms // DAY_MS][event.user_id].append(event)
    for day in sorted(by_day):
        users = by_day[day]
        for i in range(max(len(v) for v in users.values())):
            yield [v[i] for v in users.values() if i < len(v)]


def live_psi(events: list[Event], reference: FeatureReference, since_ms: int) -> dict[str, float]:
    """Run the log through the pipeline; PSI of the event-triggered rows scored after ``since_ms``."""
    # A day of lateness: batches of a day's rounds are out of order across users.
    limits = DecodeLimits(lateness_ms=DAY_MS, future_skew_ms=DAY_MS, watermark_jump_ms=100 * DAY_MS)
    wall = max(e.ts_ms for e in events) + DAY_MS
    pipeline = BatchPipeline(
        PipelineConfig(PolicyConfig(), PARTITIONS, limits, replay=True), MemoryStores(), lambda: wall
    )

    async def infer(features: np.ndarray) -> Inference:
        return Inference(np.full(len(features), 0.3))

    window = DriftWindow(size=1_000_000)
    offsets: Counter[int] = Counter()

    def run(batch: list[Event], counted: bool) -> None:
        records: dict[int, list[Record]] = defaultdict(list)
        for event in batch:
            key = event.user_id.encode()
            partition = zlib.crc32(key) % PARTITIONS
            records[partition].append(Record(key, encode_event(event), offsets[partition], event.ts_ms))
            offsets[partition] += 1
        model = ModelCall(infer, "stand-in", reference=reference if counted else None)
        counts = asyncio.run(pipeline.process(records, model)).counts
        if counts.feature_bins is not None:
            assert counts.feature_reference is reference
            window.add(reference, counts.feature_bins, counts.feature_rows)

    history = [e for e in events if e.ts_ms <= since_ms]
    for start in range(0, len(history), 5000):  # the history only builds state: big batches
        run(history[start : start + 5000], counted=False)
    for batch in rounds([e for e in events if e.ts_ms > since_ms]):
        run(batch, counted=True)
    assert window.rows > 10_000
    psi = window.psi()
    assert psi is not None
    return dict(zip(FEATURE_NAMES, psi.tolist(), strict=True))


def shift_prices(events: list[Event], factor: float) -> list[Event]:
    """Every price (and order line price) times ``factor``."""
    out = []
    for event in events:
        if event.price is not None:
            items = event.items and [
                msgspec.structs.replace(line, price=round(line.price * factor, 2)) if line.price else line
                for line in event.items
            ]
            event = msgspec.structs.replace(event, price=round(event.price * factor, 2), items=items)
        out.append(event)
    return out


def thin_visits(events: list[Event], keep: float, seed: int) -> list[Event]:
    """Drop sessions (with their orders' later cancels, returns and reviews) but a ``keep`` share."""
    rng = np.random.default_rng(seed)
    dropped_sessions: set[str] = set()
    dropped_orders: set[str] = set()
    out = []
    for event in events:
        if event.type is EventType.SESSION_START and rng.random() > keep:
            dropped_sessions.add(event.session_id or "")
        if event.session_id in dropped_sessions:
            if event.order_id:
                dropped_orders.add(event.order_id)
            continue
        if event.order_id in dropped_orders:
            continue
        out.append(event)
    return out


def alerting(psi: dict[str, float]) -> set[str]:
    return {name for name, value in psi.items() if value > PSI_ALERT}


def since(end: int) -> int:
    return end - REFERENCE_DAYS * DAY_MS


def test_the_same_traffic_stays_quiet(reference: tuple[FeatureReference, int], live: list[Event]) -> None:
    ref, end = reference
    psi = live_psi(live, ref, since(end))
    assert alerting(psi) == set(), sorted(psi.items(), key=lambda kv: -kv[1])[:5]


def test_doubled_prices_raise_the_psi_of_exactly_the_money_features(
    reference: tuple[FeatureReference, int], live: list[Event]
) -> None:
    ref, end = reference
    psi = live_psi(shift_prices(live, 2.0), ref, since(end))
    drifted = alerting(psi)
    assert drifted <= MONEY, drifted - MONEY
    # Money per order and per item always pass it; the running spend sums mostly do
    # (0.23-0.49 over three seed pairs: users mix old and new prices in them).
    assert drifted >= PER_ORDER


def test_fewer_visits_raise_the_activity_features_not_money_per_order(
    reference: tuple[FeatureReference, int], live: list[Event], seed: int
) -> None:
    ref, end = reference
    psi = live_psi(thin_visits(live, keep=0.4, seed=seed), ref, since(end))
    drifted = alerting(psi)
    assert {"sessions_count_7d", "sessions_count_30d", "views_count_30d"} <= drifted
    assert not drifted & PER_ORDER, drifted & PER_ORDER
