"""The analyzer service: frames topic -> FaceAnalyzer -> faces topic (a Faust agent).

Frames are taken in batches across cameras (`stream.take_events`), checked cheapest
first, and analysed in one worker thread so the event loop keeps heartbeating. One face
event per frame, keyed by camera, sent in consumption order (so in order per camera);
a batch is acknowledged only after every event of it is on the broker, and offsets are
committed every `commit_interval_s`: a kill -9 loses nothing and redoes at most that.

Freshness: a live frame older than `FramePolicy.max_age_s` when its batch comes up is
skipped (counted per camera in `facescreen_analyzer_frames_stale_total`), so under
overload the analyzer spends its time on the newest frames and the age of what it
screens stays bounded; the camera's face events then show a gap in `seq`. A stale frame
is not at fault, so it is no dead letter; a malformed one is dead-lettered, old or not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import numpy as np
from prometheus_client import Counter, Histogram

from facescreen.alerts.events import validator
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import InferenceBackend
from facescreen.analyzer.runtime import make_backend
from facescreen.bus import deadletter
from facescreen.bus.codecs import EmbeddingDtype, FrameMeta, build_face_event, dumps
from facescreen.bus.deadletter import DeadLetter, MessageRef, failure_letter
from facescreen.bus.entry import FramePolicy, check_frame, decode_frame, frame_age, is_stale
from facescreen.bus.faustapp import FaustTuning, make_app, message_ref, raw_topic
from facescreen.bus.topics import BusConfig
from facescreen.bus.worker import (
    SendError,
    fail_stop,
    hold_forever,
    observe_lag,
    publish_dead_letter,
    retry_forever,
    watch_assignment,
)
from facescreen.core.specs import PipelineConfig
from facescreen.core.types import Face, ImageBGR
from facescreen.ops.health import Readiness

log = logging.getLogger("facescreen.analyzer.service")
SERVICE = "analyzer"

FRAMES = Counter("facescreen_analyzer_frames",
                 "Frames consumed, by outcome (face_event, dead, stale)", ["outcome"])
STALE = Counter("facescreen_analyzer_frames_stale",
                "Live frames skipped unanalysed: older than --max-frame-age", ["camera"])
FRAME_AGE = Histogram("facescreen_analyzer_frame_age_seconds",
                      "Capture -> analysis of the live frames analysed",
                      buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
FACES = Counter("facescreen_analyzer_faces", "Faces detected", ["camera"])
FACES_FILTERED = Counter("facescreen_analyzer_faces_filtered",
                         "Faces below the quality bar (no embedding)", ["camera"])
FACES_PER_FRAME = Histogram("facescreen_analyzer_faces_per_frame", "Faces per frame",
                            buckets=(0, 1, 2, 4, 8, 16, 32))
BATCH_SIZE = Histogram("facescreen_analyzer_batch_frames", "Frames per analysed batch",
                       buckets=(1, 2, 4, 8, 16, 32))
STAGE_SECONDS = Histogram("facescreen_analyzer_stage_seconds",
                          "Inference time per batch and stage (detect, embed, ...)", ["stage"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
LATENCY = Histogram("facescreen_analyzer_latency_seconds",
                    "Frame published by ingest -> its face event sent",
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def is_transient(exc: BaseException) -> bool:
    """Infrastructure away (retry), as opposed to a frame or model at fault (dead letter).

    Matched by name so the Triton client is imported only when it is used.
    """
    return (type(exc).__name__ == "InferenceUnavailable"
            or isinstance(exc, ConnectionError | TimeoutError))


def build_backend(inference: str, config: PipelineConfig, models_root: Any,
                  threads: int) -> InferenceBackend:
    """`onnx` runs the models in this process (the runtime `[inference]` picks: ONNX Runtime
    or OpenVINO); `triton://host:port` asks a Triton server."""
    if inference == "onnx":
        return make_backend(config, Path(models_root), threads)
    if inference.startswith("triton://"):
        address = inference[len("triton://"):].rstrip("/")
        if not address:
            raise ValueError("--inference triton:// needs host:port")
        from facescreen.analyzer.triton_backend import (
            ModelNames,
            TritonBackend,  # only when asked for
        )

        backend: InferenceBackend = TritonBackend(
            address, names=ModelNames.from_specs(config.detector, config.embedder))
        return backend
    raise ValueError(f"--inference {inference!r}: expected onnx or triton://host:port")


@dataclass(frozen=True)
class AnalyzerSettings:
    bootstrap: list[str]
    bus: BusConfig
    group: str = "facescreen-analyzer"
    batch_size: int = 8
    batch_wait_s: float = 0.01  # a frame that does not fill a batch waits up to this
    policy: FramePolicy = field(default_factory=FramePolicy)
    embedding_dtype: EmbeddingDtype = "float32"
    tuning: FaustTuning = field(default_factory=FaustTuning)


@dataclass(frozen=True)
class Stale:
    """A valid live frame older than the policy allows: skipped, neither event nor letter."""

    camera: str
    age_s: float


class FrameBatchAnalyzer:
    """The analyzer's work on a batch, free of Faust: checks, decoding, inference, events."""

    def __init__(self, analyzer: FaceAnalyzer, policy: FramePolicy,
                 dtype: EmbeddingDtype = "float32") -> None:
        self.analyzer = analyzer
        self.policy = policy
        self.dtype = dtype
        config = analyzer.config
        self.detector = config.detector.decoder
        self.embedder = config.embedder.name
        self.dim = config.embedder.dim

    def check(self, ref: MessageRef, now: float) -> FrameMeta | DeadLetter | Stale:
        """Headers, size and JPEG markers, then freshness (as of `now`): nothing decoded."""
        try:
            meta = check_frame(ref, self.policy)
        except DeadLetter as letter:
            return letter
        if is_stale(meta, self.policy, now):
            return Stale(meta.camera, now - meta.captured_at)
        return meta

    def warm_up(self) -> None:
        """One tiny inference: loads lazily-initialised kernels and proves the backend works."""
        self.analyzer.analyze([np.full((64, 64, 3), 128, np.uint8)])

    def analyze(self, items: Sequence[tuple[MessageRef, FrameMeta]],
                ) -> list[dict[str, Any] | DeadLetter]:
        """One result per item: its face event, or the DeadLetter saying why there is none.

        Transient backend errors propagate (the caller retries the batch); any other error
        is pinned on the frame(s) that cause it by analysing them one at a time.
        """
        images: list[ImageBGR] = []
        results: list[dict[str, Any] | DeadLetter | None] = []
        for ref, meta in items:
            try:
                images.append(decode_frame(ref, meta))
                results.append(None)
            except DeadLetter as letter:
                results.append(letter)
        faces = self._faces(images)
        now = time.time()
        it = iter(faces)
        out: list[dict[str, Any] | DeadLetter] = []
        for (_, meta), result in zip(items, results, strict=True):
            if result is not None:
                out.append(result)
                continue
            found = next(it)
            if isinstance(found, DeadLetter):
                out.append(found)
                continue
            doc = build_face_event(meta, found, detector=self.detector, embedder=self.embedder,
                                   dim=self.dim, dtype=self.dtype, analyzed_at=now)
            validator("face_event").validate(doc)
            out.append(doc)
        return out

    def _faces(self, images: list[ImageBGR]) -> list[list[Face] | DeadLetter]:
        if not images:
            return []
        before = dict(self.analyzer.clock.seconds)
        try:
            batch: list[list[Face] | DeadLetter] = list(self.analyzer.analyze(images))
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(images) == 1:
                return [DeadLetter("analysis_failed", f"{type(exc).__name__}: {exc}"[:300])]
            batch = [self._faces([image])[0] for image in images]  # find the culprit
        for stage, seconds in self.analyzer.clock.seconds.items():
            STAGE_SECONDS.labels(stage).observe(seconds - before.get(stage, 0.0))
        return batch


