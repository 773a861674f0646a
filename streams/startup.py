"""Worker start-up: the cheap local checks, the broker, the model, the topics, then Faust until stopped.

The order is the point: a busy port, a missing extra or a wrong bundle path is
reported in one line (exit 2) before the broker is asked (exit 3), and both
before TensorFlow and the model load (~18 s).
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import sys
from pathlib import Path

from retention_model.errors import BundleError
from streams.settings import Settings

__all__ = ["run_worker"]

log = logging.getLogger("retention")


def run_worker(settings: Settings, broker_wait_s: float = 60.0, *, session_timeout_set: bool = True) -> int:
    """Check ports and the broker, load the model, create topics, then run Faust until stopped."""
    from streams.compat import UnsupportedFaustError, check_faust_version

    try:
        check_faust_version()  # before anything imports Faust
    except UnsupportedFaustError as exc:
        print(f"retention worker: cannot start: {exc}", file=sys.stderr)
        return 2
    from prometheus_client import CollectorRegistry, start_http_server

    from streams import metrics as metrics_module
    from streams.access import check_api_exposure
    from streams.kafka import ensure_topics
    from streams.preflight import adapt_to_broker, check_events_topic, check_ports, require_broker

    if settings.store.startswith("rocksdb") and importlib.util.find_spec("rocksdict") is None:
        print(
            "retention worker: cannot start: RETENTION_STORE=rocksdb:// needs the rocksdict package; "
            "install the rocksdb extra (pip install 'retention[rocksdb]') or use memory://",
            file=sys.stderr,
        )
        return 2
    check_ports(settings)
    check_api_exposure(settings)
    from retention_model.model.bundle import resolve_bundle

    try:  # local mistakes first: a wrong bundle path needs no broker to report
        for bundle_path in (settings.model_path, settings.shadow_model_path):
            if bundle_path:
                resolve_bundle(bundle_path)
    except BundleError as exc:
        print(f"retention worker: cannot start: {exc}", file=sys.stderr)
        return 2
    bootstrap = ",".join(settings.broker_list)
    cluster_id = require_broker(settings, broker_wait_s)
    settings = adapt_to_broker(settings, cluster_id, session_timeout_set=session_timeout_set)
    check_events_topic(settings)
    _quiet_tensorflow(settings)
    from retention_model.model.scorer import ChurnModel

    try:
        model = ChurnModel(settings.model_path, device=settings.model_device).load()  # type: ignore[arg-type]
        shadow = (
            ChurnModel(settings.shadow_model_path, device=settings.model_device).load()  # type: ignore[arg-type]
            if settings.shadow_model_path
            else None
        )
    except BundleError as exc:
        print(f"retention worker: cannot start: {exc}", file=sys.stderr)
        return 2
    created = ensure_topics(settings)
    if created:
        log.info("created topics: %s", ", ".join(created))

    import faust

    from streams.app import create_app

    registry = CollectorRegistry()
    metrics = metrics_module.create(registry)
    metrics.model_info.labels(model.version, model.device_name_ or "cpu").set(1)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    if shadow is not None:
        metrics.shadow_model_info.labels(shadow.version).set(1)
        log.info("shadow model %s scores beside %s (published, never acted on)", shadow.version, model.version)
    app, _ = create_app(settings, model, metrics, shadow=shadow)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    # TensorFlow, Keras and Faust leave ~400k long-lived objects; a full collection
    # walks them all (160 ms here), stalling every batch behind it. Frozen, they
    # are skipped: collections see only what the stream allocates.
    gc.collect()
    gc.freeze()
    log.info(
        "worker %s consuming %s from %s with model %s", settings.app_id, settings.events_topic, bootstrap, model.version
    )
    worker.execute_from_commandline()
    return 0


def _quiet_tensorflow(settings: Settings) -> None:
    """Keep TensorFlow's C++ start-up chatter (and its CUDA probe on a machine without a GPU) out of the log."""
    no_gpu = not Path("/dev/nvidiactl").exists() and not Path("/proc/driver/nvidia").exists()
    if settings.model_device == "cpu" or no_gpu:
        # "failed call to cuInit" is logged as an error on every CPU start; level 3 keeps it
        # out (Python-level errors still raise). With a GPU, its errors stay visible.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
