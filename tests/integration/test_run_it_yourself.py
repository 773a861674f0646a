"""Running the parts by hand: every command fails fast with one line and a hint, `retention tail`
reads a topic, and a worker started against the embedded broker sets itself up for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retention_model.events import Event, EventType, encode_event
from streams.demo import metric_sum, scrape_metrics
from streams.kafka import ensure_topics, free_port
from streams.producer import produce_records

from .helpers import REPO, clean_env, fresh_settings, metrics_url

pytestmark = pytest.mark.integration

NO_BROKER = "127.0.0.1:1"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = clean_env()
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=REPO,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    out = (result.stdout + result.stderr).strip()
    assert result.returncode == code, out
    assert "Traceback" not in out, out
    assert len(out.splitlines()) == 1, out
    for word in words:
        assert word in out, out


@pytest.mark.parametrize(
    "command",
    [
        ("worker", "--broker-wait-s", "2"),
        ("simulate", "--users", "5", "--days", "3", "--broker-wait-s", "2"),
        ("topics", "--broker-wait-s", "2"),
        ("dlq", "list", "--broker-wait-s", "2"),
        ("export", "scores", "--out", "/tmp/never.jsonl", "--broker-wait-s", "2"),
        ("report", "effect", "--from-kafka", "--broker-wait-s", "2"),
        ("tail", "scores", "--broker-wait-s", "2"),
    ],
    ids=lambda command: command[0] + ("-" + command[1] if not command[1].startswith("-") else ""),
)
def test_with_no_broker_each_command_fails_in_seconds_with_one_line(command: tuple[str, ...]) -> None:
    started = time.monotonic()
    result = run_cli(*command, env={"RETENTION_BROKER": NO_BROKER})
    assert time.monotonic() - started < 15  # 2 s of waiting, plus Python's start; never TensorFlow's
    assert_one_line(result, 3, "no Kafka broker answered at 127.0.0.1:1", "retention broker")


def test_a_busy_port_stops_the_worker_at_once_with_the_setting_to_change() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        result = run_cli("worker", "--metrics-port", str(port), env={"RETENTION_BROKER": NO_BROKER})
    assert time.monotonic() - started < 10
    assert_one_line(result, 2, f"port {port}", "RETENTION_METRICS_PORT", "in use")


def test_missing_input_files_are_one_line() -> None:
    result = run_cli("report", "effect", "--decisions", "nope.jsonl", "--events", "nope-either.jsonl")
    assert_one_line(result, 2, "cannot read nope.jsonl", "No such file")


def test_a_secret_flag_does_not_exist_and_a_secret_file_works(tmp_path: Path) -> None:
    result = run_cli("worker", "--sasl-password", "hunter2")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    shown = run_cli("settings", "--effective", env={"RETENTION_EXPORT_KEY_FILE": str(secret)})
    assert "RETENTION_EXPORT_KEY=***" in shown.stdout and "s3cret" not in shown.stdout


def test_tail_prints_our_records_readably(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path)
    ensure_topics(settings)
    purchase = Event("e1", "u1", EventType.PURCHASE, 1_736_000_000_000, price=20.0, order_id="o1")
    events = [
        (b"u1", encode_event(purchase), "valid"),
        (b"u2", encode_event(Event("e2", "u2", EventType.VIEW, 1_736_000_000_001, item_id="sku-9")), "valid"),
        (b"u1", b"not json", "malformed"),
    ]
    produce_records(settings, events)
    env = {"RETENTION_BROKER": broker, "RETENTION_EVENTS_TOPIC": settings.events_topic}
    result = run_cli("tail", "events", "--from-beginning", "--count", "3", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("2025-01-04T" in line and "u1 purchase" in line and "price=20.0" in line for line in lines), lines
    assert any("u2 view item_id=sku-9" in line for line in lines), lines
    assert any("b'not json'" in line for line in lines), lines
    keyed = run_cli("tail", "events", "--from-beginning", "--key", "u2", "--idle-s", "3", env=env)
    assert keyed.returncode == 0, keyed.stderr
    assert len(keyed.stdout.splitlines()) == 1 and "u2 view" in keyed.stdout


def test_a_worker_pointed_at_the_embedded_broker_sets_itself_up_for_it(broker: str, tmp_path: Path) -> None:
    """No RETENTION_BROKER_KIND, no session timeout: the worker sees Tansu and joins in seconds."""
    if os.environ.get("RETENTION_TEST_BROKER"):
        pytest.skip("the test broker is not the embedded Tansu")
    settings = fresh_settings(broker, tmp_path)
    env = {
        "RETENTION_BROKER": broker,
        "RETENTION_APP_ID": settings.app_id,
        "RETENTION_EVENTS_TOPIC": settings.events_topic,
        "RETENTION_METRICS_PORT": str(settings.metrics_port),
        "RETENTION_WEB_PORT": str(free_port()),
        "RETENTION_DATA_DIR": settings.data_dir,
    }
    clean = clean_env()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            cwd=REPO,
            env={**clean, **env},
            stdout=log_file,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert worker.poll() is None, log_path.read_text()[-2000:]
            try:
                if metric_sum(scrape_metrics(metrics_url(settings)), "retention_assigned_partitions") > 0:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(log_path.read_text()[-2000:])
    finally:
        worker.terminate()
        worker.wait(30)
    text = log_path.read_text()
    assert "the broker is the embedded Tansu" in text
    assert "RETENTION_BROKER_KIND=tansu" in text and "RETENTION_SESSION_TIMEOUT_S=2.0" in text
    assert "failed call to cuInit" not in text
