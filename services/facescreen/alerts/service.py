"""The alert-store service (distributed mode): alerts topic -> `AlertStore` (PostgreSQL).

A kafka-python consumer group reads the alerts topic; each message is checked (size,
bounded JSON, schema v2) and upserted; offsets are committed only after the database has
committed what they cover, so a crash redelivers at most the last batch and the
idempotent ingest absorbs it (at least once, effectively once per revision). A message
that can never be stored goes to the dead-letter topic (its reference, never its
content) and the consumer moves on. A database that cannot be reached is not the
message's fault: the consumer turns not ready, rewinds to the first message not stored
and retries with jittered back-off (`facescreen.ops.retry`, shown under `retrying` on
/readyz), so nothing is lost or dead-lettered while the database is down. If the broker
refuses a dead letter the process stops (exit 1) without committing past it, rather than
skipping a message silently. Every `check_s` the bus is checked (`facescreen.bus.watch`):
topics present, committed offsets within the log (else reset by policy), progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from facescreen.alerts.store import AlertStore, InvalidAlert, StoreUnavailable
from facescreen.bus.deadletter import DeadLetter, KafkaDeadLetterProducer, MessageRef, failure_letter
from facescreen.bus.safejson import JsonLimitError, loads_bounded
from facescreen.bus.topics import BusConfig
from facescreen.bus.watch import (
    BrokerView,
    ProgressTracker,
    WatchSettings,
    out_of_range,
    record_reset,
    reset_target,
)
from facescreen.ops.health import Readiness
from facescreen.ops.retry import Backoff, RetryPolicy, Schedule

log = logging.getLogger("facescreen.alerts.service")
SERVICE = "alert-store"
MAX_ALERT_BYTES = 64 * 1024  # an alert event is about 1 KB
MAX_DEPTH = 4  # the deepest legitimate path is evidence.margin / box[i]: depth 2

MESSAGES = Counter("facescreen_alert_store_messages",
                   "Alert messages consumed, by outcome (stored, unchanged, dead)", ["outcome"])


@dataclass(frozen=True)
class ConsumerSettings:
    bootstrap: list[str]
    bus: BusConfig
    group: str = "facescreen-alert-store"
    session_timeout_s: float = 10.0
    poll_timeout_s: float = 1.0
    max_records: int = 200
    retry_initial_s: float = 0.5
    retry_max_s: float = 15.0
    send_timeout_s: float = 10.0
    watch: WatchSettings = field(default_factory=WatchSettings.from_env)


def parse_alert(ref: MessageRef) -> dict[str, Any]:
    """The message's JSON object at bounded cost; DeadLetter if it is not one."""
    value = ref.value
    if not value:
        raise DeadLetter("invalid_json", "empty message")
    if len(value) > MAX_ALERT_BYTES:
        raise DeadLetter("oversized", f"alert of {len(value):,} bytes exceeds {MAX_ALERT_BYTES:,}")
    try:
        doc = loads_bounded(value, MAX_DEPTH)
    except JsonLimitError as exc:
        raise DeadLetter(exc.reason, str(exc)) from None
    except ValueError as exc:
        raise DeadLetter("invalid_json", f"not JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise DeadLetter("invalid_alert", f"an alert is a JSON object, got {type(doc).__name__}")
    return doc


def store_message(store: AlertStore, ref: MessageRef) -> dict[str, Any] | None:
    """Ingest one message: its document if the store changed, else None. DeadLetter for a
    bad message; StoreUnavailable passes through (the message is fine, the database not)."""
    doc = parse_alert(ref)
    try:
        return doc if store.ingest(doc) else None
    except InvalidAlert as exc:
        raise DeadLetter("invalid_alert", str(exc)) from None


class AlertStoreConsumer:
    """Runs the consume-store-commit loop until `stop` is set; `run()` returns the exit code."""

    def __init__(self, store: AlertStore, settings: ConsumerSettings,
                 readiness: Readiness | None = None,
                 sleep: Callable[[float], bool] | None = None,
                 on_stored: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = store
        self.on_stored = on_stored  # e.g. the webhook dispatcher's submit
        self.settings = settings
        self.readiness = readiness or Readiness("broker", "database")
        self.readiness.stall_s = settings.watch.stall_s
        self.stop = threading.Event()
        self._sleep = sleep or self.stop.wait  # returns True when stopping
        policy = RetryPolicy("database", lambda exc: isinstance(exc, StoreUnavailable),
                             Backoff(settings.retry_initial_s,
                                     max(settings.retry_initial_s, settings.retry_max_s)))
        self._database = Schedule(policy, "database", readiness=self.readiness,
                                  check="database")
        self._delay = settings.retry_initial_s
        self._progress = ProgressTracker(self.readiness)
        self._next_check = 0.0
        self._handled: dict[Any, int] = {}  # partition -> next offset handled

    def run(self) -> int:
        from kafka import KafkaConsumer, KafkaProducer

        from facescreen.bus.security import kafka_options

        s = self.settings
        security = kafka_options()
        consumer = KafkaConsumer(
            s.bus.alerts.name, bootstrap_servers=s.bootstrap, group_id=s.group,
            client_id=f"facescreen-{SERVICE}", enable_auto_commit=False,
            auto_offset_reset="earliest", allow_auto_create_topics=False,
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(s.session_timeout_s * 1000 / 3)),
            max_poll_records=s.max_records, **security)
        producer = KafkaProducer(bootstrap_servers=s.bootstrap, client_id=f"facescreen-{SERVICE}",
                                 acks="all", allow_auto_create_topics=False, linger_ms=0,
                                 max_block_ms=int(s.send_timeout_s * 1000), **security)
        dead = KafkaDeadLetterProducer(producer, s.bus.dead_letter.name, SERVICE)
        view = BrokerView(s.bootstrap, [s.bus.alerts, s.bus.dead_letter], SERVICE,
                          self.readiness)
        self.readiness.mark("topics", True)  # checked at start (require_topics)
        try:
            return self._loop(consumer, dead, view)
        finally:
            view.close()
            self.readiness.mark("broker", False)
            consumer.close(autocommit=False)
            producer.close(s.send_timeout_s)

    def _loop(self, consumer: Any, dead: KafkaDeadLetterProducer, view: BrokerView) -> int:
        while not self.stop.is_set():
            batch = consumer.poll(timeout_ms=int(self.settings.poll_timeout_s * 1000))
            self.readiness.mark("broker", bool(consumer.assignment()))
            if time.monotonic() >= self._next_check:
                self._check_bus(consumer, view)
                self._next_check = time.monotonic() + self.settings.watch.check_s
            if not batch:
                continue
            done, rewind, broker_failed = self._handle(batch, dead)
            self._commit(consumer, done)
            self._handled.update(done)
            if broker_failed:
                return 1
            if rewind is None:
                continue
            for tp, offset in rewind.items():  # rewind to what was not stored, retry later
                consumer.seek(tp, offset)
            if self._sleep(self._delay):
                break
        return 0

    def _check_bus(self, consumer: Any, view: BrokerView) -> None:
        """Topics, committed offsets past the log's end, progress (`facescreen.bus.watch`)."""
        from kafka.structs import OffsetAndMetadata

        try:
            view.check_topics()
            committed = view.committed(self.settings.group)
            assigned = list(consumer.assignment())
            policy = self.settings.watch.offset_reset
            for tp in assigned:
                key = (tp.topic, tp.partition)
                end, done = consumer.highwater(tp), committed.get(key)
                ahead = max((o for o in (done, consumer.position(tp, timeout_ms=1000))
                             if o is not None), default=None)  # position: see bus.worker
                if ahead is not None and end is not None and out_of_range(ahead, end):
                    start = consumer.beginning_offsets([tp])[tp]
                    target = reset_target(policy, start, end)
                    record_reset(SERVICE, tp.topic, tp.partition, ahead, end, target, policy)
                    consumer.seek(tp, target)
                    consumer.commit({tp: OffsetAndMetadata(target, "", -1)})
                    self._handled.pop(tp, None)
                    continue
                marks = [m for m in (done, self._handled.get(tp)) if m is not None]
                if not marks and end:
                    marks = [consumer.beginning_offsets([tp])[tp]]
                self._progress.update(key, max(marks, default=0), end)
            self._progress.retain((tp.topic, tp.partition) for tp in assigned)
        except Exception as exc:  # a check must never stop the consumer
            log.warning("bus check failed: %s", type(exc).__name__)

    def _handle(self, batch: dict[Any, list[Any]], dead: KafkaDeadLetterProducer
                ) -> tuple[dict[Any, int], dict[Any, int] | None, bool]:
        """Store the batch in order; returns the next offset to commit per partition, the
        offsets to rewind to if the database failed, and whether a dead letter failed."""
        done: dict[Any, int] = {}
        for tp, records in batch.items():
            for record in records:
                ref = MessageRef(record.topic, record.partition, record.offset, record.key,
                                 record.value, list(record.headers or []))
                try:
                    stored = store_message(self.store, ref)
                    outcome = "stored" if stored is not None else "unchanged"
                    self._database.succeeded()
                    if stored is not None and self.on_stored is not None:
                        self.on_stored(stored)
                except StoreUnavailable as exc:  # retried by policy: not ready meanwhile
                    self._delay = self._database.failed(exc)
                    rewind = {tp: record.offset}
                    rewind.update({other: recs[0].offset for other, recs in batch.items()
                                   if other not in done and other != tp and recs})
                    return done, rewind, False
                except Exception as exc:  # any failure of one message is its dead letter
                    outcome = "dead"
                    try:
                        dead.publish(ref, failure_letter(exc), self.settings.send_timeout_s)
                    except Exception as send_exc:
                        log.error("cannot publish a dead letter, stopping: %s",
                                  type(send_exc).__name__)
                        return done, None, True
                MESSAGES.labels(outcome).inc()
                done[tp] = record.offset + 1
        return done, None, False

    def _commit(self, consumer: Any, done: dict[Any, int]) -> None:
        if not done:
            return
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        try:
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in done.items()})
        except KafkaError as exc:  # rebalanced meanwhile: the new owner redoes it, idempotently
            log.warning("offset commit failed (messages will be redelivered): %s",
                        type(exc).__name__)
