"""The matcher service: faces topic -> SourceScreener per camera -> alerts topic (Faust).

Each face event is validated, rebuilt into core `Face`s and screened by its camera's
`SourceScreener` (track -> vote -> search -> decide -> alert life cycle): the same code
and decisions as the embedded pipeline (`matcher.work`). Alert ids come from the core and
are deterministic, so a replay publishes the same ids; events whose seq was already
screened (redelivered after an analyzer or matcher restart) are skipped.

Each camera's state lives in a table keyed by camera (`matcher.table`), whose changelog
topic is co-partitioned with the faces and feedback topics: after every event that
changed it, the state's JSON is written to the changelog (and acknowledged) after the
event's alerts and before the event is acknowledged. A worker that gets a partition
(restart, crash, rebalance) reads the partition's changelog before it screens any of its
events, and continues the camera's tracks, open alerts and cooldowns: the same person in
view keeps the same alert id. Reviewers' verdicts (feedback topic) reach the same
camera's screener and are saved the same way. One lock orders the two agents'
read-screen-save steps.

No message can stop the worker: whatever fails for one message becomes its dead letter
and the worker moves on. What does stop it is the broker refusing our output (alerts,
state or dead letters) after bounded retries: then readiness turns false and the process
exits 1 (`fail_stop`) with the message unacknowledged, rather than hanging while probes
answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from prometheus_client import Counter

from facescreen.bus.deadletter import DeadLetter, MessageRef, failure_letter
from facescreen.bus.faustapp import (
    FaustTuning,
    key_partition,
    make_app,
    message_ref,
    raw_topic,
)
from facescreen.bus.topics import BusConfig
from facescreen.bus.worker import (
    SendError,
    fail_stop,
    hold_forever,
    observe_lag,
    publish_dead_letter,
    send_bounded,
    watch_assignment,
)
from facescreen.matcher.table import CameraTable
from facescreen.matcher.work import ALERT_HEADERS, FaceEventMatcher, Outcome, StoppingError
from facescreen.ops.health import Readiness
from facescreen.ops.retry import call_async, infrastructure

log = logging.getLogger("facescreen.matcher.service")
SERVICE = "matcher"

EVENTS = Counter("facescreen_matcher_events",
                 "Face events consumed, by outcome (screened, duplicate, dead)", ["outcome"])
FEEDBACK = Counter("facescreen_matcher_feedback",
                   "Feedback consumed, by outcome (applied, unknown_alert, dead)", ["outcome"])
ALERTS = Counter("facescreen_matcher_alerts", "Alert revisions published",
                 ["camera", "watchlist", "state"])
STATE_WRITES = Counter("facescreen_matcher_state_writes", "Camera states saved to the table")
STATE_BYTES = Counter("facescreen_matcher_state_bytes", "Bytes of camera states saved")

Job = Callable[[MessageRef, "bytes | None"], Outcome]
STATE_POLICY = infrastructure(lambda exc: isinstance(exc, Exception), name="state")


@dataclass(frozen=True)
class MatcherSettings:
    bootstrap: list[str]
    bus: BusConfig
    group: str = "facescreen-matcher"
    tuning: FaustTuning = field(default_factory=FaustTuning)


def misplaced(ref: MessageRef, partitions: int) -> DeadLetter | None:
    """A keyed message on another partition than the default partitioner's: its camera's
    state lives elsewhere, so it must not be screened (or saved) here."""
    if ref.key is None:
        return None  # no camera: the entry checks refuse it
    expected = key_partition(ref.key, partitions)
    if expected == ref.partition:
        return None
    return DeadLetter("wrong_partition", f"key hashes to partition {expected} of "
                      f"{partitions}, message is on {ref.partition}")


def build_app(settings: MatcherSettings, work: FaceEventMatcher, readiness: Readiness,
              stopping: threading.Event) -> faust.App:
    bus = settings.bus
    app = make_app(settings.group, settings.bootstrap, settings.tuning, compression="gzip")
    faces = raw_topic(app, bus.faces.name)
    feedback = raw_topic(app, bus.feedback.name)
    alerts_topic = raw_topic(app, bus.alerts.name)
    dead_topic = raw_topic(app, bus.dead_letter.name)
    changelog = raw_topic(app, bus.matcher_state.name, partitions=bus.faces.partitions)
    table = CameraTable(settings.bootstrap, bus.matcher_state.name)
    executor = ThreadPoolExecutor(1, thread_name_prefix="screen")
    lock = asyncio.Lock()
    loading: set[asyncio.Task[None]] = set()
    watch_assignment(app, readiness, SERVICE, bus, ("faces", "alerts", "dead_letter", "feedback",
                                                  "matcher_state"))
    bounds: dict[str, Any] = {"tuning": settings.tuning, "readiness": readiness}

    def _faces_partitions(tps: Any) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == bus.faces.name}

    async def _stopping(sender: Any, *args: Any, **kwargs: Any) -> None:
        stopping.set()
        await table.stop()

    async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        work.clear_pending = True  # live states may be stale after a rebalance
        table.revoke(_faces_partitions(args[0] if args else kwargs.get("revoked", ())))

    async def _load(partitions: set[int]) -> None:
        # the broker away: retried by policy, not ready ('state' false) meanwhile
        await call_async(STATE_POLICY, "camera states", lambda: table.assign(partitions),
                         readiness=readiness)
        readiness.mark("state", table.loaded())

    async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        partitions = _faces_partitions(args[0] if args else kwargs.get("assigned", ()))
        readiness.mark("state", False)
        task = asyncio.create_task(_load(partitions))
        loading.add(task)
        task.add_done_callback(loading.discard)

    app.on_before_shutdown.connect(cast(Any, _stopping))
    app.on_partitions_revoked.connect(cast(Any, _revoked))
    app.on_partitions_assigned.connect(cast(Any, _assigned))

    async def save(ref: MessageRef, camera: str, state: bytes) -> None:
        key = camera.encode()
        # One awaited record at a time: each is a record batch of its own, which keeps
        # tansu's end offsets exact for the next reader (see matcher.table).
        written = await send_bounded(changelog, key, state, partition=ref.partition,
                                     **bounds)
        table.put(key, ref.partition, state, getattr(written, "offset", None))
        work.states.mark_saved(camera, state)
        STATE_WRITES.inc()
        STATE_BYTES.inc(len(state))

    async def run(ref: MessageRef, job: Job) -> Outcome:
        """Read the camera's saved state, do the job in the worker thread, send its alerts,
        then save the new state: in that order, under the lock."""
        letter = misplaced(ref, bus.faces.partitions)
        if letter is not None:
            await publish_dead_letter(dead_topic, SERVICE, ref, letter, **bounds)
            return Outcome(letter=letter)
        await table.ready(ref.partition)  # the partition's saved states are read
        async with lock:
            stored = table.data.get(ref.key) if ref.key is not None else None
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(executor, job, ref, stored)
            for alert in outcome.alerts:
                await send_bounded(alerts_topic, alert.key, alert.value, ALERT_HEADERS,
                                   **bounds)
                ALERTS.labels(outcome.camera or "", alert.watchlist, alert.state).inc()
                log.info("alert", extra={"fields": {
                    "alert_id": alert.alert_id, "state": alert.state,
                    "camera": outcome.camera, "subject": alert.subject,
                    "watchlist": alert.watchlist}})
            if outcome.state is not None and outcome.camera:
                await save(ref, outcome.camera, outcome.state)
        if outcome.letter is not None:
            await publish_dead_letter(dead_topic, SERVICE, ref, outcome.letter, **bounds)
        return outcome

    async def consume(stream: Any, job: Job, counter: Counter) -> None:
        async for event in stream.events():
            ref = message_ref(event)
            try:
                outcome = await run(ref, job)
            except StoppingError:
                await hold_forever()  # the store is away and we stop: redo it next time
            except SendError as exc:
                fail_stop(exc, SERVICE, readiness)
                await hold_forever()
            except Exception as exc:  # any other failure is this message's dead letter
                counter.labels("dead").inc()
                try:
                    await publish_dead_letter(dead_topic, SERVICE, ref, failure_letter(exc),
                                              **bounds)
                except Exception as stuck:
                    fail_stop(stuck, SERVICE, readiness)
                    await hold_forever()
                continue
            counter.labels(_label(outcome, job == work.feedback)).inc()
            observe_lag(app, SERVICE, ref)

    @app.agent(faces, name="match-faces")
    async def match_faces(stream: Any) -> None:
        await consume(stream, work.process, EVENTS)

    @app.agent(feedback, name="apply-feedback")
    async def apply_feedback(stream: Any) -> None:
        await consume(stream, work.feedback, FEEDBACK)

    return app


def _label(outcome: Outcome, is_feedback: bool) -> str:
    if outcome.letter is not None:
        return "dead"
    if is_feedback:
        return "applied" if outcome.applied else "unknown_alert"
    return "duplicate" if outcome.duplicate else "screened"
