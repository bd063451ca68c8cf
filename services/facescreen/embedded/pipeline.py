"""The embedded mode: every stage in one process, wired with in-memory queues.

Capture runs in one thread per source; analysis runs in a worker thread so the event loop
stays free; screening and sinks run on the loop. Live sources keep only the freshest frames
(the oldest are dropped and counted); file sources are never dropped, so a file gives the
same result every run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from prometheus_client import Counter

from facescreen.alerts.events import AlertSink, alert_to_event
from facescreen.alerts.feedback import LocalFeedbackLog
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core.alerting import Alert
from facescreen.core.screening import FaceDecision, ScreeningPolicy, SearchFn, SourceScreener
from facescreen.core.types import Face, Frame
from facescreen.ingest.sources import FrameSource, SourceError, SourceSpec

log = logging.getLogger("facescreen.embedded")
FRAMES_DROPPED = Counter("facescreen_frames_dropped_total", "Stale frames dropped", ["source"])
FACES_SEEN = Counter("facescreen_faces_total", "Faces detected", ["source"])
FACES_FILTERED = Counter("facescreen_faces_filtered_total", "Faces below the quality bar",
                         ["source"])
ALERTS = Counter("facescreen_alerts_total", "Alerts opened", ["source", "watchlist"])


@dataclass
class RunOptions:
    sources: list[SourceSpec]
    batch_size: int = 4
    queue_size: int = 8
    screening: ScreeningPolicy = field(default_factory=ScreeningPolicy)
    per_source: Mapping[str, ScreeningPolicy] = field(default_factory=dict)
    status_every_s: float = 1.0
    snapshot_dir: Path | None = None
    max_reconnects: int | None = None
    feedback: LocalFeedbackLog | None = None  # reviewers' verdicts, read about once a second
    max_frame_age_s: float = 2.0  # live frames older than this are dropped, not analysed
    crops: Callable[[Alert, Frame], None] | None = None  # opt-in: the alert's best face


@dataclass
class RunStats:
    frames: int = 0
    faces: int = 0
    faces_passed: int = 0
    alerts: int = 0
    dropped: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def line(self) -> str:
        elapsed = max(1e-6, time.perf_counter() - self.started)
        return (f"frames {self.frames} ({self.frames / elapsed:.1f}/s)  faces {self.faces} "
                f"({self.faces_passed} passed quality)  alerts {self.alerts}  "
                f"dropped {self.dropped}")


FrameCallback = Callable[[Frame, list[FaceDecision], list[Alert]], None]


class EmbeddedPipeline:
    """decode -> detect -> quality -> embed -> match, for several sources at once."""

    def __init__(self, analyzer: FaceAnalyzer, search: SearchFn, thresholds: Mapping[str, float],
                 sink: AlertSink, options: RunOptions,
                 on_frame: FrameCallback | None = None) -> None:
        self.analyzer = analyzer
        self.sink = sink
        self.options = options
        self.on_frame = on_frame
        self.stats = RunStats()
        self.stop = threading.Event()
        self.screeners = {
            s.name: SourceScreener(s.name, search, thresholds,
                                   options.per_source.get(s.name, options.screening))
            for s in options.sources
        }
        self._finished: set[str] = set()
        self._feedback_read = 0.0
        self._source_frames = {s.name: 0 for s in options.sources}
        self._source_errors: dict[str, str] = {}
        self._models = (analyzer.config.detector.decoder, analyzer.config.embedder.name)

    async def run(self) -> RunStats:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pending: dict[str, deque[Frame]] = {s.name: deque() for s in self.options.sources}
        self._open = set(self._pending)
        # Files wait for room instead of dropping: one slot per frame queued or in analysis.
        self._slots = {s.name: threading.Semaphore(self.options.queue_size)
                       for s in self.options.sources if not s.live}
        threads = [threading.Thread(target=self._capture, args=(s, loop),
                                    name=f"capture-{s.name}", daemon=True)
                   for s in self.options.sources]
        for t in threads:
            t.start()
        status = asyncio.create_task(self._status())
        try:
            await self._analyze()
            for name in self.screeners:  # stopped early: the tracks end with the run
                self._finish_screener(name)
        finally:
            self.stop.set()
            for sem in self._slots.values():
                sem.release(self.options.queue_size)  # unblock file readers waiting for room
            status.cancel()
            for t in threads:
                await asyncio.to_thread(t.join, 5.0)
        return self.stats

    # -- capture (one thread per source) ---------------------------------------------------
    def _capture(self, spec: SourceSpec, loop: asyncio.AbstractEventLoop) -> None:
        source = FrameSource(spec, max_reconnects=self.options.max_reconnects)
        try:
            for frame in source.frames(self.stop):
                if not spec.live:
                    self._slots[spec.name].acquire()  # files wait for room: nothing dropped
                if self.stop.is_set():
                    break
                loop.call_soon_threadsafe(self._offer, spec, frame)
        except SourceError as exc:
            log.error("source %s stopped: %s", spec.name, exc)
            self.stats.errors.append(f"{spec.name}: {exc}")
            self._source_errors[spec.name] = str(exc)
        finally:
            loop.call_soon_threadsafe(self._finish, spec.name)

    def _offer(self, spec: SourceSpec, frame: Frame) -> None:
        pending = self._pending[spec.name]
        while spec.live and len(pending) >= self.options.queue_size:
            pending.popleft()  # frames are perishable: keep the freshest
            FRAMES_DROPPED.labels(spec.name).inc()
            self.stats.dropped += 1
        pending.append(frame)
        self._wake.set()

    def _finish(self, name: str) -> None:
        self._open.discard(name)
        self._wake.set()

    def _next_batch(self) -> list[Frame]:
        """Up to batch_size frames, taken round-robin so no source starves another.

        A live frame older than `max_frame_age_s` is dropped (and counted) rather than
        analysed: under overload the age of what is screened stays bounded, instead of the
        backlog making every decision later than the last.
        """
        batch: list[Frame] = []
        now = time.time()
        while len(batch) < self.options.batch_size and any(self._pending.values()):
            for name, pending in self._pending.items():
                if pending and len(batch) < self.options.batch_size:
                    frame = pending.popleft()
                    if name in self._slots:
                        self._slots[name].release()
                    elif now - frame.timestamp > self.options.max_frame_age_s:
                        FRAMES_DROPPED.labels(name).inc()
                        self.stats.dropped += 1
                        continue
                    batch.append(frame)
        return batch

    # -- analysis and screening ------------------------------------------------------------
    async def _analyze(self) -> None:
        while not self.stop.is_set():
            self._read_feedback()
            for name in self._pending:
                if name not in self._open and not self._pending[name]:
                    self._finish_screener(name)  # every frame of the source is screened
            batch = self._next_batch()
            if not batch:
                if not self._open:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            faces = await asyncio.to_thread(self.analyzer.analyze, [f.image for f in batch])
            for frame, frame_faces in zip(batch, faces, strict=True):
                self._screen(frame, frame_faces)

    def _finish_screener(self, name: str) -> None:
        if name not in self._finished:
            self._finished.add(name)
            self._emit(None, self.screeners[name].finish())

    def _read_feedback(self) -> None:
        log_ = self.options.feedback
        if log_ is None or time.monotonic() - self._feedback_read < 1.0:
            return
        self._feedback_read = time.monotonic()
        for feedback in log_.new():
            applied = [name for name, screener in self.screeners.items()
                       if feedback.camera in (None, name) and screener.apply_feedback(feedback)]
            log.info("feedback %s on alert %s applied by %s", feedback.verdict,
                     feedback.alert_id, applied or "no source")

    def _screen(self, frame: Frame, faces: list[Face]) -> None:
        screener = self.screeners[frame.source]
        decisions, alerts = screener.screen(faces, frame.index, frame.timestamp)
        passed = sum(f.embedding is not None for f in faces)
        self.stats.frames += 1
        self._source_frames[frame.source] += 1
        self.stats.faces += len(faces)
        self.stats.faces_passed += passed
        FACES_SEEN.labels(frame.source).inc(len(faces))
        FACES_FILTERED.labels(frame.source).inc(len(faces) - passed)
        self._emit(frame, alerts)
        if self.on_frame is not None:
            self.on_frame(frame, decisions, alerts)

    def _emit(self, frame: Frame | None, alerts: list[Alert]) -> None:
        """Write each alert revision; a snapshot when its best face is in this frame."""
        for alert in alerts:
            if alert.state == "open":
                self.stats.alerts += 1
                ALERTS.labels(alert.source, alert.watchlist).inc()
            self.sink.write(alert_to_event(alert, *self._models))
            best_face_here = (frame is not None and alert.state != "closed"
                              and alert.frame_index == frame.index)
            if best_face_here and frame is not None:
                if self.options.snapshot_dir is not None:
                    save_snapshot(self.options.snapshot_dir, frame, alert)
                if self.options.crops is not None:
                    self.options.crops(alert, frame)

    def camera_status(self) -> list[dict[str, object]]:
        """Each source as the operator sees it: running, finished or failed (and why)."""
        out: list[dict[str, object]] = []
        for spec in self.options.sources:
            if spec.name in self._source_errors:
                state = "failed"
            elif spec.name in self._finished:
                state = "finished"
            else:
                state = "running"
            out.append({"name": spec.name, "uri": spec.display_uri, "live": spec.live,
                        "state": state, "frames": self._source_frames[spec.name],
                        "error": self._source_errors.get(spec.name)})
        return out

    async def _status(self) -> None:
        interactive = sys.stderr.isatty()
        every = self.options.status_every_s if interactive else 5 * self.options.status_every_s
        while True:
            await asyncio.sleep(every)
            line = self.stats.line()
            if interactive:
                sys.stderr.write("\r" + line + "   ")
                sys.stderr.flush()
            else:
                log.info(line)


def save_snapshot(directory: Path, frame: Frame, alert: Alert) -> Path:
    """Opt-in evidence for the reviewer: the frame with the alerted face boxed."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # face images: the owner only, whatever the umask
    image = frame.image.copy()
    x1, y1, x2, y2 = (int(v) for v in alert.box)
    cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 255), 2)
    cv2.putText(image, f"{alert.subject_id} {alert.score:.3f}", (x1, max(12, y1 - 6)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
    path = directory / f"{alert.alert_id}.jpg"
    ok, encoded = cv2.imencode(".jpg", image)
    if not ok:
        raise OSError(f"could not encode the snapshot of alert {alert.alert_id}")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(encoded.tobytes())
    os.replace(tmp, path)  # an update replaces the best face atomically
    return path
