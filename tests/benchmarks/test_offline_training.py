"""Training at scale: ``retention train`` on a large simulated log, its time and peak memory.

The log is ``BENCH_TRAIN_USERS`` simulated users (default 41,200: about 10.1M events,
~1.5 GB of JSONL, the size issue 20 names) over 240 days, seed 7. It is generated
once by :mod:`tests.benchmarks.simlog` and kept under ``$BENCH_DATA`` (default
``data/bench/``, ignored by git) for the next run; a smaller size for a quick check:
``BENCH_TRAIN_USERS=1000`` (about 243 events per user). The command runs as a
subprocess, whose own peak RSS (``wait4``) is the memory figure. Targets (issue 20):
at most 10 minutes and 4 GB for the 10M-event log.

References from the same run: one read of the log (decode and summarise, the pass the
command makes twice) for the rate, and the peak RSS of a process that only imports
what ``retention train`` imports (TensorFlow included) for the memory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.benchmarks.simlog import write_simulated_log
from training.replay import EventLog, summarise

USERS = int(os.environ.get("BENCH_TRAIN_USERS", "41200"))
DAYS = 240
SEED = 7
DATA = Path(os.environ.get("BENCH_DATA", "data/bench"))

_STAMP = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO training\.train: rows and filters", re.MULTILINE)


def _run(command: list[str], output: Path) -> tuple[int, float, float]:
    """Exit code, seconds and peak RSS (MB) of one subprocess, its output into ``output``."""
    started = time.time()
    with output.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, not the session's largest child
    return os.waitstatus_to_exitcode(status), time.time() - started, usage.ru_maxrss / 1024


def test_train_on_a_large_simulated_log(bench: Any, tmp_path: Path) -> None:
    log = DATA / f"sim-u{USERS}-d{DAYS}-s{SEED}.jsonl"
    if not log.exists():
        write_simulated_log(log, users=USERS, days=DAYS, seed=SEED)

    started = time.perf_counter()
    summary = summarise(EventLog(log))
    read_s = time.perf_counter() - started

    imports = "import tensorflow, streams.commands.train, training.train"
    code, _, runtime_mb = _run([sys.executable, "-c", imports], tmp_path / "imports.txt")
    assert code == 0, (tmp_path / "imports.txt").read_text()[-3000:]

    retention = Path(sys.executable).with_name("retention")
    command = [str(retention), "train", "--events", str(log), "--registry", str(tmp_path / "r"), "--seed", "42"]
    progress = DATA / "train-output.txt"  # the command's output as it runs (tail -f it)
    started_at = time.time()
    code, seconds, peak_mb = _run(command, progress)
    output = progress.read_bytes()
    assert code == 0, output[-3000:].decode(errors="replace")

    meta = json.loads(next((tmp_path / "r").glob("*/bundle.json")).read_text())
    events = meta["training_data"]["events"]
    assert events == summary.events
    rows = meta["training_data"]["rows"]
    bench("train.events", events, unit=f"events in the log ({USERS:,} users, {DAYS} days)")
    bench("train.read_events_per_s", events / read_s, unit="events/s, one read of the log (reference)")
    bench("train.seconds", seconds, unit="s, whole command (target <= 600 at 10M events)")
    bench("train.events_per_s", events / seconds, unit="events/s, whole command", reference="train.read_events_per_s")
    bench("train.runtime_rss_mb", runtime_mb, unit="MB, peak RSS of the command's imports alone (reference)")
    bench(
        "train.peak_rss_mb",
        peak_mb,
        unit="MB, the command's peak RSS (target <= 4096)",
        reference="train.runtime_rss_mb",
    )
    bench("train.fit_rows", rows["fit"] + rows["calibration"], unit="rows the shipped model was fitted on")
    # Up to the first log line after the rows are built: both reads, replay, labels, recommendations.
    stamp = _STAMP.search(output)
    if stamp:
        built = datetime.strptime(stamp.group(1).decode(), "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
        bench("train.rows_built_s", built - started_at, unit="s from start to the rows built (two reads of the log)")
