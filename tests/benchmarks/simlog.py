"""A large simulated event log written in user shards, so generating it never holds the whole log.

:func:`write_simulated_log` writes exactly what ``retention simulate --out LOG.jsonl``
writes for the same users, days and seed (one JSONL record per event, merged in event
time), but simulates ``shard_users`` users at a time into sorted shard files and merges
those: memory stays at one shard's events, where ``simulate`` holds every event.

Run as a script to build (or reuse) the training benchmark's log::

    python -m tests.benchmarks.simlog --users 41200 --days 240 --seed 7 --out data/bench/sim.jsonl
"""

from __future__ import annotations

import argparse
import heapq
import os
import tempfile
from pathlib import Path

import numpy as np

from retention_model.events import encode_event
from training.simulator import SimConfig, _user_events

__all__ = ["write_simulated_log"]

#: Event times in the shard files lead each line with this many digits (epoch ms fits 13).
_TS_DIGITS = 15


def write_simulated_log(
    path: str | Path, *, users: int, days: int, seed: int, shard_users: int = 4000, limit: int | None = None
) -> int:
    """Write the simulation's events as JSONL to ``path``; returns the event count.

    Shards already on disk (``path``.shard-N) are kept, so an interrupted run resumes;
    ``limit`` writes at most that many new shards (and returns 0 until every shard
    exists): a long generation taken in short turns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = SimConfig(users=users, days=days, seed=seed)
    # The per-user seeds exactly as simulate_users draws them.
    seeds = np.random.default_rng(seed).integers(0, 2**63 - 1, size=users)
    shards = []
    for index, start in enumerate(range(0, users, shard_users)):
        shard = path.with_name(f"{path.name}.shard-{index}")
        shards.append(shard)
        if shard.exists():
            continue
        if limit is not None:
            if limit <= 0:
                continue
            limit -= 1
        per_user = [
            _user_events(uid, config, np.random.default_rng(int(seeds[uid])))[0]
            for uid in range(start, min(users, start + shard_users))
        ]
        tmp = shard.with_name(shard.name + ".tmp")
        with tmp.open("wb") as handle:
            for event in heapq.merge(*per_user, key=lambda e: e.ts_ms):
                handle.write(b"%0*d %s\n" % (_TS_DIGITS, event.ts_ms, encode_event(event)))
        os.replace(tmp, shard)
        del per_user
    if not all(s.exists() for s in shards):
        return 0
    # heapq.merge is stable: on equal times the earlier shard (the lower user) comes first,
    # which is the order simulate()'s merge of every user gives.
    count = 0
    handles = [s.open("rb") for s in shards]
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, delete=False) as out:
            for line in heapq.merge(*handles, key=lambda line: line[:_TS_DIGITS]):
                out.write(line[_TS_DIGITS + 1 :])
                count += 1
        os.chmod(out.name, 0o644)  # (a named temporary file is private)
        os.replace(out.name, path)
    finally:
        for handle in handles:
            handle.close()
    for shard in shards:
        shard.unlink()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--days", type=int, default=240)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shard-users", type=int, default=4000)
    parser.add_argument("--limit", type=int, help="write at most this many new shards")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    n = write_simulated_log(
        args.out,
        users=args.users,
        days=args.days,
        seed=args.seed,
        shard_users=args.shard_users,
        limit=args.limit,
    )
    print(f"wrote {n} events to {args.out}" if n else "shards written; merge pending")


if __name__ == "__main__":
    main()
