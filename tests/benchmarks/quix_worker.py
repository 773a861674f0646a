"""Quix Streams doing (part of) our job: the peer a user would pick instead of our worker.

``noop``: ``sdf.update`` with an empty function over the raw bytes (Quix's own ceiling).
``state``: the events decoded as JSON (Quix's default) and a per-key state update (a
count and the last event time, in the RocksDB store with its changelog topic).
``naive``: our job written the obvious Quix way, as ``naive_worker.py`` writes it for
Faust: per event, decode with the project's decoder, read the user's state from Quix's
store, fold the event, one model call through the project's scorer (``score_one``),
the policy, and write the state back.

It processes ``COUNT`` events from the start of ``TOPIC``, or stops once ``WINDOW``
seconds have passed since the first, and prints one JSON line: the events and seconds
from the first processed event to the last (group join and recovery excluded, as the
Faust references exclude them).

    python tests/benchmarks/quix_worker.py BROKER TOPIC GROUP noop|state|naive COUNT WINDOW STATE_DIR
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from quixstreams import Application, message_context

__all__ = ["main"]


def main(broker: str, topic_name: str, group: str, mode: str, count: int, window_s: float, state_dir: str) -> None:
    app = Application(
        broker_address=broker,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        # Tansu answers a JoinGroup only after half the session timeout (broker notes).
        consumer_extra_config={"session.timeout.ms": 2000, "heartbeat.interval.ms": 500},
    )
    deserializer = "json" if mode == "state" else "bytes"
    topic = app.topic(topic_name, key_deserializer="bytes", value_deserializer=deserializer)
    sdf = app.dataframe(topic)
    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def tick() -> None:
        n = seen["n"] = seen["n"] + 1
        if n == 1:
            seen["first"] = time.perf_counter()
        elif n == count or (n % 1000 == 0 and time.perf_counter() - seen["first"] > window_s):
            seen["last"] = time.perf_counter()
            app.stop()

    if mode == "noop":

        def noop(value: Any) -> None:
            tick()

        sdf = sdf.update(noop)
    elif mode == "state":

        def per_key(value: Any, state: Any) -> None:
            state.set("events", state.get("events", 0) + 1)
            state.set("last_ts_ms", value.get("ts_ms"))
            tick()

        sdf = sdf.update(per_key, stateful=True)
    elif mode == "naive":
        sdf = sdf.update(_naive_update(tick), stateful=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}: noop, state or naive")
    app.run(sdf)
    elapsed = seen["last"] - seen["first"] if seen["last"] else 0.0
    print(json.dumps({"mode": mode, "events": seen["n"], "seconds": elapsed}), flush=True)


def _naive_update(tick: Any) -> Any:
    from retention_model.events import Event, decode_event
    from retention_model.features.derive import feature_vector
    from retention_model.features.state import UserState, apply_event, dump_state, load_state
    from retention_model.model.scorer import ChurnModel
    from retention_model.policy.policy import PolicyConfig, decide
    from streams.settings import BUNDLED_MODEL

    model = ChurnModel(BUNDLED_MODEL, device="cpu").load()
    policy = PolicyConfig()

    def naive(value: bytes, state: Any) -> None:
        tick()
        decoded = decode_event(value)
        if not isinstance(decoded, Event):
            return
        raw = state.get("user")  # Quix's store keeps JSON: the state blob as a latin-1 string
        user = load_state(raw.encode("latin-1")) if raw is not None else UserState()
        apply_event(user, decoded, message_context().offset)
        risk = model.score_one(feature_vector(user, user.last_seen_ms))
        decide(
            user_id=decoded.user_id,
            risk=risk,
            state=user,
            now_ms=user.last_seen_ms,
            model_version=model.version,
            reasons=[],
            profile={},
            config=policy,
        )
        state.set("user", dump_state(user).decode("latin-1"))

    return naive


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), sys.argv[7])
