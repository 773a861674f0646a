"""The churn model wrapper: load a bundle once, score micro-batches fast.

Inference goes through one compiled ``tf.function`` with a fixed input signature,
XLA-compiled with the bundle's normalisation fused in, and batches are padded up to
a few bucket sizes, so TensorFlow never retraces and the same kernels serve every
batch. ``model.predict`` is avoided: it builds a
dataset pipeline per call and is ~25x slower for small batches.

Two per-call costs are kept out as well, as they were a third of a 4,096-row call
and most of a 32-row one: the ``tf.function`` dispatch (its concrete function is
called directly) and the copy of the input into a TensorFlow tensor (rows are staged
in a 64-byte-aligned float32 buffer per bucket that TensorFlow reads in place, through
DLPack).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from retention_model.errors import BundleError, NotLoadedError
from retention_model.model.bundle import BundleMeta, check_feature_spec, normalise, read_bundle_meta
from retention_model.model.uplift import UpliftModel

__all__ = ["ChurnModel", "Device"]

Device = Literal["auto", "cpu", "gpu"]
DEFAULT_BUCKETS = (32, 256, 1024, 4096)
#: Calibrations a bundle ships as a table of raw -> calibrated scores, interpolated:
#: isotonic regression, or Platt scaling tabulated on a fine grid (it keeps the ranking).
CALIBRATION_TABLES = ("isotonic", "platt")

log = logging.getLogger(__name__)


def _import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


class ChurnModel:
    """P(churn) for rows of :data:`FEATURE_NAMES` features.

    Construction only stores parameters; :meth:`load` reads the bundle.

    Args:
        path: a bundle folder or a registry of bundles (the newest is used).
        device: ``auto`` uses a GPU when TensorFlow sees one, else the CPU.
        buckets: batch sizes micro-batches are padded up to.
    """

    def __init__(self, path: str | os.PathLike[str], device: Device = "auto", buckets: Sequence[int] = DEFAULT_BUCKETS):
        self.path = path
        self.device = device
        self.buckets = tuple(sorted(buckets))
        self.meta_: BundleMeta | None = None
        self.device_name_: str | None = None
        self._infer: Any = None
        self._as_tensor: Any = None
        self._staging = threading.local()
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._calibration: tuple[np.ndarray, np.ndarray] | None = None
        #: The bundle's co-purchase table, as data (None when it has none): the policy builds
        #: its recommender from it (``Recommender.from_dict``), so the model knows no policy.
        self.recommendations_: dict[str, Any] | None = None
        #: Coupon uplift model, when the bundle ships one.
        self.uplift_: UpliftModel | None = None

    @property
    def version(self) -> str:
        """Version (content hash) of the loaded bundle."""
        return self._meta().version

    def _meta(self) -> BundleMeta:
        if self.meta_ is None:
            msg = "ChurnModel.load() must be called before scoring"
            raise NotLoadedError(msg)
        return self.meta_

    def load(self) -> ChurnModel:
        """Read, check and compile the bundle; raise :class:`BundleError` naming the problem."""
        meta = read_bundle_meta(self.path)
        check_feature_spec(meta)
        uplift = meta.extras.get("uplift")
        self.uplift_ = UpliftModel.from_dict(uplift, len(meta.feature_names)) if uplift else None
        self.recommendations_ = meta.extras.get("recommendations")
        tf = _import_tensorflow()
        import keras

        device_name = self._pick_device(tf)
        try:
            with tf.device(device_name):
                model = keras.saving.load_model(meta.model_file, compile=False, safe_mode=True)
        except Exception as exc:
            msg = f"cannot load {meta.model_file}: {type(exc).__name__}: {exc}"
            raise BundleError(msg) from exc
        n_features = len(meta.feature_names)
        if tuple(model.inputs[0].shape[1:]) != (n_features,):
            shape = model.inputs[0].shape
            msg = f"{meta.model_file} takes input shape {shape}, the feature spec has {n_features} columns"
            raise BundleError(msg)

        self._mean = np.asarray(meta.mean, dtype=np.float64)
        self._std = np.asarray(meta.std, dtype=np.float64)
        mean = tf.constant(self._mean, dtype=tf.float32)
        inverse_std = tf.constant(1.0 / self._std, dtype=tf.float32)

        def churn(raw: Any) -> Any:
            # The bundle's normalisation (bundle.normalise), inside the compiled function
            # so that XLA fuses it with the first layer; a unit test holds the two equal.
            x = (tf.sign(raw) * tf.math.log1p(tf.abs(raw)) - mean) * inverse_std
            with tf.device(device_name):
                out = model(x, training=False)
            if isinstance(out, dict):
                out = out["churn"]
            elif isinstance(out, (list, tuple)):
                out = out[0]
            return tf.reshape(out, [-1])

        self._as_tensor = _tensor_importer(tf)

        def compiled(jit: bool) -> Any:
            function = tf.function(
                churn, input_signature=[tf.TensorSpec([None, n_features], tf.float32)], jit_compile=jit
            )
            infer = function.get_concrete_function()
            for bucket in self.buckets:  # compile every bucket now, not on a live batch
                infer(self._as_tensor(_aligned_rows(bucket, n_features)))
            return infer

        try:
            infer = compiled(jit=True)
        except Exception as exc:  # a TensorFlow build without XLA for this device
            log.warning("XLA compilation failed (%s: %s); scoring without it", type(exc).__name__, exc)
            infer = compiled(jit=False)
        if meta.calibration and meta.calibration.get("method") in CALIBRATION_TABLES:
            self._calibration = (
                np.asarray(meta.calibration["x"], dtype=np.float64),
                np.asarray(meta.calibration["y"], dtype=np.float64),
            )
        self._infer = infer
        self.device_name_ = device_name
        self.meta_ = meta
        log.info("loaded model %s from %s on %s", meta.version, meta.path, device_name)
        return self

    def _pick_device(self, tf: Any) -> str:
        gpus = tf.config.list_logical_devices("GPU")
        if self.device == "gpu":
            if not gpus:
                msg = "device=gpu was asked for, but TensorFlow sees no GPU; use device=auto or cpu"
                raise BundleError(msg)
            return str(gpus[0].name)
        if self.device == "auto" and gpus:
            return str(gpus[0].name)
        return "/CPU:0"

    def _bucket(self, n: int) -> int:
        for bucket in self.buckets:
            if n <= bucket:
                return bucket
        return n

    def score_many(self, features: np.ndarray) -> np.ndarray:
        """Calibrated P(churn) for each row of a raw (unnormalised) feature matrix."""
        meta = self._meta()
        assert self._mean is not None and self._std is not None
        n = features.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float64)
        if features.shape[1] != len(meta.feature_names):
            msg = f"expected {len(meta.feature_names)} feature columns, got {features.shape[1]}"
            raise ValueError(msg)
        largest = self.buckets[-1]
        parts = []
        for start in range(0, n, largest):
            chunk = features[start : start + largest]
            size = chunk.shape[0]
            staged = self._stage(self._bucket(size), features.shape[1])
            np.copyto(staged[:size], chunk, casting="same_kind")
            staged[size:] = 0.0
            parts.append(self._infer(self._as_tensor(staged)).numpy()[:size])
        raw = np.concatenate(parts).astype(np.float64)
        if self._calibration is not None:
            return np.interp(raw, *self._calibration)
        return raw

    def _stage(self, rows: int, columns: int) -> np.ndarray:
        """This thread's input buffer for ``rows``: TensorFlow reads it in place, so one per thread."""
        buffers: dict[int, np.ndarray] | None = getattr(self._staging, "buffers", None)
        if buffers is None:
            buffers = self._staging.buffers = {}
        staged = buffers.get(rows)
        if staged is None:
            staged = buffers[rows] = _aligned_rows(rows, columns)
        return staged

    def uplift_many(self, features: np.ndarray) -> np.ndarray | None:
        """Predicted coupon uplift per row, or None when the bundle has no uplift model."""
        if self.uplift_ is None or features.shape[0] == 0:
            return None
        assert self._mean is not None and self._std is not None
        return self.uplift_.predict(normalise(features, self._mean, self._std).astype(np.float64))

    def score_one(self, row: Sequence[float]) -> float:
        """P(churn) for one feature row; same code path as :meth:`score_many`."""
        return float(self.score_many(np.asarray([row], dtype=np.float64))[0])


