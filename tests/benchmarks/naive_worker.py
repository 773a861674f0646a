"""The same job written the obvious Faust way, as the reference for the e2e benchmark.

``naive``: one event at a time, a table read and write and a model call per event
(``model.score_one``, the fast path, not ``model.predict``). ``noop``: an agent with an
empty body, Faust's own per-event ceiling.

    python tests/benchmarks/naive_worker.py BROKER TOPIC GROUP naive|noop WEB_PORT
"""

from __future__ import annotations

import sys
from typing import Any

import faust

from retention_model.events import Event, decode_event
from retention_model.features.derive import feature_vector
from retention_model.features.state import UserState, apply_event, dump_state, load_state
from retention_model.model.scorer import ChurnModel
from retention_model.policy.policy import PolicyConfig, decide
from streams.settings import BUNDLED_MODEL


def main(broker: str, topic_name: str, group: str, mode: str, web_port: int) -> None:
    app = faust.App(
        group,
        broker=f"kafka://{broker}",
        store="memory://",
        datadir=f"/tmp/{group}-data",  # not the repository root
        web_port=web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        broker_session_timeout=2,
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=2,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        topic_partitions=4,
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    table = app.Table("naive-state", default=None, key_type=bytes, value_type=bytes, partitions=4)
    model = ChurnModel(BUNDLED_MODEL, device="cpu").load() if mode == "naive" else None
    policy = PolicyConfig()

    @app.agent(topic)
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            if model is None:
                continue
            decoded = decode_event(event.value)
            if not isinstance(decoded, Event):
                continue
            key = event.key
            raw = table.get(key)
            state = load_state(raw) if raw is not None else UserState()
            apply_event(state, decoded, event.message.offset)
            risk = model.score_one(feature_vector(state, state.last_seen_ms))
            decide(
                user_id=decoded.user_id,
                risk=risk,
                state=state,
                now_ms=state.last_seen_ms,
                model_version=model.version,
                reasons=[],
                profile={},
                config=policy,
            )
            table[key] = dump_state(state)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
