"""The decoded-state cache: used only while the store holds what it wrote; never half-folded; forgets the erased."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from retention_model.events import EventType
from retention_model.features.state import UserState, apply_event, dump_state, load_state
from retention_model.pipeline import BatchPipeline, Inference, MemoryStores, ModelCall, PipelineConfig
from retention_model.pipeline.erase import erase_request
from retention_model.pipeline.records import Record
from retention_model.pipeline.state_cache import StateCache
from tests.unit.test_pipeline import LIMITS, POLICY, T0, WALL, ev, rec


def pipeline_over(stores: MemoryStores, cache_users: int = 100) -> BatchPipeline:
    config = PipelineConfig(POLICY, partitions=1, limits=LIMITS, replay=True, state_cache_users=cache_users)
    return BatchPipeline(config, stores, clock=lambda: WALL)


async def _risks(features: np.ndarray) -> Inference:
    return Inference(np.full(len(features), 0.5))


async def _fails(features: np.ndarray) -> Inference:
    raise RuntimeError("the model call failed")


def run(pipeline: BatchPipeline, records: list[Record], infer: Any = _risks) -> Any:
    return asyncio.run(pipeline.process({0: records}, ModelCall(infer, "m-test")))


def stored(stores: MemoryStores, user: bytes) -> UserState:
    raw = stores(0).states.get_many([user])[0]
    assert raw is not None
    return load_state(raw)


def test_an_active_user_is_taken_from_the_cache_and_ends_as_if_decoded() -> None:
    cached, plain = MemoryStores(), MemoryStores()
    with_cache, without = pipeline_over(cached), pipeline_over(plain, cache_users=0)
    for offset in range(6):
        batch = [rec(ev("a", EventType.VIEW, T0 + offset * 1000, item_id=f"i{offset}", category="c1"), offset)]
        run(with_cache, batch)
        run(without, batch)
    assert with_cache.cache.hits == 5 and with_cache.cache.misses == 0
    assert without.cache.hits == 0 and len(without.cache) == 0
    assert cached(0).states.data == plain(0).states.data  # type: ignore[attr-defined]


def test_a_state_written_behind_the_cache_is_read_from_the_store() -> None:
    """Changelog recovery or another worker wrote the key: the store is the truth."""
    stores = MemoryStores()
    pipeline = pipeline_over(stores)
    run(pipeline, [rec(ev("a", EventType.PURCHASE, T0, price=30.0, order_id="o1"), 0)])
    other = UserState()
    apply_event(other, ev("a", EventType.VIEW, T0 - 5000), 7)
    stores(0).states.put_many([(b"a", dump_state(other))])

    run(pipeline, [rec(ev("a", EventType.SEARCH, T0 + 1000), 8)])

    state = stored(stores, b"a")
    assert state.first_seen_ms == T0 - 5000 and state.totals[5] == 0  # the store's history, no purchase
    assert pipeline.cache.hits == 0


def test_a_failed_batch_leaves_no_half_folded_state_for_its_retry() -> None:
    stores = MemoryStores()
    pipeline = pipeline_over(stores)
    run(pipeline, [rec(ev("a", EventType.VIEW, T0), 0)])
    retry = [rec(ev("a", EventType.PURCHASE, T0 + 1000, price=20.0, order_id="o1"), 1)]
    with pytest.raises(RuntimeError):
        run(pipeline, retry, _fails)

    result = run(pipeline, retry)  # the records are read again after the failure

    assert result.counts.outcomes[EventType.PURCHASE, "applied"] == 1
    assert stored(stores, b"a").totals[5] == 1


def test_an_erased_user_leaves_the_cache() -> None:
    stores = MemoryStores()
    pipeline = pipeline_over(stores)
    run(pipeline, [rec(ev("a", EventType.VIEW, T0), 0), rec(ev("b", EventType.VIEW, T0), 1)])
    assert len(pipeline.cache) == 2
    request = erase_request("a", request_id="r1", requested_ms=T0 + 1)
    run(pipeline, [Record(b"a", request, 2, None)])
    assert len(pipeline.cache) == 1
    pipeline.forget()
    assert len(pipeline.cache) == 0


def test_the_least_recently_written_leave_first() -> None:
    cache = StateCache(capacity=2)
    blobs = {key: dump_state(UserState()) for key in (b"a", b"b", b"c")}
    cache.keep([(b"a", blobs[b"a"], UserState()), (b"b", blobs[b"b"], UserState())])
    cache.keep([(b"a", blobs[b"a"], UserState()), (b"c", blobs[b"c"], UserState())])  # a written again, then c
    assert len(cache) == 2
    cache.load(b"b", blobs[b"b"])
    cache.load(b"a", blobs[b"a"])
    assert (cache.hits, cache.misses) == (1, 1)  # b had left, a was kept