def build_app(settings: AnalyzerSettings, work: FrameBatchAnalyzer,
              readiness: Readiness) -> faust.App:
    app = make_app(settings.group, settings.bootstrap, settings.tuning,
                   max_request_bytes=max(1_048_576, settings.policy.max_bytes + 65_536))
    frames = raw_topic(app, settings.bus.frames.name)
    faces_topic = raw_topic(app, settings.bus.faces.name)
    dead_topic = raw_topic(app, settings.bus.dead_letter.name)
    executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
    watch_assignment(app, readiness, SERVICE, settings.bus, ("frames", "faces", "dead_letter"))

    async def in_thread(func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, func, *args)

    async def handle(events: Sequence[Any]) -> None:
        refs = [message_ref(e) for e in events]
        now = time.time()
        verdicts = [work.check(ref, now) for ref in refs]
        todo = [(ref, v) for ref, v in zip(refs, verdicts, strict=True)
                if isinstance(v, FrameMeta)]
        for _, meta in todo:
            age = frame_age(meta, now)
            if age is not None:
                FRAME_AGE.observe(max(0.0, age))
        analysed = iter(await retry_forever(
            "inference", lambda: in_thread(work.analyze, todo), readiness, "inference",
            is_transient) if todo else [])
        BATCH_SIZE.observe(len(todo))
        pending = []
        for event, ref, verdict in zip(events, refs, verdicts, strict=True):
            if isinstance(verdict, Stale):
                FRAMES.labels("stale").inc()
                STALE.labels(verdict.camera).inc()
                continue
            result = next(analysed) if isinstance(verdict, FrameMeta) else verdict
            if isinstance(result, DeadLetter):
                FRAMES.labels("dead").inc()
                key, value = deadletter.record(SERVICE, ref, result)
                pending.append(await dead_topic.send(key=key, value=value))
                continue
            camera = result["camera"]
            passed = sum("embedding" in f for f in result["faces"])
            FRAMES.labels("face_event").inc()
            FACES.labels(camera).inc(len(result["faces"]))
            FACES_FILTERED.labels(camera).inc(len(result["faces"]) - passed)
            FACES_PER_FRAME.observe(len(result["faces"]))
            headers = [("schema_version", b"1"), ("camera", camera.encode()),
                       ("seq", str(result["seq"]).encode()),
                       ("content_type", b"application/json")]
            pending.append(await faces_topic.send(key=camera.encode(), value=dumps(result),
                                                  headers=headers))
            if event.message.timestamp:
                LATENCY.observe(max(0.0, time.time() - event.message.timestamp))
        await asyncio.gather(*pending)  # on the broker before the batch is acknowledged
        observe_lag(app, SERVICE, refs[-1])

    async def handle_alone(event: Any) -> None:
        """One frame of a batch that failed: its own dead letter if it fails again."""
        try:
            await handle([event])
        except SendError:
            raise
        except Exception as exc:
            ref = message_ref(event)
            log.error("frame failed", exc_info=exc, extra={"fields": {
                "topic": ref.topic, "partition": ref.partition, "offset": ref.offset}})
            FRAMES.labels("dead").inc()
            await publish_dead_letter(dead_topic, SERVICE, ref, failure_letter(exc),
                                      tuning=settings.tuning, readiness=readiness)

    @app.agent(frames, name="analyze-frames")
    async def analyze_frames(stream: Any) -> None:
        # No frame can stop the worker: a batch that raises is redone frame by frame, and
        # a frame that raises alone is dead-lettered (internal_error, or invalid_output
        # for a face event that fails its schema). Only the broker refusing our output
        # stops it (not ready, exit 1), with the batch unacknowledged.
        async for events in stream.take_events(settings.batch_size,
                                               within=settings.batch_wait_s):
            try:
                try:
                    await handle(events)
                except SendError:
                    raise
                except Exception:
                    for event in events:
                        await handle_alone(event)
            except Exception as exc:
                fail_stop(exc, SERVICE, readiness)
                await hold_forever()

    @app.task  # type: ignore[untyped-decorator]
    async def warm_up() -> None:
        await retry_forever("inference warm-up", lambda: in_thread(work.warm_up), readiness,
                            "inference", is_transient)
        log.info("inference ready", extra={"fields": {"detector": work.detector,
                                                      "embedder": work.embedder}})

    return app
