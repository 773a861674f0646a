"""Shared fixtures: a real Kafka-protocol broker for integration tests, seeds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Shared machines are noisy: judge properties, not timings.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of a real broker: RETENTION_TEST_BROKER, or the embedded Tansu."""
    external = os.environ.get("RETENTION_TEST_BROKER")
    if external:
        yield external
        return
    from streams.kafka import EmbeddedBroker

    try:
        embedded = EmbeddedBroker().start()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no broker: the embedded Tansu did not start ({exc}); set RETENTION_TEST_BROKER=host:port")
    try:
        yield embedded.bootstrap
    finally:
        embedded.stop()


@pytest.fixture
def seed() -> int:
    """Fixed seed for random tests (override with RETENTION_TEST_SEED)."""
    return int(os.environ.get("RETENTION_TEST_SEED", "1234"))
