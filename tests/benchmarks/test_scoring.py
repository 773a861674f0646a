"""Model inference throughput by batch size; reference: Keras model.predict per batch."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from retention_model.features.definitions import FEATURE_NAMES
from retention_model.model.scorer import ChurnModel
from streams.settings import BUNDLED_MODEL


def _rows_per_s(fn: Any, batch: np.ndarray, min_seconds: float = 1.0) -> float:
    fn(batch)
    rows = 0
    started = time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        fn(batch)
        rows += batch.shape[0]
    return rows / (time.perf_counter() - started)


def test_scoring_throughput(bench: Any) -> None:
    import keras

    model = ChurnModel(BUNDLED_MODEL, device="cpu").load()
    rng = np.random.default_rng(0)
    keras_model = keras.saving.load_model(model.meta_.model_file, compile=False)  # type: ignore[union-attr]
    x = rng.normal(size=(32, len(FEATURE_NAMES))).astype(np.float32)
    reference = "scoring.keras_predict_rows_per_s_32"
    bench(reference, _rows_per_s(lambda b: keras_model.predict(b, verbose=0), x), unit="rows/s (reference)")
    for size in (1, 32, 256, 1024, 4096):
        batch = np.abs(rng.normal(size=(size, len(FEATURE_NAMES)))) * 5
        bench(
            f"scoring.cpu_rows_per_s_{size}", _rows_per_s(model.score_many, batch), unit="rows/s", reference=reference
        )
