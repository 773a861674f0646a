"""The worker's HTTP views on Faust's aiohttp app, in process: the token guard on /users/ and /circuit/."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.exceptions import SameNode
from prometheus_client import CollectorRegistry

from retention_model.events import Event, EventType
from retention_model.features.state import UserState, apply_event, dump_state
from streams import metrics as metrics_module
from streams.processor import BatchProcessor
from streams.settings import Settings
from streams.web import add_views

T0 = 1_735_689_600_000
TOKEN = "s3cret-token"


class RiskyModel:
    """Stands in for ChurnModel (the views never score)."""

    version = "m-test"
    recommendations_ = None
    device = "cpu"
    meta_ = None
    device_name_ = None


def _app(token: str) -> tuple[faust.App, BatchProcessor]:
    settings = Settings.load({}, {"broker": "127.0.0.1:1", "partitions": 2, "app_id": "t-web"})
    app = faust.App(settings.app_id, broker="kafka://127.0.0.1:1", store="memory://")
    made = BatchProcessor(app, settings, RiskyModel(), metrics_module.create(CollectorRegistry()))  # type: ignore[arg-type]
    add_views(app, made, state_api=True, token=token)

    async def here(*args: Any, **kwargs: Any) -> None:
        raise SameNode()  # one worker owns every key (no consumer group runs here)

    app.router.route_req = here  # type: ignore[method-assign]
    state = UserState()
    apply_event(state, Event("e1", "u1", EventType.VIEW, T0), 0)
    made.tables.table.data.data[b"u1"] = dump_state(state)
    return app, made


@pytest.fixture
def guarded_app() -> Iterator[faust.App]:
    app, made = _app(TOKEN)
    try:
        yield app
    finally:
        made.output.close(timeout_s=0.1)
        made.models.executor.shutdown()


def _requests(app: faust.App, calls: list[tuple[str, str, dict[str, str]]]) -> list[tuple[int, str]]:
    async def main() -> list[tuple[int, str]]:
        out = []
        async with TestClient(TestServer(app.web.web_app)) as client:
            for method, path, headers in calls:
                response = await client.request(method, path, headers=headers)
                out.append((response.status, await response.text()))
        return out

    return asyncio.run(main())


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}],
    ids=["none", "wrong", "not-bearer", "empty"],
)
def test_without_the_right_token_every_view_answers_401_and_no_data(guarded_app: faust.App, headers: dict) -> None:
    answers = _requests(
        guarded_app, [("GET", "/users/u1/", headers), ("GET", "/circuit/", headers), ("POST", "/circuit/", headers)]
    )
    assert [status for status, _ in answers] == [401, 401, 401]
    assert all("u1" not in body and "features" not in body and "open" not in body for _, body in answers)
    assert all(TOKEN not in body for _, body in answers)


def test_with_the_token_the_views_answer(guarded_app: faust.App) -> None:
    right = {"Authorization": f"Bearer {TOKEN}"}
    (user, missing, circuit, closed) = _requests(
        guarded_app,
        [
            ("GET", "/users/u1/", right),
            ("GET", "/users/nobody/", right),
            ("GET", "/circuit/", right),
            ("POST", "/circuit/", right),
        ],
    )
    assert user[0] == 200 and '"user_id":"u1"' in user[1]
    assert missing[0] == 404
    assert circuit[0] == 200 and '"open":false' in circuit[1]
    assert closed[0] == 200


def test_without_a_token_set_the_views_are_open() -> None:
    app, made = _app("")
    try:
        (user,) = _requests(app, [("GET", "/users/u1/", {})])
    finally:
        made.output.close(timeout_s=0.1)
        made.models.executor.shutdown()
    assert user[0] == 200
