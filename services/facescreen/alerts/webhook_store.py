"""Webhook deliveries kept in the alert store, so a restarted process neither forgets nor repeats them.

`StoreRecorder` is the `DeliveryRecorder` over the store's `webhook_deliveries` table: the
row of (alert_id, revision, route) is created when a delivery starts and updated after each
failed attempt and at the end. An event seen again (the alerts topic is at-least-once)
finds its row: delivered or dead, nothing is sent; pending, it goes on with the attempts
it has left. `resume_due` picks up, at start-up, the deliveries a stopped process left
pending; run it before live deliveries start, since a row being retried in-process is
also "pending".
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from facescreen.alerts.store import DeliveryRecord
from facescreen.alerts.webhooks import DeliveryOutcome, WebhookSender

log = logging.getLogger("facescreen.webhooks")


class _DeliveryStore(Protocol):
    def add_delivery(self, alert_id: str, revision: int, route: str, url: str,
                     next_attempt_at: float | None = None) -> DeliveryRecord: ...

    def update_delivery(self, delivery_id: int, *, status: str, attempts: int,
                        next_attempt_at: float | None = None,
                        last_error: str | None = None) -> DeliveryRecord: ...

    def due_deliveries(self, now: float | None = None, limit: int = 100) -> list[DeliveryRecord]: ...

    def event(self, alert_id: str) -> dict[str, object] | None: ...


def _outcome(row: DeliveryRecord) -> DeliveryOutcome:
    return DeliveryOutcome(alert_id=row.alert_id, revision=row.revision, route=row.route, url=row.url,
                           created_at=row.created_at, status=row.status, attempts=row.attempts,
                           last_error=row.last_error, next_attempt_at=row.next_attempt_at, id=row.id)


class StoreRecorder:
    """Delivery state in the alert store (the alert must be stored first: rows hang off it)."""

    def __init__(self, store: _DeliveryStore) -> None:
        self.store = store

    def begin(self, outcome: DeliveryOutcome) -> DeliveryOutcome:
        row = self.store.add_delivery(outcome.alert_id, outcome.revision, outcome.route, outcome.url)
        return _outcome(row)

    def record(self, outcome: DeliveryOutcome) -> None:
        if outcome.id is None:
            raise ValueError("a delivery must begin before its outcome is recorded")
        self.store.update_delivery(outcome.id, status=outcome.status, attempts=outcome.attempts,
                                   next_attempt_at=outcome.next_attempt_at,
                                   last_error=outcome.last_error)


def resume_due(sender: WebhookSender, store: _DeliveryStore, now: float | None = None,
               limit: int = 100) -> list[DeliveryOutcome]:
    """Finish the pending deliveries that are due; returns their outcomes.

    The store keeps each alert's highest revision only, so a pending delivery of an older
    revision cannot be sent as it was: it is marked dead as superseded (the newer revision
    has its own delivery). One whose route is no longer configured is dead too.
    """
    if not isinstance(sender.recorder, StoreRecorder) or sender.recorder.store is not store:
        raise ValueError("resume_due needs a sender that records into this store")
    at = time.time() if now is None else now
    done: list[DeliveryOutcome] = []
    for row in store.due_deliveries(at, limit):
        outcome = _outcome(row)
        event = store.event(row.alert_id)
        reason = None
        if row.route not in sender.routes:
            reason = f"route {row.route} is no longer configured"
        elif event is None:
            reason = "the alert is gone"
        elif event.get("revision") != row.revision:
            reason = f"superseded by revision {event.get('revision')}"
        if reason is not None or event is None:
            outcome.status, outcome.last_error, outcome.next_attempt_at = "dead", reason, None
            sender.recorder.record(outcome)
            log.warning("webhook dead: alert %s rev %d route %s: %s", row.alert_id, row.revision,
                        row.route, reason)
            done.append(outcome)
            continue
        result = sender.deliver(event)
        if result is not None:
            done.append(result)
    return done
