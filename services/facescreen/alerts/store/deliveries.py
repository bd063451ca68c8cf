"""Webhook deliveries, for `alerts.webhooks`: one row per (alert, revision, route).

The row is the delivery's durable state (attempts, next attempt, last error), so a
restarted process resumes the retries instead of forgetting or repeating them; the
unique key makes queueing the same revision for the same route twice a no-op. Rows go
with their alert (retention, erasure).
"""

from __future__ import annotations

import time

from sqlalchemy import select

from facescreen.alerts.store.base import StoreCore
from facescreen.alerts.store.models import NAME, AlertRow, DeliveryRow
from facescreen.alerts.store.records import AlertNotFound, DeliveryRecord, StoreError

STATUSES = ("pending", "delivered", "dead")
MAX_ERROR_CHARS = 1000


def _record(row: DeliveryRow) -> DeliveryRecord:
    return DeliveryRecord(id=row.id, alert_id=row.alert_id, revision=row.revision,
                          route=row.route, url=row.url, attempts=row.attempts,
                          status=row.status,  # type: ignore[arg-type]
                          next_attempt_at=row.next_attempt_at, last_error=row.last_error,
                          created_at=row.created_at)


class DeliveryMixin(StoreCore):
    """Webhook delivery methods of `AlertStore`."""

    def add_delivery(self, alert_id: str, revision: int, route: str, url: str,
                     next_attempt_at: float | None = None) -> DeliveryRecord:
        """Queue a delivery (pending); the existing one if this key is already queued."""
        if not route or len(route) > NAME:
            raise StoreError(f"a webhook route name has 1 to {NAME} characters")
        key = (DeliveryRow.alert_id == alert_id, DeliveryRow.revision == revision,
               DeliveryRow.route == route)
        with self._tx() as session:
            if session.get(AlertRow, alert_id) is None:
                raise AlertNotFound(f"no alert {alert_id}")
            row = session.scalars(select(DeliveryRow).where(*key)).first()
            if row is None:
                row = DeliveryRow(alert_id=alert_id, revision=revision, route=route, url=url,
                                  attempts=0, status="pending", created_at=time.time(),
                                  next_attempt_at=next_attempt_at)
                session.add(row)
                session.flush()
            return _record(row)

    def update_delivery(self, delivery_id: int, *, status: str, attempts: int,
                        next_attempt_at: float | None = None,
                        last_error: str | None = None) -> DeliveryRecord:
        """Record an attempt's outcome."""
        if status not in STATUSES:
            raise StoreError(f"delivery status {status!r}: expected one of {', '.join(STATUSES)}")
        with self._tx() as session:
            row = session.get(DeliveryRow, delivery_id, with_for_update=True)
            if row is None:
                raise StoreError(f"no webhook delivery {delivery_id}")
            row.status, row.attempts, row.next_attempt_at = status, attempts, next_attempt_at
            row.last_error = None if last_error is None else last_error[:MAX_ERROR_CHARS]
            return _record(row)

    def due_deliveries(self, now: float | None = None, limit: int = 100) -> list[DeliveryRecord]:
        """Pending deliveries whose next attempt is due, the longest waiting first."""
        at = time.time() if now is None else now
        query = (select(DeliveryRow).where(DeliveryRow.status == "pending")
                 .where((DeliveryRow.next_attempt_at.is_(None))
                        | (DeliveryRow.next_attempt_at <= at))
                 .order_by(DeliveryRow.next_attempt_at, DeliveryRow.id).limit(limit))
        with self._tx() as session:
            return [_record(row) for row in session.scalars(query)]

    def deliveries(self, alert_id: str | None = None, status: str | None = None,
                   limit: int = 100) -> list[DeliveryRecord]:
        """Deliveries, newest first, optionally of one alert and/or one status."""
        query = select(DeliveryRow).order_by(DeliveryRow.id.desc()).limit(limit)
        if alert_id is not None:
            query = query.where(DeliveryRow.alert_id == alert_id)
        if status is not None:
            query = query.where(DeliveryRow.status == status)
        with self._tx() as session:
            return [_record(row) for row in session.scalars(query)]
