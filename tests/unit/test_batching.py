"""Micro-batch sizing against a latency target, and splitting a fetched batch to size."""

from __future__ import annotations

from collections import namedtuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.batch_size import AdaptiveBatchSize
from streams.batching import split_batch

TP = namedtuple("TP", "topic partition")
Record = namedtuple("Record", "offset")


def test_cap_grows_while_full_batches_fit_and_shrinks_on_overrun() -> None:
    sizer = AdaptiveBatchSize(latency_target_s=0.1, max_size=8192, max_wait_s=0.05)
    assert sizer.size == 8192 and sizer.budget_s == pytest.approx(0.05)
    assert sizer.queue_delay_s == pytest.approx(0.025)  # a quarter of the target, below max_wait
    sizer.observe(8192, 0.4)  # 50 us per event: far over budget
    assert sizer.size == int(8192 * 0.7)
    # A simulated worker: 5 ms fixed per batch plus 40 us per event. The largest
    # batch inside the 50 ms budget holds 1,125 events; the cap must settle near it.
    for _ in range(60):
        n = sizer.size
        sizer.observe(n, 0.005 + 40e-6 * n)
    assert 0.7 * 1125 * 0.7 <= sizer.size <= 1125
    assert 0.005 + 40e-6 * sizer.size <= sizer.budget_s


def test_partial_batches_do_not_grow_the_cap() -> None:
    sizer = AdaptiveBatchSize(latency_target_s=0.1, max_size=4096, max_wait_s=0.05)
    sizer.observe(4096, 0.2)
    shrunk = sizer.size
    for _ in range(20):
        sizer.observe(10, 0.001)  # light load: small batches say nothing about big ones
    assert sizer.size == shrunk


def test_cap_stays_within_bounds_and_settings_are_checked() -> None:
    sizer = AdaptiveBatchSize(latency_target_s=0.01, max_size=500, max_wait_s=1.0, min_size=64)
    for _ in range(50):
        sizer.observe(sizer.size, 10.0)
    assert sizer.size == 64
    with pytest.raises(ValueError, match="latency_target_s"):
        AdaptiveBatchSize(latency_target_s=0, max_size=10, max_wait_s=1)
    with pytest.raises(ValueError, match="max_size"):
        AdaptiveBatchSize(latency_target_s=1, max_size=0, max_wait_s=1)


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=6),
    size=st.integers(min_value=1, max_value=200),
)
def test_split_batch_takes_size_records_in_order_and_keeps_the_rest(sizes: list[int], size: int) -> None:
    pending = {TP("events", p): [Record(o) for o in range(n)] for p, n in enumerate(sizes)}
    batch, rest = split_batch(pending, size)
    taken = sum(len(r) for r in batch.values())
    assert taken == min(size, sum(sizes))
    for tp, records in pending.items():
        # Per partition, the batch holds a prefix and the rest the suffix: nothing lost, order kept.
        assert batch.get(tp, []) + rest.get(tp, []) == records
        assert all(batch[tp] for tp in batch) and all(rest[tp] for tp in rest)


def test_undelivered_outputs_fail_the_batch_instead_of_passing_silently() -> None:
    """A batch whose records the broker never took must not have its offsets acknowledged."""
    import asyncio

    from streams.kafka import free_port
    from streams.output import DeliveryFailedError, OutputProducer
    from streams.settings import Settings

    settings = Settings.load({}, {"broker": f"127.0.0.1:{free_port()}"})  # nothing listens there
    output = OutputProducer(settings, **{"message.timeout.ms": 500})

    async def one_batch() -> None:
        delivery = output.begin()
        output.produce("retention.scores", b"u1", b"{}")
        output.produce_many("retention.decisions", [(b"u1", b"{}"), (b"u2", b"{}")])
        delivery.seal()
        assert not delivery.done.done()  # three records out, none delivered
        await delivery.wait(timeout_s=5)

    with pytest.raises(DeliveryFailedError, match="3 record\\(s\\) not delivered"):
        asyncio.run(one_batch())
    output.close(timeout_s=1)


def test_an_empty_batch_is_delivered_at_once() -> None:
    """A batch that wrote nothing (all events ignored or late) must not wait for a delivery report that never comes."""
    import asyncio
    import time

    from streams.output import OutputProducer
    from streams.settings import Settings

    output = OutputProducer(Settings.load({}, {"broker": "127.0.0.1:1"}))  # nothing listens: no report could come

    async def empty() -> tuple[bool, float | None, float, float]:
        delivery = output.begin()
        before = time.time()
        delivery.seal()
        resolved_on_seal = delivery.done.done()  # before the loop runs anything else
        await delivery.wait(timeout_s=1)
        return resolved_on_seal, delivery.delivered_at, before, time.time()

    resolved_on_seal, delivered_at, before, after = asyncio.run(empty())
    output.close(timeout_s=1)
    assert resolved_on_seal
    assert delivered_at is not None and before <= delivered_at <= after  # stamped at the seal, for the latency


def test_delivery_time_is_when_the_broker_took_the_last_record_not_when_the_loop_noticed() -> None:
    """Latency is charged up to the broker's acknowledgement, even if the loop is busy then."""
    import asyncio
    import threading
    import time

    from streams.output import BatchDelivery

    async def busy_loop() -> tuple[float, float, float]:
        delivery = BatchDelivery(asyncio.get_running_loop())
        delivery._added(2)
        delivery.seal()
        report = threading.Thread(target=lambda: [delivery.on_delivery(None, None) for _ in range(2)])
        report.start()
        report.join()
        acked = time.time()
        assert delivery.delivered_at is not None and not delivery.done.done()
        time.sleep(0.2)  # the loop is busy with the next batch; the report waits for it
        await delivery.wait(timeout_s=1)
        return delivery.delivered_at, acked, time.time()

    delivered_at, acked, noticed = asyncio.run(busy_loop())
    assert delivered_at <= acked < noticed - 0.15


def test_a_batch_waits_from_when_its_oldest_event_was_produced() -> None:
    """Events that reached the worker late close their batch sooner; a clock ahead cannot hold it."""
    import time

    from streams.batching import _produced_s, _waited

    Stamped = namedtuple("Stamped", "timestamp")
    arrived = time.monotonic()
    produced_long_ago = time.time() - 0.5
    assert _waited(arrived, produced_long_ago) >= 0.5
    producer_clock_ahead = time.time() + 60
    assert 0.0 <= _waited(arrived - 0.03, producer_clock_ahead) < 1.0  # the drain's own wait counts
    assert _produced_s(Stamped(1_700_000_000_000)) == 1_700_000_000.0
    assert abs(_produced_s(Stamped(-1)) - time.time()) < 1.0  # no timestamp: as if produced now
    assert abs(_produced_s(Stamped(None)) - time.time()) < 1.0
