"""The matcher service: faces topic -> SourceScreener per camera -> alerts topic (Faust).

Each face event is validated, rebuilt into core `Face`s and screened by its camera's
`SourceScreener` (track -> vote -> search -> decide -> de-duplicate): the same code and
decisions as the embedded pipeline. Alert ids come from the core and are deterministic,
so a replay publishes the same ids; events whose seq this worker already screened
(redelivered after an analyzer or matcher restart) are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from prometheus_client import Counter, Histogram

from facescreen.alerts.events import alert_to_event, validator
from facescreen.bus import deadletter
from facescreen.bus.codecs import FaceEvent, dumps
from facescreen.bus.deadletter import DeadLetter, MessageRef
from facescreen.bus.entry import check_face_event
from facescreen.bus.faustapp import (
    FaustTuning,
    fail_stop,
    make_app,
    message_ref,
    observe_lag,
    raw_topic,
    watch_assignment,
)
from facescreen.bus.topics import BusConfig
from facescreen.core.matching import Candidate
from facescreen.core.screening import SearchFn, SourceScreener
from facescreen.core.types import FloatArray
from facescreen.ops.health import Readiness

log = logging.getLogger("facescreen.matcher.service")
SERVICE = "matcher"

EVENTS = Counter("facescreen_matcher_events",
                 "Face events consumed, by outcome (screened, duplicate, dead)", ["outcome"])
ALERTS = Counter("facescreen_matcher_alerts", "Alerts published", ["camera", "watchlist"])
MATCH_SCORES = Histogram("facescreen_matcher_top_score",
                         "Best watchlist similarity of each voted track (open-set view)",
                         buckets=(-0.5, 0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95,
                                  0.97, 0.99, 1.0))
SEARCH_SECONDS = Histogram("facescreen_matcher_search_seconds", "Watchlist search latency",
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5))


class StoppingError(RuntimeError):
    """The service stops while waiting for the watchlist store to come back."""


class PatientSearch:
    """The watchlist search, retried until it answers: a face event is never at fault for a
    store that is down, so the line stops (readiness false) instead of dropping events."""

    def __init__(self, search: SearchFn, readiness: Readiness, stopping: threading.Event,
                 max_delay_s: float = 30.0) -> None:
        self._search = search
        self._readiness = readiness
        self._stopping = stopping
        self._max_delay_s = max_delay_s

    def __call__(self, probes: FloatArray, k: int) -> list[list[Candidate]]:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = self._search(probes, k)
            except Exception as exc:
                attempt += 1
                self._readiness.mark("watchlist", False)
                delay = min(self._max_delay_s, 0.5 * 2 ** min(attempt - 1, 8))
                delay *= random.uniform(0.5, 1.0)
                log.warning("watchlist search failed, retrying", extra={"fields": {
                    "attempt": attempt, "error": f"{type(exc).__name__}: {exc}",
                    "delay_s": round(delay, 2)}})
                if self._stopping.wait(delay):
                    raise StoppingError("stopped while the watchlist store was away") from exc
                continue
            SEARCH_SECONDS.observe(time.perf_counter() - started)
            self._readiness.mark("watchlist", True)
            for candidates in result:
                if candidates:
                    MATCH_SCORES.observe(candidates[0].score)
            return result


@dataclass
class CameraState:
    """What the matcher remembers of one camera: its screener and the last seq screened."""

    screener: SourceScreener
    session: str | None = None
    last_seq: int = -1
    last_captured_at: float = -math.inf


@dataclass
class ScreenerStates:
    """Per-camera screening state, held in this process.

    SEAM for the tracking issue: this is the state to move into Faust tables keyed by
    camera (changelogged, partitioned like the faces topic), so that a camera's tracks,
    cooldowns and last seq follow its partition to another worker after a rebalance or
    crash. Until then a restarted matcher starts each camera afresh: a person in view
    then may alert again (with a new alert id, as the track is new).
    """

    factory: Callable[[str], SourceScreener]
    cameras: dict[str, CameraState] = field(default_factory=dict)

    def duplicate(self, event: FaceEvent) -> bool:
        state = self.cameras.get(event.camera)
        return (state is not None and state.session == event.session
                and event.seq <= state.last_seq)

    def screener_for(self, event: FaceEvent) -> SourceScreener:
        """The camera's screener; a new session whose clock went backwards (a file replayed)
        starts a new timeline, so tracks and cooldowns do not leak between runs."""
        state = self.cameras.get(event.camera)
        if state is None or (state.session != event.session
                             and event.captured_at < state.last_captured_at):
            state = CameraState(self.factory(event.camera))
            self.cameras[event.camera] = state
        return state.screener

    def screened(self, event: FaceEvent) -> None:
        state = self.cameras[event.camera]
        state.session, state.last_seq = event.session, event.seq
        state.last_captured_at = event.captured_at


class FaceEventMatcher:
    """The matcher's work on one face event, free of Faust."""

    def __init__(self, search: SearchFn, thresholds: Mapping[str, float], *, embedder: str,
                 dim: int, cooldown_s: float = 30.0, top_k: int = 5) -> None:
        self.embedder = embedder
        self.dim = dim
        self.states = ScreenerStates(lambda camera: SourceScreener(
            camera, search, thresholds, cooldown_s=cooldown_s, top_k=top_k))

    def check(self, ref: MessageRef) -> FaceEvent | DeadLetter:
        try:
            return check_face_event(ref, self.embedder, self.dim)
        except DeadLetter as letter:
            return letter

    def screen(self, event: FaceEvent) -> list[dict[str, Any]] | None:
        """Validated alert events for this face event; None when it is a redelivery."""
        if self.states.duplicate(event):
            return None
        screener = self.states.screener_for(event)
        _, alerts = screener.screen(event.faces, event.frame_index, event.captured_at)
        self.states.screened(event)
        docs = []
        for alert in alerts:
            doc = alert_to_event(alert, event.detector, event.embedder)
            validator("alert").validate(doc)
            docs.append(doc)
        return docs


