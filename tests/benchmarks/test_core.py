"""Core benchmarks, no Kafka: feature updates, the whole core pipeline, state size."""

from __future__ import annotations

import time
from typing import Any

import orjson

from retention_model.events import Event, decode_event, encode_event
from retention_model.features.state import UserState, apply_event, dump_state, load_state
from retention_model.model.scorer import ChurnModel
from retention_model.scoring import build_features, finish_batch
from streams.settings import BUNDLED_MODEL, Settings
from training.simulator import SimConfig, simulate

EVENTS = list(simulate(SimConfig(users=2000, days=120, seed=21)))
PAYLOADS = [encode_event(e) for e in EVENTS]


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def test_feature_updates(bench: Any) -> None:
    """apply_event on one core; reference: json parsing of the same events (orjson)."""
    started = time.perf_counter()
    for payload in PAYLOADS:
        orjson.loads(payload)
    parse = time.perf_counter() - started

    states: dict[str, UserState] = {}
    started = time.perf_counter()
    for offset, event in enumerate(EVENTS):
        state = states.get(event.user_id)
        if state is None:
            state = states[event.user_id] = UserState()
        apply_event(state, event, offset)
    updates = time.perf_counter() - started
    bench("core.json_parse_per_s", _rate(len(PAYLOADS), parse), unit="events/s (reference)")
    bench("core.feature_updates_per_s", _rate(len(EVENTS), updates), unit="events/s", reference="core.json_parse_per_s")


def test_core_pipeline(bench: Any) -> None:
    """Decode + state + micro-batched scoring + policy, batches of 2,000 events, no Kafka."""
    model = ChurnModel(BUNDLED_MODEL, device="cpu").load()
    policy = Settings.load({}).policy
    blobs: dict[bytes, bytes] = {}
    batch_size = 2000
    started = time.perf_counter()
    for start in range(0, len(PAYLOADS), batch_size):
        by_user: dict[bytes, list[tuple[Event, int]]] = {}
        for offset in range(start, min(start + batch_size, len(PAYLOADS))):
            event = decode_event(PAYLOADS[offset])
            if isinstance(event, Event):
                by_user.setdefault(event.user_id.encode(), []).append((event, offset))
        keys, states, now = [], [], []
        for key, items in by_user.items():
            raw = blobs.get(key)
            state = load_state(raw) if raw is not None else UserState()
            for event, offset in items:
                apply_event(state, event, offset)
            keys.append(key)
            states.append(state)
            now.append(state.last_seen_ms)
        features = build_features(states, now)
        risks = model.score_many(features)
        finish_batch(
            [k.decode() for k in keys], states, now, features, risks, model_version=model.version, config=policy
        )
        for key, state in zip(keys, states):
            blobs[key] = dump_state(state)
    elapsed = time.perf_counter() - started
    bench("core.events_per_s", _rate(len(PAYLOADS), elapsed), unit="events/s", reference="core.json_parse_per_s")
