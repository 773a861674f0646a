# ruff: noqa
"""Experiment (issue 15, NOTES entry 36): the columnar Numba fold against apply_event, stage by stage.

    PYTHONPATH=. python tests/benchmarks/profile_fold_columnar.py

Folds the core benchmark's log in batches of 2,000 both ways, checks the states equal,
and prints µs per event for building the columns, gathering the state into arrays, the
compiled loop, scattering back, the string-keyed part in Python, and apply_event.
"""

from __future__ import annotations

import gc
import time

import numpy as np

from retention_model.features.state import UserState, apply_event
from retention_model.features.state import columnar as C
from tests.benchmarks.test_core import EVENTS

C.warm_up()
events = EVENTS
gc.freeze()
T = dict.fromkeys(["columns", "gather", "loop", "scatter", "profile", "ref"], 0.0)
ref = {}
col = {}
for start in range(0, len(events), 2000):
    chunk = {}
    for off in range(start, min(start + 2000, len(events))):
        e = events[off]
        chunk.setdefault(e.user_id, []).append((e, off))
    keys = list(chunk)
    t = time.perf_counter()
    for k in keys:
        s = ref.setdefault(k, UserState())
        for e, o in chunk[k]:
            apply_event(s, e, o)
    T["ref"] += time.perf_counter() - t
    states = [col.setdefault(k, UserState()) for k in keys]
    evs = [chunk[k] for k in keys]
    t0 = time.perf_counter()
    flat = []
    rows = []
    for row, k in enumerate(keys):
        flat.extend(evs[row])
        rows.extend([row] * len(evs[row]))
    columns = C._columns(flat, rows)
    t1 = time.perf_counter()
    arrays = C._gather(states)
    t2 = time.perf_counter()
    outcome = np.zeros(len(flat), dtype=np.int64)
    order_number = np.zeros(len(flat), dtype=np.int64)
    C._fold_loop(
        *columns, C._SIGNAL_START, C._SIGNAL_COUNT, C._SIGNAL_TABLE, C._HALF_LIVES, 2.0, *arrays, outcome, order_number
    )
    t3 = time.perf_counter()
    C._scatter(states, arrays)
    t4 = time.perf_counter()
    codes = outcome.tolist()
    numbers = order_number.tolist()
    pos = 0
    for u, k in enumerate(keys):
        for (event, _), code, number in zip(evs[u], codes[pos : pos + len(evs[u])], numbers[pos : pos + len(evs[u])]):
            if code == 0:
                C._profile(states[u], event, number)
        pos += len(evs[u])
    t5 = time.perf_counter()
    for name, dt in zip(
        ["columns", "gather", "loop", "scatter", "profile"], [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]
    ):
        T[name] += dt
print("equal", all(ref[k] == col[k] for k in ref))
for k, v in T.items():
    print(f"{k:8s} {1e6 * v / len(events):.2f} us/ev")
