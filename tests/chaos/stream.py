"""A live multi-camera stream for chaos tests: real clips, published at real time.

`facescreen ingest` reads a file as fast as the broker takes it (reproducible, but not
live), and a chaos test needs frames arriving at a camera's pace while components die, so
the test publishes them itself, exactly as ingest would: one JPEG per message keyed by
camera, the frame headers of `frame.schema.json`, wall-clock capture times. Each camera
replays a clip in a loop from its own offset; the JPEGs are encoded once, so a frame
shown by several cameras is byte-identical and the reference analyses it once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2


@dataclass(frozen=True)
class Clip:
    """A clip's frames at a given rate, as JPEG bytes, and their size."""

    jpegs: tuple[bytes, ...]
    width: int
    height: int


def load_clip(path: Path, fps: float, max_frames: int, quality: int = 90) -> Clip:
    """Every `native fps / fps`-th frame of `path`, at most `max_frames`, JPEG-encoded."""
    capture = cv2.VideoCapture(str(path))
    native = capture.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, round(native / fps))
    jpegs: list[bytes] = []
    size = (0, 0)
    index = 0
    try:
        while len(jpegs) < max_frames:
            ok, image = capture.read()
            if not ok:
                break
            if index % step == 0:
                done, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
                assert done, f"cannot encode frame {index} of {path}"
                jpegs.append(data.tobytes())
                size = (image.shape[1], image.shape[0])
            index += 1
    finally:
        capture.release()
    assert jpegs, f"no frame read from {path}"
    return Clip(tuple(jpegs), *size)


def blank_clip(width: int, height: int, quality: int = 90) -> Clip:
    """An empty scene (no face): shown long enough, it ends every track in view."""
    import numpy as np

    done, data = cv2.imencode(".jpg", np.full((height, width, 3), 96, np.uint8),
                              [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert done
    return Clip((data.tobytes(),), width, height)


@dataclass(frozen=True)
class Feed:
    """One camera: a clip played in a loop from `offset`."""

    camera: str
    clip: Clip
    offset: int = 0

    def jpeg(self, seq: int) -> bytes:
        return self.clip.jpegs[(self.offset + seq) % len(self.clip.jpegs)]


@dataclass
class Published:
    """What the publisher put on the topic: (camera, seq) -> broker acknowledgement."""

    acked: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class LivePublisher(threading.Thread):
    """Publishes the next frame of every feed each 1/fps s until `stop()` or `limit` frames
    per camera. Capture time is the wall clock at the tick; seq and frame_index count the
    camera's frames of this session. `seq_start` continues a session (a publisher that
    outlived a broker restart)."""

    def __init__(self, bootstrap: str, topic: str, feeds: Sequence[Feed], fps: float, *,
                 limit: int | None = None, session: str | None = None,
                 seq_start: int = 0) -> None:
        super().__init__(name="live-publisher", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.feeds = list(feeds)
        self.fps = fps
        self.limit = limit
        self.session = session or f"chaos-{uuid.uuid4().hex[:8]}"
        self.seq_start = seq_start
        self.published = Published()
        self.next_seq = seq_start
        self._halt = threading.Event()

    def halt(self) -> None:
        """Stop publishing, without checking anything (a run that failed)."""
        self._halt.set()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        assert not self.is_alive(), "the publisher did not stop"
        assert not self.published.errors, self.published.errors[:3]

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0,
                                 max_request_size=4 * 1024 * 1024)
        pending: list[tuple[tuple[str, int], Any]] = []
        started = time.monotonic()
        tick = 0
        try:
            while not self._halt.is_set() and (self.limit is None or tick < self.limit):
                seq = self.seq_start + tick
                for feed in self.feeds:
                    headers = frame_headers(feed, self.session, seq, time.time())
                    future = producer.send(self.topic, key=feed.camera.encode(),
                                           value=feed.jpeg(seq), headers=headers)
                    pending.append(((feed.camera, seq), future))
                self.next_seq = seq + 1
                tick += 1
                self._collect(pending, block=False)
                self._halt.wait(max(0.0, started + tick / self.fps - time.monotonic()))
            producer.flush(30)
            self._collect(pending, block=True)
        except Exception as exc:  # reported by stop()
            self.published.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            producer.close(10)

    def _collect(self, pending: list[tuple[tuple[str, int], Any]], block: bool) -> None:
        keep = []
        for key, future in pending:
            if not block and not future.is_done:
                keep.append((key, future))
                continue
            try:
                metadata = future.get(30)
            except Exception as exc:
                self.published.errors.append(f"{key}: {type(exc).__name__}: {exc}")
                continue
            self.published.acked[key] = (metadata.partition, metadata.offset)
        pending[:] = keep


def frame_headers(feed: Feed, session: str, seq: int, captured_at: float,
                  ) -> list[tuple[str, bytes]]:
    from facescreen.bus.codecs import FrameMeta

    meta = FrameMeta(feed.camera, session, seq, seq, captured_at, feed.clip.width,
                     feed.clip.height)
    return meta.headers()