# TensorFlow's CPU kernels require 64-byte-aligned memory: an array imported without a
# copy must start on such a boundary (a misaligned one aborts the process).
_ALIGNMENT = 64


def _aligned_rows(rows: int, columns: int) -> np.ndarray:
    """A zeroed float32 ``(rows, columns)`` array whose data starts on a 64-byte boundary."""
    nbytes = rows * columns * 4
    raw = np.zeros(nbytes + _ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    out = raw[start : start + nbytes].view(np.float32).reshape(rows, columns)
    assert out.ctypes.data % _ALIGNMENT == 0
    return out


def _tensor_importer(tf: Any) -> Any:
    """NumPy to tensor without a copy (DLPack) where this TensorFlow build can; else a copy."""
    probe = _aligned_rows(1, 1)
    try:
        from tensorflow.experimental import dlpack

        if float(dlpack.from_dlpack(probe.__dlpack__())[0, 0]) != 0.0:
            raise ValueError("DLPack import read the wrong memory")
    except Exception as exc:
        log.info("scoring copies its input (no DLPack import: %s: %s)", type(exc).__name__, exc)
        return tf.convert_to_tensor

    def as_tensor(rows: np.ndarray) -> Any:
        return dlpack.from_dlpack(rows.__dlpack__())

    return as_tensor
