"""The ingest service: cameras -> JPEG -> frames topic, freshest frame first.

Per camera, a capture thread reads the source and leaves each frame in a one-frame slot;
a publish thread takes the newest frame, encodes it and hands it to Kafka, one frame in
flight at a time. A live camera's capture overwrites a frame nobody took yet (counted as
stale): a slow broker costs old frames, never latency, and nothing queues. A file camera
waits for the slot instead, so a file is published whole and in order (reproducible);
when it ends the camera is finished, and the service exits once every camera finished.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import cv2
from prometheus_client import Counter, Histogram

from facescreen.bus.codecs import FrameMeta
from facescreen.core.types import Frame
from facescreen.ingest.config import CameraConfig, IngestConfig
from facescreen.ingest.sources import FrameSource, SourceError
from facescreen.ops.health import Readiness

log = logging.getLogger("facescreen.ingest.service")

PUBLISHED = Counter("facescreen_ingest_frames_published", "Frames acknowledged by the broker",
                    ["camera"])
STALE = Counter("facescreen_ingest_frames_stale",
                "Frames dropped because a newer one arrived before they were sent", ["camera"])
REJECTED = Counter("facescreen_ingest_frames_rejected",
                   "Frames not published: oversized, encode_failed, send_failed",
                   ["camera", "reason"])
FRAME_BYTES = Histogram("facescreen_ingest_frame_bytes", "Encoded JPEG size",
                        buckets=(10e3, 30e3, 100e3, 300e3, 1e6, 3e6))
PUBLISH_SECONDS = Histogram("facescreen_ingest_publish_seconds",
                            "Capture to broker acknowledgement (wall clock)",
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))


class Slot:
    """Holds at most one frame: the newest one not yet taken."""

    def __init__(self, camera: str) -> None:
        self._cond = threading.Condition()
        self._frame: tuple[Frame, float] | None = None
        self._closed = False
        self._stale = STALE.labels(camera)

    def put(self, frame: Frame, *, wait: bool, stop: threading.Event) -> None:
        """Leave a frame; `wait` (files) blocks while the slot is full, else it is replaced."""
        with self._cond:
            while wait and self._frame is not None and not stop.is_set():
                self._cond.wait(0.2)
            if self._frame is not None and not stop.is_set():
                self._stale.inc()
            self._frame = (frame, time.time())
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, stop: threading.Event) -> tuple[Frame, float] | None:
        """The newest frame and when it was captured; None once closed and empty, or stopped."""
        with self._cond:
            while self._frame is None and not self._closed and not stop.is_set():
                self._cond.wait(0.2)
            if stop.is_set():
                return None
            item, self._frame = self._frame, None
            self._cond.notify_all()
            return item


@dataclass
class CameraResult:
    camera: str
    published: int = 0
    error: str | None = None


class CameraWorker:
    """Capture and publish threads of one camera."""

    def __init__(self, camera: CameraConfig, service: IngestService) -> None:
        self.camera = camera
        self.service = service
        self.slot = Slot(camera.name)
        self.result = CameraResult(camera.name)
        self._seq = 0
        self.threads = [
            threading.Thread(target=self._capture, name=f"capture-{camera.name}", daemon=True),
            threading.Thread(target=self._publish, name=f"publish-{camera.name}", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _capture(self) -> None:
        spec = self.camera.spec()
        source = FrameSource(spec, max_reconnects=self.service.max_reconnects)
        stop = self.service.stop
        try:
            for frame in source.frames(stop):
                self.slot.put(frame, wait=not spec.live, stop=stop)
        except SourceError as exc:
            self.result.error = str(exc)
            log.error("camera stopped", extra={"fields": {"camera": spec.name,
                                                            "error": str(exc)}})
        finally:
            self.slot.close()

    def _publish(self) -> None:
        name = self.camera.name
        params = [cv2.IMWRITE_JPEG_QUALITY, self.camera.jpeg_quality]
        while (item := self.slot.take(self.service.stop)) is not None:
            self.service.readiness.waiting(f"camera:{name}")  # progress: see ops.health
            frame, captured_wall = item
            ok, encoded = cv2.imencode(".jpg", frame.image, params)
            if not ok:
                REJECTED.labels(name, "encode_failed").inc()
                continue
            data = encoded.tobytes()
            FRAME_BYTES.observe(len(data))
            if len(data) > self.service.config.max_frame_bytes:
                REJECTED.labels(name, "oversized").inc()
                log.warning("frame rejected: oversized", extra={"fields": {
                    "camera": name, "bytes": len(data),
                    "limit": self.service.config.max_frame_bytes}})
                continue
            height, width = frame.image.shape[:2]
            meta = FrameMeta(camera=name, session=self.service.session, seq=self._seq,
                             frame_index=frame.index, captured_at=frame.timestamp,
                             width=width, height=height)
            self._seq += 1
            if self.service.send(meta, data):
                self.service.readiness.progressed(f"camera:{name}")
                self.result.published += 1
                PUBLISHED.labels(name).inc()
                PUBLISH_SECONDS.observe(time.time() - captured_wall)
            else:
                REJECTED.labels(name, "send_failed").inc()


class IngestService:
    """Runs every camera of the configuration until they finish or `stop` is set."""

    def __init__(self, config: IngestConfig, producer: Any, topic: str, *,
                 readiness: Readiness | None = None, session: str | None = None,
                 max_reconnects: int | None = None, send_timeout_s: float = 30.0) -> None:
        self.config = config
        self.producer = producer
        self.topic = topic
        self.readiness = readiness or Readiness("broker")
        self.session = session or uuid.uuid4().hex[:16]
        self.max_reconnects = max_reconnects
        self.send_timeout_s = send_timeout_s
        self.stop = threading.Event()
        self.workers = [CameraWorker(c, self) for c in config.cameras]

    def send(self, meta: FrameMeta, data: bytes) -> bool:
        """Publish one frame and wait for the broker: one frame in flight per camera."""
        try:
            future = self.producer.send(self.topic, key=meta.camera.encode(), value=data,
                                        headers=meta.headers())
            future.get(self.send_timeout_s)
        except Exception as exc:  # kafka-python raises many KafkaError kinds and timeouts
            self.readiness.mark("broker", False)
            log.warning("frame not published", extra={"fields": {
                "camera": meta.camera, "seq": meta.seq, "error": type(exc).__name__}})
            return False
        self.readiness.mark("broker", True)
        return True

    def run(self) -> list[CameraResult]:
        """Blocks until every camera finished (files) or `stop` is set; then flushes."""
        self.producer.partitions_for(self.topic)  # fails early when the broker is away
        self.readiness.mark("broker", True)
        log.info("ingest started", extra={"fields": {
            "session": self.session, "topic": self.topic, "cameras": self.config.names}})
        for worker in self.workers:
            worker.start()
        try:
            for worker in self.workers:
                for thread in worker.threads:
                    while thread.is_alive():
                        thread.join(0.5)
        finally:
            self.stop.set()
            self.producer.flush(self.send_timeout_s)
        results = [w.result for w in self.workers]
        log.info("ingest finished", extra={"fields": {
            "published": {r.camera: r.published for r in results},
            "errors": {r.camera: r.error for r in results if r.error}}})
        return results


def make_producer(bootstrap: list[str], max_frame_bytes: int, linger_ms: int = 0,
                  batch_bytes: int = 16_384) -> Any:
    """A kafka-python producer for frames: never auto-creates topics, bounded blocking.

    Low latency first: a camera has one frame in flight, so lingering would only delay
    it (`linger_ms` 0); a frame larger than `batch_bytes` is sent in a batch of its own.
    """
    from kafka import KafkaProducer

    from facescreen.bus.security import kafka_options

    return KafkaProducer(bootstrap_servers=bootstrap, client_id="facescreen-ingest", acks=1,
                         enable_idempotence=False, linger_ms=linger_ms, batch_size=batch_bytes,
                         max_request_size=max_frame_bytes + 64 * 1024,
                         allow_auto_create_topics=False, max_block_ms=10_000,
                         request_timeout_ms=10_000, delivery_timeout_ms=20_000,
                         **kafka_options())
