"""The alert-store consumer's readiness and offsets on the real tansu broker.

A database outage shows on /readyz as a retry (attempts, masked error) and, with alerts
waiting, as no progress; a committed offset past the log's end is reset to the log's
start, so the alerts below it are stored rather than skipped.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from facescreen.alerts.service import AlertStoreConsumer, ConsumerSettings
from facescreen.alerts.store import AlertStore, sqlite_url
from facescreen.bus.faustapp import key_partition
from facescreen.bus.watch import WatchSettings
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.alerts.factory import alert_event
from tests.alerts.tcp_proxy import TcpProxy
from tests.distributed.fixtures_kafka import TestTopics

SESSION_S = 6.0
PASSWORD = "pw-that-must-not-show"


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    try:
        for value in values:
            producer.send(topic, key=b"cam1", value=value).get(10)
    finally:
        producer.close(10)


def _wait(what: str, ok: Callable[[], Any], timeout_s: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := ok()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return result


def _alert_ids(store: AlertStore) -> set[str]:
    with store.engine.connect() as conn:
        return {row[0] for row in conn.execute(text("SELECT alert_id FROM alerts"))}


class _Running:
    def __init__(self, consumer: AlertStoreConsumer) -> None:
        self.consumer = consumer
        self.code: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.consumer.run()

    def __enter__(self) -> _Running:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive() and self.code == 0


def _settings(topics: TestTopics, group: str) -> ConsumerSettings:
    return ConsumerSettings(bootstrap=[topics.bootstrap], bus=topics.bus,
                            group=f"{topics.prefix}{group}", session_timeout_s=SESSION_S,
                            retry_initial_s=0.2, retry_max_s=1.0,
                            watch=WatchSettings(check_s=0.5, stall_s=2.0))


@pytest.fixture
def pg_behind_proxy(pg_session_db: str) -> Iterator[tuple[str, TcpProxy]]:
    url = make_url(pg_session_db)
    proxy = TcpProxy(url.port or 5432)
    try:  # a password in the URL (the test server trusts local users, so it is unused)
        yield url.set(port=proxy.port, password=PASSWORD).render_as_string(
            hide_password=False), proxy
    finally:
        proxy.close()


def test_a_database_outage_shows_as_retrying_and_no_progress(
        topics: TestTopics, pg_behind_proxy: tuple[str, TcpProxy]) -> None:
    url, proxy = pg_behind_proxy
    store = AlertStore(url)
    consumer = AlertStoreConsumer(store, _settings(topics, "outage-watch"))
    consumer.readiness.mark("database", True)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    with _Running(consumer):
        _produce(topics.bootstrap, topics.bus.alerts.name, [json.dumps(alert_event(first))
                                                           .encode()])
        _wait("the first alert", lambda: first in _alert_ids(store))
        assert consumer.readiness.report()["ready"] is True
        proxy.cut()
        _produce(topics.bootstrap, topics.bus.alerts.name, [json.dumps(alert_event(second))
                                                           .encode()])
        report = _wait("no progress", lambda: (lambda r: r if r["checks"].get("progress")
                                               is False else None)(consumer.readiness.report()))
        assert report["ready"] is False and report["checks"]["database"] is False
        retry = report["retrying"]["database"]
        assert retry["attempts"] >= 2 and retry["error"].startswith("StoreUnavailable")
        assert PASSWORD not in json.dumps(report)
        partition = key_partition(b"cam1", topics.bus.alerts.partitions)
        assert list(report["stalled"]) == [f"{topics.bus.alerts.name}:{partition}"]
        proxy.restore()
        _wait("the alert sent during the outage", lambda: second in _alert_ids(store))
        report = _wait("ready again", lambda: (lambda r: r if r["ready"] else None)(
            consumer.readiness.report()))
        assert "retrying" not in report and "stalled" not in report
    store.close()


def _resets(topic: str, partition: int) -> float:
    value = REGISTRY.get_sample_value("facescreen_offset_resets_total", {
        "service": "alert-store", "topic": topic, "partition": str(partition),
        "policy": "earliest"})
    return value or 0.0


def test_a_committed_offset_past_the_end_is_reset_and_the_alerts_are_stored(
        topics: TestTopics, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    store = AlertStore(sqlite_url(tmp_path))
    store.upgrade()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    alerts = topics.bus.alerts.name
    _produce(topics.bootstrap, alerts, [json.dumps(alert_event(a)).encode() for a in ids])
    settings = _settings(topics, "stale-offset")
    partition = key_partition(b"cam1", topics.bus.alerts.partitions)
    tp = TopicPartition(alerts, partition)
    setter = KafkaConsumer(bootstrap_servers=topics.bootstrap, group_id=settings.group,
                           enable_auto_commit=False)
    try:
        setter.assign([tp])
        setter.commit({tp: OffsetAndMetadata(1738, "", -1)})
    finally:
        setter.close()
    before = _resets(alerts, partition)
    with caplog.at_level("WARNING", logger="facescreen.bus.watch"), \
            _Running(AlertStoreConsumer(store, settings)):
        _wait("the alerts below the stale offset", lambda: _alert_ids(store) == set(ids))
    assert _resets(alerts, partition) - before == 1
    lines = [getattr(r, "fields") for r in caplog.records  # noqa: B009
             if r.msg == "committed offset past the log's end, reset"]
    assert [{k: f[k] for k in ("topic", "partition", "committed", "end", "reset_to")}
            for f in lines] == [{"topic": alerts, "partition": partition, "committed": 1738,
                                 "end": 3, "reset_to": 0}]
    store.close()