@dataclass(frozen=True)
class MatcherSettings:
    bootstrap: list[str]
    bus: BusConfig
    group: str = "facescreen-matcher"
    tuning: FaustTuning = field(default_factory=FaustTuning)


def build_app(settings: MatcherSettings, work: FaceEventMatcher, readiness: Readiness,
              stopping: threading.Event) -> faust.App:
    app = make_app(settings.group, settings.bootstrap, settings.tuning)
    faces = raw_topic(app, settings.bus.faces.name)
    alerts_topic = raw_topic(app, settings.bus.alerts.name)
    dead_topic = raw_topic(app, settings.bus.dead_letter.name)
    executor = ThreadPoolExecutor(1, thread_name_prefix="screen")
    watch_assignment(app, readiness, SERVICE)

    async def _stopping(sender: Any, *args: Any, **kwargs: Any) -> None:
        stopping.set()

    app.on_before_shutdown.connect(cast(Any, _stopping))

    async def handle(ref: MessageRef) -> None:
        verdict = work.check(ref)
        if isinstance(verdict, DeadLetter):
            EVENTS.labels("dead").inc()
            key, value = deadletter.record(SERVICE, ref, verdict)
            await (await dead_topic.send(key=key, value=value))
            return
        loop = asyncio.get_running_loop()
        docs = await loop.run_in_executor(executor, work.screen, verdict)
        if docs is None:
            EVENTS.labels("duplicate").inc()
            return
        EVENTS.labels("screened").inc()
        pending = []
        for doc in docs:
            ALERTS.labels(doc["source"], doc["watchlist"]).inc()
            pending.append(await alerts_topic.send(
                key=doc["source"].encode(), value=dumps(doc),
                headers=[("schema_version", b"1"), ("content_type", b"application/json")]))
            log.info("alert", extra={"fields": {
                "alert_id": doc["alert_id"], "camera": doc["source"],
                "subject": doc["subject_id"], "watchlist": doc["watchlist"],
                "score": doc["score"], "track_id": doc["track_id"]}})
        await asyncio.gather(*pending)  # on the broker before the event is acknowledged
        observe_lag(app, SERVICE, ref)

    @app.agent(faces, name="match-faces")
    async def match_faces(stream: Any) -> None:
        async for event in stream.events():
            try:
                await handle(message_ref(event))
            except Exception as exc:
                fail_stop(exc, SERVICE)
                await asyncio.Event().wait()  # hold the event unacknowledged until stopped

    return app


class LocalLiveMatcher:
    """A data directory's exact search, reloaded when its files change (checked each second).

    The thresholds mapping is updated in place, so screeners holding it see new values.
    """

    def __init__(self, store: Any, check_every_s: float = 1.0) -> None:
        self._store = store
        self._check_every_s = check_every_s
        self._checked = 0.0
        self._token: tuple[int, ...] = ()
        self.thresholds: dict[str, float] = {}
        self._search: SearchFn = lambda probes, k: [[] for _ in range(len(probes))]
        self._reload()

    def _files_token(self) -> tuple[int, ...]:
        token = []
        for name in ("watchlist.json", "embeddings.npz"):
            try:
                token.append((self._store.data_dir / name).stat().st_mtime_ns)
            except OSError:
                token.append(0)
        return tuple(token)

    def _reload(self) -> None:
        token = self._files_token()
        search, thresholds = self._store.matcher()
        self._search = search
        self.thresholds.clear()
        self.thresholds.update(thresholds)
        self._token = token
        log.info("watchlist loaded", extra={"fields": {"watchlists": sorted(self.thresholds)}})

    def search(self, probes: FloatArray, k: int) -> list[list[Candidate]]:
        now = time.monotonic()
        if now - self._checked >= self._check_every_s:
            self._checked = now
            if self._files_token() != self._token:
                self._reload()
        return self._search(probes, k)
