"""Checks a command makes before its slow work, so that an expected failure is one line, fast.

The worker checks its ports and the broker before it loads TensorFlow (~18 s); the
tools wait for the broker a few seconds (``--broker-wait-s``), not half a minute of
librdkafka retries. Every failure names the problem and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket

from retention_model.errors import BrokerUnavailableError, PortInUseError
from streams.settings import Settings

__all__ = ["EMBEDDED_CLUSTER_PREFIX", "adapt_to_broker", "check_events_topic", "check_ports", "require_broker"]

log = logging.getLogger(__name__)

#: The cluster id the embedded Tansu broker answers with (``tansu_cluster``).
EMBEDDED_CLUSTER_PREFIX = "tansu"
#: The session timeout the embedded broker wants: it holds a group join for half of it.
EMBEDDED_SESSION_TIMEOUT_S = 2.0


def _port_taken(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(settings: Settings) -> None:
    """Refuse to start when the metrics or web port is taken (before minutes of start-up, not after)."""
    wanted = [("RETENTION_WEB_PORT", settings.web_host, settings.web_port)]
    if settings.metrics_port:
        wanted.append(("RETENTION_METRICS_PORT", settings.metrics_host, settings.metrics_port))
    for name, host, port in wanted:
        if _port_taken(host, port):
            msg = (
                f"port {port} on {host} ({name}) is in use by another process; stop it, or set {name} "
                f"(--{name.removeprefix('RETENTION_').lower().replace('_', '-')}) to a free port"
            )
            raise PortInUseError(msg)


#: Waits at least this long say that they are waiting (a worker started before its broker).
LONG_WAIT_S = 5.0


def require_broker(settings: Settings, wait_s: float) -> str:
    """Wait up to ``wait_s`` for the cluster; return its id, or raise with what to do."""
    from streams.kafka import client_config, wait_for_broker

    bootstrap = ",".join(settings.broker_list)
    try:
        return wait_for_broker(
            bootstrap,
            timeout_s=wait_s,
            config=client_config(settings),
            # A progress note for a long wait only: a short one ends in the one-line error anyway.
            on_wait=(lambda: log.info("waiting for a Kafka broker at %s (up to %gs)", bootstrap, wait_s))
            if wait_s >= LONG_WAIT_S
            else None,
        )
    except TimeoutError:
        msg = (
            f"no Kafka broker answered at {bootstrap} within {wait_s:g}s; start one (`retention broker`) "
            "or set RETENTION_BROKER to your cluster's bootstrap servers (--broker-wait-s waits longer)"
        )
        raise BrokerUnavailableError(msg) from None


def adapt_to_broker(settings: Settings, cluster_id: str, *, session_timeout_set: bool) -> Settings:
    """Turn on the embedded broker's fixes when the cluster is Tansu, whatever was configured.

    Its wrong ListOffsets answer would stop Faust's table recovery early, and it holds
    a group join for half the session timeout (the 10 s default: a 5 s join). The
    session timeout is shortened only where the user did not set one.
    """
    if not cluster_id.startswith(EMBEDDED_CLUSTER_PREFIX):
        return settings
    changes: dict[str, object] = {}
    if settings.broker_kind != "tansu":
        changes["broker_kind"] = "tansu"
    if not session_timeout_set and settings.session_timeout_s > EMBEDDED_SESSION_TIMEOUT_S:
        changes["session_timeout_s"] = EMBEDDED_SESSION_TIMEOUT_S
    if changes:
        log.info(
            "the broker is the embedded Tansu (cluster id %s): using %s",
            cluster_id,
            ", ".join(f"RETENTION_{k.upper()}={v}" for k, v in changes.items()),
        )
        return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    return settings


def check_events_topic(settings: Settings) -> None:
    """Refuse an events topic whose partition count differs from RETENTION_PARTITIONS.

    A user's state lives in the changelog partition of their event partition, so
    the counts must match; a simulator started before the worker on a cluster that
    auto-creates one-partition topics would otherwise break co-partitioning.
    """
    from confluent_kafka.admin import AdminClient

    from retention_model.errors import RetentionError
    from streams.kafka import client_config

    # All topics, not the one by name: a metadata request naming a missing topic can create it
    # (the embedded broker does, with 4 partitions).
    topic = AdminClient(client_config(settings)).list_topics(timeout=10).topics.get(settings.events_topic)
    if topic is None or topic.error is not None or not topic.partitions:
        return
    found = len(topic.partitions)
    if found != settings.partitions:
        msg = (
            f"the events topic {settings.events_topic} has {found} partitions but RETENTION_PARTITIONS is "
            f"{settings.partitions}; set RETENTION_PARTITIONS={found} (--partitions {found}), or use a new topic"
        )
        raise RetentionError(msg)
