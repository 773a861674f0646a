"""The broker and demo commands start, serve and stop cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from streams.kafka import free_port, wait_for_broker

from .helpers import REPO, clean_env

pytestmark = pytest.mark.integration


def _env() -> dict[str, str]:
    return clean_env()


def test_broker_command_serves_until_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "broker", "--port", str(port)],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert f"127.0.0.1:{port}" in line
        wait_for_broker(f"127.0.0.1:{port}", timeout_s=10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if process.poll() is None:
            process.kill()
