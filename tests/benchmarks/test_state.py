"""State benchmarks: a million users in the memory store and in RocksDB.

Run last (this file sorts after the others): building and freeing two million-user
stores leaves the kernel reclaiming gigabytes, which should not land on the latency
figures of the benchmarks after it.
"""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retention_model.features.state import UserState, apply_event, dump_state
from tests.benchmarks.test_core import EVENTS, _rate  # the first user's events seed every state below


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _million_blobs() -> Iterator[tuple[bytes, bytes]]:
    """1M users' state blobs, each a real state after a dozen events (varied by user)."""
    per_user = [e for e in EVENTS if e.user_id == EVENTS[0].user_id][:12]
    for i in range(1_000_000):
        state = UserState()
        for offset, event in enumerate(per_user[: 6 + i % 7]):
            apply_event(state, event, offset)
        yield f"user-{i:07d}".encode(), dump_state(state)


def test_state_for_a_million_users(bench: Any) -> None:
    """Serialised state per user and process memory holding 1M users (the memory store keeps blobs)."""
    gc.collect()
    before = _rss_mb()
    store: dict[bytes, bytes] = {}
    sizes = np.empty(1_000_000, dtype=np.int32)
    for i, (key, blob) in enumerate(_million_blobs()):
        sizes[i] = len(blob)
        store[key] = blob
    gc.collect()
    after = _rss_mb()
    bench("state.bytes_per_user", float(sizes.mean()), unit="bytes (serialised; target <= 1024)")
    bench("state.rss_mb_1m_users", after - before, unit="MB added for 1M users (memory store holds blobs)")
    assert sizes.max() <= 1024
    keys = [f"user-{i:07d}".encode() for i in np.random.default_rng(1).integers(0, 1_000_000, 200_000)]
    started = time.perf_counter()
    for key in keys:
        store[key]
    bench("state.memory_reads_per_s", _rate(len(keys), time.perf_counter() - started), unit="random reads/s")


def test_rocksdb_store_for_a_million_users(bench: Any, tmp_path: Path) -> None:
    """The same 1M users in RocksDB (rocksdict, what Faust's rocksdb:// store uses): memory, disk, speed.

    Reference: the memory store's figures from ``test_state_for_a_million_users``.
    Faust's RocksDB store also keeps a Python dict from key to partition, which is
    not counted here (about 100 bytes per key).
    """
    rocksdict = pytest.importorskip("rocksdict", reason="install the rocksdb extra")
    gc.collect()
    before = _rss_mb()
    db = rocksdict.Rdict(str(tmp_path / "users"))
    writes = 0.0
    clock = time.perf_counter
    for key, blob in _million_blobs():
        started = clock()
        db[key] = blob
        writes += clock() - started
    started = clock()
    db.flush()
    writes += clock() - started
    gc.collect()
    rss = _rss_mb() - before
    keys = [f"user-{i:07d}".encode() for i in np.random.default_rng(1).integers(0, 1_000_000, 200_000)]
    started = time.perf_counter()
    for key in keys:
        db[key]
    reads = time.perf_counter() - started
    db.close()
    disk = sum(f.stat().st_size for f in (tmp_path / "users").rglob("*") if f.is_file()) / 2**20
    bench("state.rocksdb_writes_per_s", _rate(1_000_000, writes), unit="writes/s")
    bench(
        "state.rocksdb_reads_per_s",
        _rate(len(keys), reads),
        unit="random reads/s",
        reference="state.memory_reads_per_s",
    )
    bench(
        "state.rocksdb_rss_mb_1m_users",
        rss,
        unit="MB added (block cache and memtables)",
        reference="state.rss_mb_1m_users",
    )
    bench("state.rocksdb_disk_mb_1m_users", disk, unit="MB on disk")
