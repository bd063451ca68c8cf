"""The matcher process on a real broker (tansu), fed face events directly.

No analyzer here: the face events are written as the analyzer writes them, with the
enrolled subject's own template as the embedding (score 1.0, an alert on the first face)
or a stranger's. That makes each case a few messages: poison messages of every kind
found so far, each followed by the subject on the same camera, must each end as a dead
letter with its reason while the subject still alerts; and a matcher whose dead letters
the broker stops acknowledging (a proxy holds its Produce requests) must say so (not
ready) and exit 1 instead of hanging.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facescreen.bus.codecs import FrameMeta, build_face_event, dumps
from facescreen.bus.faustapp import key_partition
from facescreen.core.alignment import l2_normalise
from facescreen.core.types import Detection, Face, Quality
from facescreen.devstack.process import ServerProcess, free_port
from facescreen.devstack.tansu import tansu_binary
from facescreen.watchlist.store import LocalWatchlistStore

from tests.distributed.fixtures_kafka import TestTopics, make_topics, read_topic
from tests.distributed.kafka_proxy import KafkaProxy
from tests.distributed.test_services import facescreen_cmd, http_get, metric, wait_for

pytestmark = pytest.mark.slow
EMBEDDER, DIM = "dlib-resnet29-128", 128
SUBJECT = l2_normalise(np.random.default_rng(11).normal(size=DIM).astype(np.float32))
STRANGER = l2_normalise(np.random.default_rng(12).normal(size=DIM).astype(np.float32))


def enrol(data_dir: Path) -> None:
    store = LocalWatchlistStore(data_dir, embedder=EMBEDDER, dim=DIM)
    store.add_subject("subject-a", "demo", [("synthetic", 0.9, SUBJECT)], actor="test")


def start_matcher(name: str, topics: TestTopics, data_dir: Path, workdir: Path,
                  *extra: str) -> tuple[ServerProcess, int]:
    port = free_port()
    argv = [*facescreen_cmd(), "matcher", "--bootstrap", topics.bootstrap, "--topic-prefix",
            topics.prefix, "--http-port", str(port), "--session-timeout", "2",
            "--commit-interval", "0.5", "--data-dir", str(data_dir), *extra]

    def ready() -> bool:
        return http_get(port, "/readyz")[0] == 200

    server = ServerProcess(name, argv, workdir / f"{name}.log", {"http": port}, ready=ready)
    return server.start(timeout_s=90), port


def face(vector: np.ndarray | None, dx: float = 0.0) -> Face:
    box = (100.0 + dx, 100.0, 200.0 + dx, 220.0)
    landmarks = np.array([[130, 140], [170, 140], [150, 165], [135, 190], [165, 190]],
                         np.float32) + np.float32(dx) * np.array([1, 0], np.float32)
    reasons = () if vector is not None else ("sharpness",)
    return Face(Detection(box, landmarks, 0.9), Quality(0.8, {"sharpness": 0.5}, reasons),
                vector)


@dataclass
class Camera:
    """Face events of one camera, as the analyzer would write them, 5 frames a second."""

    name: str
    session: str = "s1"
    sent: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)

    def event(self, seq: int, faces: list[Face], **changes: Any) -> dict[str, Any]:
        meta = FrameMeta(self.name, self.session, seq, seq, seq / 5.0, 640, 480)
        doc = build_face_event(meta, faces, detector="centerface", embedder=EMBEDDER, dim=DIM)
        return {**doc, **changes}

    def send(self, producer: Any, topic: str, value: bytes) -> tuple[int, int]:
        md = producer.send(topic, key=self.name.encode(), value=value).get(10)
        self.sent.append((md.partition, md.offset))
        return md.partition, md.offset


def alerts_of(topics: TestTopics, camera: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in
            read_topic(topics.bootstrap, topics.bus.alerts.name, camera.encode())]


def opened_alerts(topics: TestTopics, camera: str) -> list[dict[str, Any]]:
    return [a for a in alerts_of(topics, camera) if a["state"] == "open"]


def dead_letters(topics: TestTopics) -> dict[tuple[int, int], dict[str, Any]]:
    letters = {}
    for record in read_topic(topics.bootstrap, topics.bus.dead_letter.name):
        event = json.loads(record.value)
        letters[(event["source"]["partition"], event["source"]["offset"])] = event
    return letters


@dataclass
class Single:
    topics: TestTopics
    data_dir: Path
    workdir: Path
    server: ServerProcess
    port: int


@pytest.fixture(scope="module")
def single(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Single]:
    workdir = tmp_path_factory.mktemp("matcher")
    enrol(workdir / "data")
    topics = make_topics(broker, "match")
    server, port = start_matcher("matcher", topics, workdir / "data", workdir)
    try:
        yield Single(topics, workdir / "data", workdir, server, port)
    finally:
        server.stop()


def poison_cases(cam: dict[str, Camera]) -> dict[str, tuple[str, bytes]]:
    """camera -> (reason, the bad message), each sent after one stranger's event (seq 0)."""
    nan_box = cam["nanbox"].event(1, [face(STRANGER)])
    nan_box["faces"][0]["box"] = [float("nan")] * 4
    huge = cam["hugebox"].event(1, [face(STRANGER)])
    huge["faces"][0]["box"] = [-1e39, -1e39, 1e39, 1e39]
    crowd = cam["crowd"].event(1, [face(None, dx=i % 300) for i in range(3000)])
    return {
        "brackets": ("too_deep", b"[" * 100_000 + b"]" * 100_000),  # 200 kB
        "deep": ("too_deep", b'{"faces":' + b"[" * 2000 + b"]" * 2000 + b"}"),  # 4 kB
        "nanbox": ("non_finite", json.dumps(nan_box).encode()),
        "hugebox": ("implausible_box", dumps(huge)),
        "nantime": ("non_finite", json.dumps(
            cam["nantime"].event(1, [face(SUBJECT)], captured_at=float("nan"))).encode()),
        "forged": ("seq_jump", dumps(cam["forged"].event(10**15, [face(STRANGER)],
                                                          captured_at=0.4))),
        "crowd": ("too_many_faces", dumps(crowd)),
    }


