"""The alert-store service against the real tansu broker and the real PostgreSQL.

Alerts produced on the alerts topic appear in PostgreSQL; malformed ones go to the
dead-letter topic; a restart (same consumer group) neither duplicates nor re-reads; a
fresh group re-reading everything changes nothing; a database that goes away loses and
dead-letters nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from facescreen.alerts.service import AlertStoreConsumer, ConsumerSettings
from facescreen.alerts.store import AlertStore
from facescreen.alerts.store.models import Base
from facescreen.bus.deadletter import parse_dead_letter
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.alerts.factory import alert_event
from tests.alerts.tcp_proxy import TcpProxy
from tests.conftest import REPO
from tests.distributed.fixtures_kafka import TestTopics, read_topic

SUBJECT = "subject-name-that-must-not-be-logged"
SESSION_S = 6.0  # tansu completes a group join after about half the session timeout


@pytest.fixture
def pg_url(pg_session_db: str) -> str:
    store = AlertStore(pg_session_db)
    with store.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    store.close()
    return pg_session_db


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    try:
        for value in values:
            producer.send(topic, key=b"cam1", value=value).get(10)
    finally:
        producer.close(10)


def _doc(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _wait(what: str, ok: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _rows(url: str) -> dict[str, tuple[int, str, float]]:
    store = AlertStore(url)
    try:
        with store.engine.connect() as conn:
            return {a: (r, s, u) for a, r, s, u in conn.execute(
                text("SELECT alert_id, revision, state, updated_at FROM alerts"))}
    finally:
        store.close()


def _dead(topics: TestTopics) -> list[Any]:
    return [parse_dead_letter(r.value) for r in read_topic(topics.bootstrap,
                                                          topics.bus.dead_letter.name)]


def _service(topics: TestTopics, url: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "facescreen.cli.main", "alert-store",
            "--bootstrap", topics.bootstrap, "--db", url, "--topic-prefix", topics.prefix,
            "--session-timeout", str(SESSION_S), "--http-port", "0", "--log-level", "DEBUG"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def test_alerts_on_the_topic_land_in_postgresql_once_across_restarts(
        topics: TestTopics, pg_url: str, tmp_path: Path) -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    bad_schema = alert_event(subject_id=SUBJECT)
    bad_schema["score"] = 7.0
    _produce(topics.bootstrap, topics.bus.alerts.name, [
        _doc(alert_event(a, 0, subject_id=SUBJECT)), _doc(alert_event(a, 2, emitted_at=2e9)),
        b"{not json", _doc(alert_event(b, 0)), _doc(bad_schema),
        _doc(alert_event(a, 1, emitted_at=1e9))])  # late and older: changes nothing
    log = tmp_path / "alert-store.log"
    proc = _service(topics, pg_url, log)
    try:
        _wait("two alerts in PostgreSQL", lambda: len(_rows(pg_url)) == 2)
        _wait("two dead letters", lambda: len(_dead(topics)) == 2)
    finally:
        _stop(proc)
    rows = _rows(pg_url)
    assert {k: v[:2] for k, v in rows.items()} == {a: (2, "update"), b: (0, "open")}
    letters = _dead(topics)
    assert sorted(d["reason"] for d in letters) == ["invalid_alert", "invalid_json"]
    assert {d["service"] for d in letters} == {"alert-store"}
    assert [d["source"]["offset"] for d in letters] == [2, 4]
    assert all(SUBJECT not in json.dumps(d) for d in letters)

    # Restart, same group: only the new messages are read (no third dead letter).
    _produce(topics.bootstrap, topics.bus.alerts.name, [
        _doc(alert_event(a, 3, state="closed", emitted_at=2e9 + 1)), _doc(alert_event(c, 0)),
        b"[1, 2"])
    proc = _service(topics, pg_url, log)
    try:
        _wait("the closed revision and a third alert",
              lambda: len(_rows(pg_url)) == 3 and _rows(pg_url)[a][1] == "closed")
        _wait("the third dead letter", lambda: len(_dead(topics)) == 3)
        time.sleep(2)
        assert len(_dead(topics)) == 3  # the first two were not read again
    finally:
        _stop(proc)
    before = _rows(pg_url)
    assert {k: v[:2] for k, v in before.items()} == {a: (3, "closed"), b: (0, "open"), c: (0, "open")}

    # A fresh group re-reads the whole topic (as after a lost commit): nothing changes.
    store = AlertStore(pg_url)
    settings = ConsumerSettings(bootstrap=[topics.bootstrap], bus=topics.bus,
                                group=f"{topics.prefix}replay", session_timeout_s=SESSION_S)
    with _Running(AlertStoreConsumer(store, settings)):
        _wait("the replay's dead letters", lambda: len(_dead(topics)) == 6)
    store.close()
    assert _rows(pg_url) == before  # not even updated_at moved
    ids = [d["dead_letter_id"] for d in _dead(topics)]
    assert sorted(ids[:3]) == sorted(ids[3:])  # a redelivered message keeps its id
    output = log.read_bytes().decode()
    assert '"msg": "starting"' in output and SUBJECT not in output


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[tuple[str, TcpProxy]]:
    url = make_url(pg_url)
    proxy = TcpProxy(url.port or 5432)
    try:
        yield url.set(port=proxy.port).render_as_string(hide_password=False), proxy
    finally:
        proxy.close()


class _Running:
    """Run a consumer in a thread for the `with` block; its exit code in `.code`."""

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


def test_a_database_outage_loses_and_dead_letters_nothing(
        topics: TestTopics, pg_url: str, pg_proxy: tuple[str, TcpProxy]) -> None:
    url, proxy = pg_proxy
    store = AlertStore(url)
    settings = ConsumerSettings(bootstrap=[topics.bootstrap], bus=topics.bus,
                                group=f"{topics.prefix}outage", session_timeout_s=SESSION_S,
                                retry_initial_s=0.2, retry_max_s=1.0)
    consumer = AlertStoreConsumer(store, settings)
    first, *later = (str(uuid.uuid4()) for _ in range(4))
    with _Running(consumer):
        _produce(topics.bootstrap, topics.bus.alerts.name, [_doc(alert_event(first))])
        _wait("the first alert", lambda: first in _rows(pg_url))
        proxy.cut()
        _produce(topics.bootstrap, topics.bus.alerts.name,
                 [_doc(alert_event(a)) for a in later])
        _wait("readiness to drop", lambda: consumer.readiness.snapshot()["database"] is False)
        time.sleep(2)  # several retries against the dead database
        assert set(_rows(pg_url)) == {first}
        proxy.restore()
        _wait("the alerts sent during the outage", lambda: set(_rows(pg_url)) == {first, *later})
        assert consumer.readiness.snapshot()["database"] is True
    store.close()
    assert _dead(topics) == []
