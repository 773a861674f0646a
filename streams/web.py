"""The worker's HTTP endpoints on Faust's web server: one user's state, and the circuit breaker."""

from __future__ import annotations

import logging
from typing import Any

import faust

from retention_model.events import DecodeError, parse_timestamp_ms
from retention_model.features.state import load_state
from retention_model.scoring import describe_user
from streams.processor import BatchProcessor

__all__ = ["add_views"]

log = logging.getLogger(__name__)


def add_views(app: faust.App, processor: BatchProcessor, *, state_api: bool) -> None:
    """``GET /users/{user_id}/`` (with ``state_api``), ``GET`` and ``POST /circuit/``."""
    table = processor.tables.table
    if state_api:

        @app.page("/users/{user_id}/")
        @app.table_route(table=table, match_info="user_id")
        async def user_view(web: Any, request: Any, user_id: str) -> Any:
            raw = table.get(user_id.encode())
            if raw is None:
                return web.json({"user_id": user_id, "error": "no state for this user on this cluster"}, status=404)
            as_of = request.query.get("as_of")
            as_of_ms = None
            if as_of is not None:
                parsed = parse_timestamp_ms(int(as_of) if as_of.isdigit() else as_of)
                if isinstance(parsed, DecodeError):
                    return web.json({"error": f"as_of: {parsed.detail}"}, status=400)
                as_of_ms = parsed
            return web.json(describe_user(user_id, load_state(raw), as_of_ms))

    @app.page("/circuit/")
    class CircuitView(faust.web.View):
        """The intervention circuit breaker: GET its state, POST to close it (``retention circuit close``)."""

        async def get(self, request: Any) -> Any:
            return self.json({"replay": processor.replay, **processor.breaker.status()})

        async def post(self, request: Any) -> Any:
            was_open = processor.breaker.is_open
            processor.breaker.close()
            processor.report_breaker()
            if was_open:
                log.warning("circuit breaker closed by an operator")
            return self.json({"replay": processor.replay, **processor.breaker.status()})