def test_each_poison_message_is_dead_lettered_and_the_camera_still_alerts(
        single: Single) -> None:
    from kafka import KafkaProducer

    names = ("brackets", "deep", "nanbox", "hugebox", "nantime", "forged", "crowd")
    cams = {n: Camera(f"{n}-cam") for n in names}
    cases = poison_cases(cams)
    producer = KafkaProducer(bootstrap_servers=single.topics.bootstrap,
                             max_request_size=8 * 1024 * 1024)
    faces_topic = single.topics.bus.faces.name
    bad: dict[tuple[int, int], tuple[str, str]] = {}
    for name, (reason, value) in cases.items():
        cam = cams[name]
        cam.send(producer, faces_topic, dumps(cam.event(0, [face(STRANGER)])))
        bad[cam.send(producer, faces_topic, value)] = (name, reason)
        for seq in range(1, 4):  # the subject walks in: a new track, an alert
            cam.send(producer, faces_topic, dumps(cam.event(seq, [face(SUBJECT, dx=seq)])))
    # A good event on a partition its key does not hash to: its camera's state is not here.
    stray = Camera("stray-cam")
    home = key_partition(stray.name.encode(), single.topics.bus.faces.partitions)
    md = producer.send(faces_topic, key=stray.name.encode(), partition=(home + 1) % 12,
                       value=dumps(stray.event(0, [face(SUBJECT)]))).get(10)
    bad[(md.partition, md.offset)] = ("stray", "wrong_partition")
    producer.close()
    started = time.monotonic()

    def every_letter() -> dict[tuple[int, int], dict[str, Any]] | None:
        letters = dead_letters(single.topics)
        return letters if set(bad) <= set(letters) else None

    letters = wait_for("a dead letter for every poison message", every_letter)
    for where, (name, reason) in bad.items():
        assert letters[where]["reason"] == reason, (name, letters[where])
        assert letters[where]["service"] == "matcher"
    for name in names:
        camera = f"{name}-cam"
        opened = wait_for(f"the subject's alert on {camera}",
                          functools.partial(opened_alerts, single.topics, camera))
        assert [a["subject_id"] for a in opened] == ["subject-a"], name
        assert opened[0]["frame_index"] >= 1
    print(f"\n{len(bad)} poison messages dead-lettered and every camera alerted "
          f"{time.monotonic() - started:.1f} s after the last send")
    assert single.server.process is not None and single.server.process.poll() is None
    assert http_get(single.port, "/healthz")[0] == 200
    assert http_get(single.port, "/readyz")[0] == 200
    assert metric(single.port, "facescreen_dead_letters_total", service="matcher") >= len(bad)


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[str, KafkaProxy]]:
    """A broker of its own that every client reaches through a KafkaProxy."""
    upstream = free_port()
    proxy = KafkaProxy(upstream)
    listen, advertised = f"tcp://127.0.0.1:{upstream}", f"tcp://127.0.0.1:{proxy.port}"
    server = ServerProcess("tansu-proxied", [
        str(tansu_binary()), "broker", "--listener-url", listen, "--advertised-listener-url",
        advertised, "--storage-engine", "memory://tansu/"], tmp_path / "tansu.log",
        {"kafka": upstream}).start()
    try:
        yield f"127.0.0.1:{proxy.port}", proxy
    finally:
        proxy.close()
        server.stop()


