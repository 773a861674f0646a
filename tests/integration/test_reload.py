"""A newer bundle dropped into the registry is loaded without a restart; a broken one is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
import pytest

from retention_model.model.bundle import resolve_bundle
from retention_model.policy.policy import iso_ms
from streams.demo import metric_sum, scrape_metrics
from streams.producer import produce_records
from streams.settings import BUNDLED_MODEL
from training.simulator import SimConfig, encode_stream, simulate

from .helpers import (
    clean_env,
    fresh_settings,
    metrics_url,
    read_topic,
    running_worker,
    settled_metrics,
    wait_for_metric,
)

pytestmark = pytest.mark.integration


def add_bundle(registry: Path, name: str, version: str, created_at: str, *, corrupt: bool = False) -> None:
    """A copy of the shipped bundle under a new version, written the atomic way (rename)."""
    staging = registry / f".staging-{name}"
    shutil.copytree(resolve_bundle(BUNDLED_MODEL), staging)
    meta = json.loads((staging / "bundle.json").read_text())
    meta.update(version=version, created_at=created_at)
    (staging / "bundle.json").write_text(json.dumps(meta))
    if corrupt:
        (staging / "model.keras").write_bytes(b"truncated upload")
    staging.rename(registry / name)


def versions_in_use(settings: object) -> set[str]:
    samples = scrape_metrics(metrics_url(settings))  # type: ignore[arg-type]
    return {labels["version"] for labels, value in samples.get("retention_model_info", []) if value == 1}


def test_hot_reload_swaps_models_and_keeps_the_old_one_on_failure(broker: str, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    add_bundle(registry, "churn-first", "first", "2026-01-01T00:00:00+00:00")
    settings = fresh_settings(broker, tmp_path, model_path=str(registry), model_reload_s=0.5)
    records = list(encode_stream(simulate(SimConfig(users=60, days=40, seed=2))))
    half = len(records) // 2

    with running_worker(settings, tmp_path / "worker.log"):
        assert versions_in_use(settings) == {"first"}
        produce_records(settings, records[:half])
        wait_for_metric(settings, "retention_events_total", half)
        settled_metrics(settings)  # events are counted on decode: let the last batch be scored too

        add_bundle(registry, "churn-second", "second", "2026-02-01T00:00:00+00:00")
        wait_for_metric(settings, "retention_model_reloads_total", 1, result="loaded")
        assert versions_in_use(settings) == {"second"}
        produce_records(settings, records[half:])
        wait_for_metric(settings, "retention_events_total", len(records))

        add_bundle(registry, "churn-broken", "broken", "2026-03-01T00:00:00+00:00", corrupt=True)
        wait_for_metric(settings, "retention_model_reloads_total", 1, result="failed")
        assert versions_in_use(settings) == {"second"}
        scores = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.scores_topic, settings.partitions)]

    assert {s["model_version"] for s in scores} == {"first", "second"}
    # Events produced after the swap are scored by the new model; and the swap is atomic
    # between batches: in each user's score sequence (one partition, processing order)
    # "first" never follows "second".
    second_half_from = iso_ms(orjson.loads(records[half][1])["ts"])
    by_user: dict[str, list[str]] = {}
    for score in scores:
        if score["event_time"] >= second_half_from:
            assert score["model_version"] == "second", score
        by_user.setdefault(score["user_id"], []).append(score["model_version"])
    for user, versions in by_user.items():
        assert versions == sorted(versions), (user, versions)  # "first" < "second"
    assert sum(v.count("first") for v in by_user.values()) > 0


def test_a_shadow_bundle_is_scored_beside_the_live_one_and_never_acted_on(broker: str, tmp_path: Path) -> None:
    registry = tmp_path / "shadow"
    registry.mkdir()
    add_bundle(registry, "churn-candidate", "candidate", "2026-01-01T00:00:00+00:00")
    settings = fresh_settings(broker, tmp_path, shadow_model_path=str(registry))
    records = list(encode_stream(simulate(SimConfig(users=40, days=40, seed=4))))
    with running_worker(settings, tmp_path / "worker.log"):
        produce_records(settings, records)
        wait_for_metric(settings, "retention_events_total", len(records))
        samples = settled_metrics(settings)
        scores = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.scores_topic, settings.partitions)]
        decisions = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.decisions_topic, settings.partitions)]

    live = {s["model_version"] for s in scores}
    assert live == {resolve_bundle(BUNDLED_MODEL).name.removeprefix("churn-")}
    assert all(s["shadow"]["model_version"] == "candidate" for s in scores)
    # The candidate is a copy of the live weights: the same risk, the same tier, every time.
    assert all(s["shadow"]["risk"] == s["risk"] and s["shadow"]["tier"] == s["tier"] for s in scores)
    assert metric_sum(samples, "retention_shadow_tier_agreement_total", agree="yes") == len(scores)
    assert metric_sum(samples, "retention_shadow_model_info", version="candidate") == 1
    assert decisions and {d["model_version"] for d in decisions} == live  # only the live model acts


def test_a_missing_shadow_bundle_stops_the_worker_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = clean_env()
    env["RETENTION_SHADOW_MODEL_PATH"] = str(tmp_path / "nowhere")
    result = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env, capture_output=True, timeout=120)
    assert result.returncode == 2
    assert b"cannot start: model bundle not found at" in result.stderr
