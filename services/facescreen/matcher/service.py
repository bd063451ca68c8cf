"""The matcher service: faces topic -> SourceScreener per camera -> alerts topic (Faust).

Each face event is validated, rebuilt into core `Face`s and screened by its camera's
`SourceScreener` (track -> vote -> search -> decide -> alert life cycle): the same code
and decisions as the embedded pipeline (`matcher.work`). Alert ids come from the core and
are deterministic, so a replay publishes the same ids; events whose seq was already
screened (redelivered after an analyzer or matcher restart) are skipped.

No message can stop the worker: whatever fails for one message becomes its dead letter
and the worker moves on. What does stop it is the broker refusing our output (alerts or
dead letters) after bounded retries: then readiness turns false and the process exits 1
(`fail_stop`) with the message unacknowledged, rather than hanging while probes answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from prometheus_client import Counter, Histogram

from facescreen.bus.deadletter import MessageRef, failure_letter
from facescreen.bus.faustapp import (
    FaustTuning,
    SendError,
    fail_stop,
    hold_forever,
    make_app,
    message_ref,
    observe_lag,
    publish_dead_letter,
    raw_topic,
    send_bounded,
    watch_assignment,
)
from facescreen.bus.topics import BusConfig
from facescreen.core.matching import Candidate
from facescreen.core.screening import SearchFn
from facescreen.core.types import FloatArray
from facescreen.matcher.work import ALERT_HEADERS, FaceEventMatcher, StoppingError
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
    bounds: dict[str, Any] = {"tuning": settings.tuning, "readiness": readiness}

    async def _stopping(sender: Any, *args: Any, **kwargs: Any) -> None:
        stopping.set()

    app.on_before_shutdown.connect(cast(Any, _stopping))

    async def handle(ref: MessageRef) -> None:
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(executor, work.process, ref)
        if outcome.duplicate:
            EVENTS.labels("duplicate").inc()
            return
        for alert in outcome.alerts:  # on the broker before the event is acknowledged
            await send_bounded(alerts_topic, alert.key, alert.value, ALERT_HEADERS, **bounds)
            ALERTS.labels(outcome.camera or "", alert.watchlist).inc()
            log.info("alert", extra={"fields": {
                "alert_id": alert.alert_id, "state": alert.state, "camera": outcome.camera,
                "subject": alert.subject, "watchlist": alert.watchlist}})
        if outcome.letter is not None:
            EVENTS.labels("dead").inc()
            await publish_dead_letter(dead_topic, SERVICE, ref, outcome.letter, **bounds)
        else:
            EVENTS.labels("screened").inc()
        observe_lag(app, SERVICE, ref)

    @app.agent(faces, name="match-faces")
    async def match_faces(stream: Any) -> None:
        async for event in stream.events():
            ref = message_ref(event)
            try:
                await handle(ref)
            except StoppingError:
                await hold_forever()  # the store is away and we stop: redo it next time
            except SendError as exc:
                fail_stop(exc, SERVICE, readiness)
                await hold_forever()
            except Exception as exc:  # any other failure is this message's dead letter
                try:
                    EVENTS.labels("dead").inc()
                    await publish_dead_letter(dead_topic, SERVICE, ref, failure_letter(exc),
                                              **bounds)
                except Exception as stuck:
                    fail_stop(stuck, SERVICE, readiness)
                    await hold_forever()

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