def test_a_matcher_whose_dead_letters_the_broker_refuses_is_not_ready_and_exits_1(
        proxied_broker: tuple[str, KafkaProxy], tmp_path: Path) -> None:
    from kafka import KafkaProducer

    bootstrap, proxy = proxied_broker
    enrol(tmp_path / "data")
    topics = make_topics(bootstrap, "stuck")
    server, port = start_matcher("stuck", topics, tmp_path / "data", tmp_path,
                                 "--send-timeout", "1")
    try:
        proxy.block_produce.set()  # the matcher's writes go unanswered from now on
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send(topics.bus.faces.name, key=b"cam", value=b"[" * 5000).get(10)
        producer.close()
        wait_for("readiness to turn false", lambda: http_get(port, "/readyz")[0] == 503,
                 timeout_s=30)
        assert server.process is not None
        started = time.monotonic()
        assert server.process.wait(60) == 1
        print(f"\nnot ready, then exit 1 after {time.monotonic() - started:.1f} s more; "
              f"{proxy.held} produce requests held")
        assert proxy.held >= 1
        assert "cannot make progress" in server.log_path.read_text()
    finally:
        server.stop()


def test_a_reviewers_rejection_reaches_the_cameras_screener_and_is_kept(
        single: Single) -> None:
    """'Not this person' on a camera's alert: when the same face comes back after the
    cooldown, that camera does not alert again (a control camera, same faces and no
    verdict, does); bad verdicts are dead-lettered; unknown alerts are counted."""
    from facescreen.alerts.feedback import new_feedback
    from facescreen.bus.feedback_publish import publish_feedback
    from kafka import KafkaProducer

    topics = single.topics
    rejected, control = Camera("fb-cam"), Camera("fb-ctrl")
    producer = KafkaProducer(bootstrap_servers=topics.bootstrap)

    def visit(cam: Camera, seqs: range, t0: float) -> None:
        for i, seq in enumerate(seqs):
            doc = cam.event(seq, [face(SUBJECT, dx=i)], captured_at=t0 + i / 5.0)
            cam.send(producer, topics.bus.faces.name, dumps(doc))
        producer.flush()

    for cam in (rejected, control):
        visit(cam, range(0, 4), 0.0)
    alert_id = wait_for("the first alert", lambda: opened_alerts(topics, "fb-cam"))[0][
        "alert_id"]
    applied = metric(single.port, "facescreen_matcher_feedback_total", outcome="applied")
    publish_feedback([topics.bootstrap], topics.prefix,
                     new_feedback(alert_id, actor="reviewer-1", camera="fb-cam"))
    wait_for("the verdict applied", lambda: metric(
        single.port, "facescreen_matcher_feedback_total", outcome="applied") > applied)
    unknown = metric(single.port, "facescreen_matcher_feedback_total", outcome="unknown_alert")
    publish_feedback([topics.bootstrap], topics.prefix, new_feedback(
        "00000000-0000-4000-8000-000000000000", actor="reviewer-1", camera="fb-cam"))
    md = producer.send(topics.bus.feedback.name, key=b"fb-cam", value=b"{not json").get(10)
    # The person leaves (the tracks end), then comes back after the cooldown (30 s).
    for cam in (rejected, control):
        for n, seq in enumerate(range(4, 8)):
            cam.send(producer, topics.bus.faces.name,
                     dumps(cam.event(seq, [], captured_at=4.0 + 3.0 * n)))
        visit(cam, range(8, 12), 60.0)
    wait_for("the control camera's second alert",
             lambda: len(opened_alerts(topics, "fb-ctrl")) == 2 or None)
    wait_for("the unknown alert counted", lambda: metric(
        single.port, "facescreen_matcher_feedback_total", outcome="unknown_alert") > unknown)
    letters = wait_for("the bad verdict's dead letter",
                       lambda: {k: v for k, v in dead_letters(topics).items()
                                if v["source"]["topic"] == topics.bus.feedback.name} or None)
    assert [v["reason"] for k, v in letters.items() if k == (md.partition, md.offset)] == [
        "invalid_json"]
    wait_for("the rejected camera's last event screened",
             lambda: alerts_after(topics, "fb-cam", 11) or None, timeout_s=30)
    assert [a["alert_id"] for a in opened_alerts(topics, "fb-cam")] == [alert_id]


def alerts_after(topics: TestTopics, camera: str, seq: int) -> bool:
    """The matcher has committed the camera's face event of `seq` (it was screened)."""
    from kafka.admin import KafkaAdminClient

    cam_events = [r for r in read_topic(topics.bootstrap, topics.bus.faces.name,
                                        camera.encode())
                  if json.loads(r.value).get("seq") == seq]
    if not cam_events:
        return False
    record = cam_events[-1]
    group = f"{topics.prefix}facescreen-matcher"
    admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return any(tp.topic == record.topic and tp.partition == record.partition
               and meta.offset > record.offset for tp, meta in offsets.items())
