"""The worker's HTTP endpoints on Faust's web server: one user's state, and the circuit breaker.

Both answer only a request that carries the API token (``RETENTION_API_TOKEN``)
when one is set: ``/users/{id}/`` serves personal data and ``POST /circuit/``
changes what the worker sends. The check runs before Faust forwards a user
request to the worker that owns the user, so a request without the token never
leaves the worker it reached. ``/metrics`` is served elsewhere and stays open.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from retention_model.events import DecodeError, parse_timestamp_ms
from retention_model.features.state import load_state
from retention_model.scoring import describe_user
from streams.access import authorised
from streams.processor import BatchProcessor

__all__ = ["add_views", "denied", "guarded"]

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]


def denied(web: Any, request: Any, token: str) -> Any | None:
    """A 401 response when ``request`` lacks the token (None when it may pass); the token is never logged."""
    if authorised(request.headers.get("Authorization"), token):
        return None
    log.info("refused %s %s: no valid bearer token", request.method, request.rel_url.path)
    return web.json(
        {"error": "this endpoint needs Authorization: Bearer <RETENTION_API_TOKEN>"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="retention"'},
    )


def guarded(token: str) -> Callable[[Handler], Handler]:
    """Wrap a view handler ``(view, request, ...)`` so that it runs only for a request with the token."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(view: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            refusal = denied(view, request, token)
            if refusal is not None:
                return refusal
            return await handler(view, request, *args, **kwargs)

        return checked

    return wrap


def add_views(app: faust.App, processor: BatchProcessor, *, state_api: bool, token: str = "") -> None:
    """``GET /users/{user_id}/`` (with ``state_api``), ``GET`` and ``POST /circuit/``; with ``token``, guarded."""
    table = processor.tables.table
    guard = guarded(token)
    if state_api:

        @app.page("/users/{user_id}/")
        @guard  # outermost: checked before table_route forwards the request to the user's owner
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

        @guard
        async def get(self, request: Any) -> Any:
            return self.json({"replay": processor.replay, **processor.breaker.status()})

        @guard
        async def post(self, request: Any) -> Any:
            was_open = processor.breaker.is_open
            processor.breaker.close()
            processor.report_breaker()
            if was_open:
                log.warning("circuit breaker closed by an operator")
            return self.json({"replay": processor.replay, **processor.breaker.status()})
