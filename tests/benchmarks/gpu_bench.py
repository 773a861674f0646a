"""``make bench-gpu``: the model on a GPU, once, where a session is lent one (issue 15).

    python -m tests.benchmarks.gpu_bench [--out bench-gpu.json] [--events 100000]

Prepared to run within a few minutes on a lent machine: the scoring benchmark at every
batch size of ``test_scoring`` with the model on the GPU (and the CPU's figure at each
size beside it, same run), then a short end-to-end run (the first ``--events`` of the e2e
benchmark's events, 1,000 users) through the worker with ``RETENTION_MODEL_DEVICE=gpu``
on the embedded broker. Writes one JSON file in ``bench-results.json``'s shape
(``report.py`` renders it).

Without a GPU it stops at once with one line on stderr and exit status 2: nothing is
measured on the CPU under the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["gpu_visible", "main"]

BATCH_SIZES = (1, 32, 256, 1024, 4096)


def gpu_visible() -> str | None:
    """Why no GPU can be used (one line), or None when TensorFlow sees one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no GPU visible: nvidia-smi is not installed here"
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return "no GPU visible: nvidia-smi -L lists none"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        return "a GPU is here but TensorFlow is not installed in this Python"
    if not tf.config.list_physical_devices("GPU"):
        return "a GPU is here but TensorFlow sees none (a CUDA build is needed: pip install 'tensorflow[and-cuda]')"
    return None


def _scoring(results: dict[str, Any]) -> None:
    import numpy as np

    from retention_model.features.definitions import FEATURE_NAMES
    from retention_model.model.scorer import ChurnModel
    from streams.settings import BUNDLED_MODEL
    from tests.benchmarks.test_scoring import _rows_per_s

    gpu = ChurnModel(BUNDLED_MODEL, device="gpu").load()
    cpu = ChurnModel(BUNDLED_MODEL, device="cpu").load()
    results["_meta"]["gpu_device"] = gpu.device_name_
    rng = np.random.default_rng(0)
    for size in BATCH_SIZES:
        batch = np.abs(rng.normal(size=(size, len(FEATURE_NAMES)))) * 5
        _record(results, f"scoring.cpu_rows_per_s_{size}", _rows_per_s(cpu.score_many, batch), "rows/s (CPU, same run)")
        _record(
            results,
            f"scoring.gpu_rows_per_s_{size}",
            _rows_per_s(gpu.score_many, batch),
            "rows/s (model on the GPU)",
            reference=f"scoring.cpu_rows_per_s_{size}",
        )


def _e2e(results: dict[str, Any], events: int, workdir: Path) -> None:
    from streams.demo import metric_sum, scrape_metrics
    from streams.kafka import EmbeddedBroker
    from streams.producer import produce_records
    from tests.benchmarks.test_e2e import RECORDS
    from tests.integration.helpers import fresh_settings, metrics_url, running_worker

    records = RECORDS[:events]
    workdir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker() as embedded:
        settings = fresh_settings(embedded.bootstrap, workdir, partitions=4, log_level="warning", model_device="gpu")
        with running_worker(settings, workdir / "worker.log"):
            produce_records(settings, records)
            first = None
            consumed = 0.0
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and consumed < len(records):
                consumed = metric_sum(scrape_metrics(metrics_url(settings)), "retention_events_total")
                if first is None and consumed > 0:
                    first = (time.monotonic(), consumed)
                time.sleep(0.05)
            if first is None or consumed < len(records):
                raise SystemExit(f"bench-gpu: the worker consumed {consumed:.0f} of {len(records)} events in 240 s")
            if consumed - first[1] < len(records) / 2:
                raise SystemExit(f"bench-gpu: {first[1]:.0f} events went in the first sample: rerun with more --events")
            rate = (consumed - first[1]) / max(time.monotonic() - first[0], 1e-9)
    _record(results, "e2e_gpu.events_per_s", rate, f"events/s ({len(records):,} events of 1,000 users, model on GPU)")


def _record(results: dict[str, Any], key: str, value: float, unit: str, reference: str | None = None) -> None:
    results[key] = value
    results["_meta"].setdefault("units", {})[key] = unit
    if reference is not None:
        results["_meta"].setdefault("references", {})[key] = reference
    print(f"{key:36s} {value:>14,.0f}  {unit}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("BENCH_GPU_JSON", "bench-gpu.json"))
    parser.add_argument("--events", type=int, default=100_000, help="events in the end-to-end run")
    parser.add_argument("--workdir", default="/tmp/retention-bench-gpu")
    args = parser.parse_args()
    why_not = gpu_visible()
    if why_not is not None:
        print(f"bench-gpu: {why_not}; run it on a machine lent a GPU (the device tool's status)", file=sys.stderr)
        raise SystemExit(2)
    machine = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    results: dict[str, Any] = {"_meta": {"machine": machine, "date": datetime.now(tz=UTC).date().isoformat()}}
    out = Path(args.out)
    try:
        _scoring(results)
        _e2e(results, args.events, Path(args.workdir))
    finally:  # what was measured is written even when a later part fails
        out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"written to {out}")


if __name__ == "__main__":
    main()
