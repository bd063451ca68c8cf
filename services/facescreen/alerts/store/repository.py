"""`AlertStore`: alerts kept for review, on SQLite (embedded) or PostgreSQL (distributed).

One row per alert: ingesting a revision is one atomic upsert that applies only if its
revision is higher than the stored one (`INSERT ... ON CONFLICT DO UPDATE ... WHERE`), so
redelivered, duplicated or out-of-order events change nothing and concurrent consumers
cannot lower a revision; the review state is never touched by ingest. Reviews are kept
as a history, the last verdict is the alert's. Deleting an alert (retention, erasure)
deletes its reviews, deliveries and crop file in the same step (`deletion`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from facescreen.alerts.store.crops import CropFolder
from facescreen.alerts.store.deletion import DeletionMixin
from facescreen.alerts.store.deliveries import DeliveryMixin
from facescreen.alerts.store.documents import (
    EVENT_COLUMNS,
    decode_cursor,
    encode_cursor,
    event_values,
    normal_id,
    to_event,
    to_record,
)
from facescreen.alerts.store.models import NAME, AlertRow, ReviewRow
from facescreen.alerts.store.records import (
    VERDICT_STATE,
    AlertFilter,
    AlertNotFound,
    AlertRecord,
    ReviewConflict,
    ReviewRecord,
    StoreError,
)
from facescreen.alerts.store.tokens import TokenMixin

log = logging.getLogger("facescreen.alerts.store")
Listener = Callable[[AlertRecord], None]
AlertPage = tuple["list[AlertRecord]", "str | None"]
MAX_PAGE = 1000
MAX_COMMENT = 4000


class AlertStore(TokenMixin, DeliveryMixin, DeletionMixin):
    """The alert store at `url` (`sqlite:///...` or `postgresql+psycopg://...`).

    `crops_dir` turns on face crops (opt-in): without it `save_crop` refuses. Call
    `upgrade()` once at start. Thread-safe: one engine, a session per call.
    """

    def __init__(self, url: str, *, crops_dir: Path | None = None) -> None:
        super().__init__(url)
        self.crops = None if crops_dir is None else CropFolder(crops_dir)
        self._listeners: list[Listener] = []

    def upgrade(self) -> None:
        """Run the migrations to the newest schema (idempotent; safe from many processes)."""
        from sqlalchemy.exc import DBAPIError

        from facescreen.alerts.migrations import upgrade
        from facescreen.alerts.store.base import StoreUnavailable
        from facescreen.alerts.store.engine import describe_error

        try:
            upgrade(self.engine)
        except DBAPIError as exc:
            raise StoreUnavailable(str(describe_error(self._url, exc))) from None

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(record)` after every change this store makes (ingest, review):
        for the API's live stream. A failing listener is logged and skipped."""
        self._listeners.append(listener)

    # -- ingest ----------------------------------------------------------------------------

    def ingest(self, doc: dict[str, Any]) -> bool:
        """Store one alert revision; True if the row changed (new alert or higher revision).

        InvalidAlert for a document that is not a schema-v2 alert event.
        """
        values = event_values(doc)
        now = time.time()
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        new = insert(AlertRow).values(**values, review="new", stored_at=now, updated_at=now)
        table = AlertRow.__table__
        upsert = new.on_conflict_do_update(
            index_elements=[table.c.alert_id],
            set_={**{c: new.excluded[c] for c in EVENT_COLUMNS}, "updated_at": now},
            where=table.c.revision < new.excluded.revision,
        ).returning(table.c.alert_id)
        with self._tx() as session:
            changed = session.execute(upsert).first() is not None
            notify = changed and bool(self._listeners)
            record = self._get(session, values["alert_id"]) if notify else None
        if record is not None:
            self._notify(record)
        return changed

    # -- reading ---------------------------------------------------------------------------

    def get(self, alert_id: str) -> AlertRecord | None:
        with self._tx() as session:
            return self._get(session, alert_id)

    def event(self, alert_id: str) -> dict[str, Any] | None:
        """The stored revision as its alert event document (for webhooks and exports)."""
        key = normal_id(alert_id)
        with self._tx() as session:
            row = None if key is None else session.get(AlertRow, key)
            return None if row is None else to_event(row)

    def reviews(self, alert_id: str) -> list[ReviewRecord]:
        """The alert's review history, oldest first; AlertNotFound for an unknown id."""
        key = self._key(alert_id)
        with self._tx() as session:
            if session.get(AlertRow, key) is None:
                raise AlertNotFound(f"no alert {alert_id}")
            rows = session.scalars(select(ReviewRow).where(ReviewRow.alert_id == key)
                                   .order_by(ReviewRow.id))
            return [ReviewRecord(review_id=r.id, alert_id=r.alert_id,
                                 verdict=r.verdict,  # type: ignore[arg-type]
                                 actor=r.actor, comment=r.comment, revision=r.revision,
                                 at=r.at) for r in rows]

    def changed_since(self, after: float, limit: int = 100) -> list[AlertRecord]:
        """Alerts changed (ingest or review) strictly after store time `after`, oldest
        change first: for a live stream in another process to poll."""
        query = (select(AlertRow).where(AlertRow.updated_at > after)
                 .order_by(AlertRow.updated_at, AlertRow.alert_id).limit(_page(limit)))
        with self._tx() as session:
            return [to_record(row) for row in session.scalars(query)]

    def crop(self, alert_id: str) -> bytes | None:
        """The alert's face crop (JPEG), or None (no crop, crops off, unknown alert)."""
        key = normal_id(alert_id)
        if self.crops is None or key is None:
            return None
        with self._tx() as session:
            row = session.get(AlertRow, key)
            name = None if row is None else row.crop_path
        return None if name is None else self.crops.read(name)

    # -- changes ---------------------------------------------------------------------------

    def review(self, alert_id: str, verdict: str, actor: str, comment: str = "", *,
               expect: str | None = None) -> AlertRecord:
        """Record a reviewer's verdict ("acknowledge" | "reject"); the last one wins and
        every one is kept. With `expect`, ReviewConflict unless the alert's review state
        is that one (e.g. "new": two reviewers racing on one alert)."""
        state = VERDICT_STATE.get(verdict)
        if state is None:
            raise StoreError(f"verdict {verdict!r}: expected acknowledge or reject")
        if not actor or len(actor) > NAME:
            raise StoreError(f"a reviewer's name has 1 to {NAME} characters")
        if len(comment) > MAX_COMMENT:
            raise StoreError(f"a review comment has at most {MAX_COMMENT} characters")
        key = self._key(alert_id)
        now = time.time()
        with self._tx() as session:
            row = session.get(AlertRow, key, with_for_update=True)
            if row is None:
                raise AlertNotFound(f"no alert {alert_id}")
            if expect is not None and row.review != expect:
                raise ReviewConflict(f"alert {key} is {row.review}, not {expect}")
            row.review, row.reviewed_by, row.reviewed_at = state, actor, now
            row.review_comment, row.updated_at = comment, now
            session.add(ReviewRow(alert_id=key, verdict=verdict, actor=actor, comment=comment,
                                  revision=row.revision, at=now))
            session.flush()
            record = to_record(row)
        self._notify(record)
        return record

    def save_crop(self, alert_id: str, jpeg: bytes) -> None:
        """Keep the face crop of a stored alert (replacing any earlier one)."""
        if self.crops is None:
            raise StoreError("face crops are off: give the store a crops folder to keep them")
        key = self._key(alert_id)
        with self._tx() as session:
            row = session.get(AlertRow, key, with_for_update=True)
            if row is None:
                raise AlertNotFound(f"no alert {alert_id}")
            name = CropFolder.name_for(key)
            self.crops.write(name, jpeg)
            row.crop_path = name

    # -- listing (last: `list` shadows the builtin in the class body) --------------------------

    def list(self, filters: AlertFilter | None = None, limit: int = 50,
             cursor: str | None = None) -> AlertPage:
        """Alerts matching `filters`, newest revision first (emitted_at, then alert_id),
        `limit` at a time; returns (page, next_cursor), next_cursor None at the end."""
        f = filters or AlertFilter()
        query = select(AlertRow).where(*_conditions(f))
        if cursor is not None:
            emitted_at, alert_id = decode_cursor(cursor)
            query = query.where(tuple_(AlertRow.emitted_at, AlertRow.alert_id)
                                < tuple_(emitted_at, alert_id))
        size = _page(limit)
        query = query.order_by(AlertRow.emitted_at.desc(), AlertRow.alert_id.desc())
        with self._tx() as session:
            rows = session.scalars(query.limit(size + 1)).all()
        page = [to_record(row) for row in rows[:size]]
        more = len(rows) > size
        return page, encode_cursor(page[-1].emitted_at, page[-1].alert_id) if more else None

    # -- internals -------------------------------------------------------------------------

    def _key(self, alert_id: str) -> str:
        key = normal_id(alert_id)
        if key is None:
            raise AlertNotFound(f"no alert {alert_id!r}: not an alert id")
        return key

    def _get(self, session: Session, alert_id: str) -> AlertRecord | None:
        key = normal_id(alert_id)
        row = None if key is None else session.get(AlertRow, key)
        return None if row is None else to_record(row)

    def _notify(self, record: AlertRecord) -> None:
        for listener in self._listeners:
            try:
                listener(record)
            except Exception as exc:  # a listener's bug must not fail the ingest
                log.warning("alert listener failed", extra={"fields": {
                    "alert_id": record.alert_id, "error": type(exc).__name__}})


def _page(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise StoreError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


def _conditions(f: AlertFilter) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    for column, value in ((AlertRow.watchlist, f.watchlist), (AlertRow.source, f.camera),
                          (AlertRow.subject_id, f.subject_id), (AlertRow.review, f.review),
                          (AlertRow.state, f.state)):
        if value is not None:
            out.append(column == value)
    when = AlertRow.captured_at if f.time_field == "captured" else AlertRow.emitted_at
    if f.since is not None:
        out.append(when >= f.since)
    if f.until is not None:
        out.append(when < f.until)
    if f.min_score is not None:
        out.append(AlertRow.score >= f.min_score)
    return out
