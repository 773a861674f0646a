"""A broker killed and restarted mid-stream is survived: the worker waits, reconnects and
loses nothing.

The embedded broker runs on its S3 storage against a local S3 server (moto), so its topics,
offsets and committed positions outlive the broker process, as a real cluster's would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from retention_model.events import encode_event
from streams.demo import metric_sum, scrape_metrics
from streams.kafka import EmbeddedBroker, free_port
from streams.producer import produce_records
from training.simulator import SimConfig, simulate

from .helpers import (
    assert_state_matches_offline,
    fresh_settings,
    metrics_url,
    read_topic,
    running_worker,
    wait_committed,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def s3() -> Iterator[dict[str, str]]:
    """A local S3 server with the bucket Tansu writes to; yields the broker's environment."""
    server = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(server).exists():
        pytest.skip("moto_server not installed (pip install 'moto[server]'); it is in the dev extra")
    port = free_port()
    process = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{endpoint}/tansu", method="PUT"), timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.3)
        yield {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
    finally:
        process.terminate()
        process.wait(10)


def test_worker_survives_a_broker_restart_mid_stream(s3: dict[str, str], tmp_path: Path) -> None:
    port = free_port()

    def broker() -> EmbeddedBroker:
        return EmbeddedBroker(port=port, storage="s3://tansu/", env=s3, log_file=tmp_path / "broker.log")

    events = list(simulate(SimConfig(users=80, days=60, seed=17)))
    records = [(e.user_id.encode(), encode_event(e), "valid") for e in events]
    half = len(records) // 2
    first_broker = broker().start()
    bootstrap = first_broker.bootstrap
    settings = fresh_settings(bootstrap, tmp_path)
    second_broker = None
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:
            produce_records(settings, records[:half])
            deadline = time.monotonic() + 90
            while metric_sum(scrape_metrics(metrics_url(settings)), "retention_events_total") < half:
                assert time.monotonic() < deadline
                time.sleep(0.3)
            first_broker.kill()  # SIGKILL: the broker vanishes under the running worker
            time.sleep(3)
            assert worker.poll() is None, "the worker must wait for the broker, not exit"
            second_broker = broker().start()
            produce_records(settings, records[half:])
            deadline = time.monotonic() + 180
            while metric_sum(scrape_metrics(metrics_url(settings)), "retention_events_total", outcome="applied") < len(
                records
            ):
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the worker did not catch up after the broker restart"
                time.sleep(0.5)
            # The counters move when a batch's records are queued; the commit, once they are
            # acknowledged. Read the changelog before it and the last batch's users may be missing.
            wait_committed(settings, len(records))
            changelog = read_topic(bootstrap, settings.changelog_topics[0], settings.partitions)
        assert_state_matches_offline(changelog, events)
    finally:
        first_broker.stop()
        if second_broker is not None:
            second_broker.stop()
