"""How the Faust services are built: app settings, topics, message refs, running the worker.

The rules of progress around each message (bounded sends, retries, stopping) are in
`facescreen.bus.worker`.

Faust's defaults suit a long-lived cluster, not a restart-happy one: a 60 s session timeout
makes a Kafka-protocol broker like tansu take ~30 s per group join, and offsets committed
every 2.8 s mean more redelivery after a crash. Both are set here from `FaustTuning`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver

from facescreen.bus.deadletter import MessageRef
from facescreen.bus.security import faust_credentials


@dataclass(frozen=True)
class FaustTuning:
    """Group, commit and client timing. Tests use a short session timeout (fast joins).

    The fetch and linger settings are for latency: a frame waits for nothing but the
    analyzer. `fetch_wait_s` is how long the broker may hold a fetch that found nothing
    new. Kafka answers as soon as a byte arrives; tansu does not, it holds such a fetch
    for about half the wait (measured: Faust's fixed 1.5 s made capture-to-alert ~0.5 s).
    So it is short, and the price is a fetch request per wait while a consumer is caught
    up. Measured idle on tansu (analyzer, matcher and broker together, 12 partitions):
    0.25 core at 20 ms, 0.18 at 50 ms (the default: ~12 ms per hop), 0.05 at 1.5 s.
    """

    session_timeout_s: float = 10.0
    commit_interval_s: float = 1.0  # at most this much work is redone after a kill -9
    commit_every: int = 100
    stream_buffer: int = 64  # events fetched ahead per partition (frames are big)
    send_timeout_s: float = 10.0  # per attempt to put one output message on the broker
    send_attempts: int = 3
    fetch_wait_s: float = 0.05  # broker-side wait of a fetch that found nothing new
    fetch_partition_bytes: int | None = None  # per partition and fetch; None: 2 messages
    max_poll_records: int | None = None  # records handed over per poll; None: no limit
    linger_s: float = 0.0  # producer: wait this long to fill a batch (0: send at once)
    producer_batch_bytes: int = 262_144  # producer batch per partition (a 7-face event ~20 kB)

    def __post_init__(self) -> None:
        if not 0 <= self.fetch_wait_s <= 30 or not 0 <= self.linger_s <= 5:
            raise ValueError("fetch wait must be within [0, 30] s and linger within [0, 5] s")
        sizes = (self.fetch_partition_bytes, self.max_poll_records, self.producer_batch_bytes)
        if any(size is not None and size < 1 for size in sizes):
            raise ValueError("fetch, poll and batch sizes must be positive")

    @property
    def heartbeat_s(self) -> float:
        return max(0.3, min(3.0, self.session_timeout_s / 4))


class _FetchThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait of its transport.

    faust-streaming passes `fetch_max_wait_ms=1500` to aiokafka whatever its settings say;
    aiokafka reads the value when the consumer starts, so it is set just before.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(getattr(transport, "fetch_wait_ms", 1500))
        return consumer


class _FetchConsumer(aiokafka_driver.Consumer):
    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return _FetchThread(self, loop=self.loop, beacon=self.beacon)


class _FetchTransport(aiokafka_driver.Transport):
    """The aiokafka transport whose consumers wait `fetch_wait_ms` at most per fetch."""

    Consumer = _FetchConsumer
    fetch_wait_ms = 1500


def make_app(app_id: str, bootstrap: list[str], tuning: FaustTuning,
             max_request_bytes: int = 1_048_576, compression: str | None = None) -> faust.App:
    """A Faust app that never declares topics (they are created explicitly) and has no web.

    Its tables live in memory; Faust still wants a data directory, which goes under the
    temporary directory (an emptyDir in Kubernetes), never into the working directory.
    `compression` is the producer's batch compression (the matcher's table states are
    JSON full of floats: gzip about halves them).
    """
    datadir = Path(tempfile.gettempdir()) / "facescreen-faust" / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        app_id,
        datadir=str(datadir),
        broker=[f"kafka://{server}" for server in bootstrap],
        autodiscover=False,
        store="memory://",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=tuning.session_timeout_s,
        broker_heartbeat_interval=tuning.heartbeat_s,
        broker_rebalance_timeout=max(tuning.session_timeout_s, 10.0),
        broker_commit_interval=tuning.commit_interval_s,
        broker_commit_every=tuning.commit_every,
        broker_max_poll_records=tuning.max_poll_records,
        stream_buffer_maxsize=tuning.stream_buffer,
        stream_wait_empty=True,
        producer_acks=-1,
        producer_compression_type=compression,
        producer_max_request_size=max_request_bytes,
        producer_linger=tuning.linger_s,
        producer_max_batch_size=tuning.producer_batch_bytes,
        consumer_max_fetch_size=(tuning.fetch_partition_bytes
                                 or max(4 * 1024 * 1024, 2 * max_request_bytes)),
        broker_credentials=faust_credentials(),  # TLS / SASL from FACESCREEN_KAFKA_*
    )
    transport = _FetchTransport(app.conf.broker_consumer, app)
    transport.fetch_wait_ms = round(tuning.fetch_wait_s * 1000)
    app.transport = transport  # before any topic: topics are made by the app's transport
    return app


def raw_topic(app: faust.App, name: str, partitions: int | None = None) -> Any:
    """A topic of bytes keys and values: codecs and validation are ours, not Faust's."""
    return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client, aiokafka
    and kafka-python) gives a keyed message."""
    from aiokafka.partitioner import murmur2

    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def message_ref(event: Any) -> MessageRef:
    """The MessageRef of a Faust event (headers come as a tuple of pairs or a mapping)."""
    message = event.message
    headers = message.headers or ()
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    return MessageRef(topic=message.topic, partition=message.partition, offset=message.offset,
                      key=message.key, value=message.value,
                      headers=[(str(k), v if isinstance(v, bytes) else bytes(v or b""))
                               for k, v in pairs])


def run_worker(app: faust.App, loglevel: str = "info") -> int:
    """Run the app until SIGTERM/SIGINT; Faust then waits for in-flight events and commits."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False,
                          redirect_stdouts=False)
    worker.spinner = None  # it writes terminal escapes to stdout even when quiet
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    from facescreen.bus.worker import failed

    return 1 if failed() else code
