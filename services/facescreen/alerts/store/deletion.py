"""Deleting alerts: retention by age and erasure by subject, crops included.

An alert's reviews, webhook deliveries and crop file go in the same step as its row,
in batches (one transaction each, so a large purge never holds long locks). Crop files
are deleted inside the transaction, before the commit: if a picture cannot be deleted
the step fails and the rows stay, so an erasure never reports success while a face
picture remains. A sweep removes crop files that no alert refers to any more.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session

from facescreen.alerts.store.base import StoreCore
from facescreen.alerts.store.crops import CropFolder
from facescreen.alerts.store.models import AlertRow, DeliveryRow, ReviewRow
from facescreen.alerts.store.records import StoreError

_DELETE_BATCH = 500
_SWEEP_GRACE_S = 600.0  # a crop is written just before its row points to it


class DeletionMixin(StoreCore):
    """Retention and erasure methods of `AlertStore`."""

    crops: CropFolder | None

    def purge(self, older_than_s: float, now: float | None = None) -> int:
        """Retention: delete alerts (closed or not) whose latest revision was emitted more
        than `older_than_s` before `now`, with their reviews, deliveries and crops; also
        crop files left without an alert. Returns the number of alerts deleted."""
        if not older_than_s > 0:
            raise StoreError("retention must be a positive age")
        cutoff = (time.time() if now is None else now) - older_than_s
        deleted = self._delete_where(AlertRow.emitted_at < cutoff)[0]
        self._sweep_crops()
        return deleted

    def delete_subject(self, subject_id: str) -> int:
        """Erasure: delete every alert of the subject and its crops; returns the count."""
        return self.erase_subject(subject_id)[0]

    def erase_subject(self, subject_id: str) -> tuple[int, int]:
        """Erasure with its report: (alerts deleted, crop files deleted)."""
        if not subject_id:
            raise StoreError("erasure needs a subject id")
        return self._delete_where(AlertRow.subject_id == subject_id)

    def _delete_where(self, condition: ColumnElement[bool]) -> tuple[int, int]:
        """Delete matching alerts in batches, crops first within each transaction."""
        alerts = crops = 0
        while True:
            with self._tx() as session:
                found = session.execute(select(AlertRow.alert_id, AlertRow.crop_path)
                                        .where(condition).limit(_DELETE_BATCH)).all()
                if not found:
                    return alerts, crops
                ids = [alert_id for alert_id, _ in found]
                names = [name for _, name in found if name]
                if names and self.crops is None:
                    raise StoreError("these alerts have face crops: open the store with its "
                                     "crops folder to delete them with the alerts")
                if self.crops is not None:
                    crops += sum(self.crops.remove(name) for name in names)
                _delete_children(session, ids)
                session.execute(delete(AlertRow).where(AlertRow.alert_id.in_(ids)))
                alerts += len(ids)

    def _sweep_crops(self) -> None:
        """Delete crop files no alert refers to (left by a failed step), except recent
        ones: a crop is written just before its row is updated."""
        if self.crops is None:
            return
        names = sorted(self.crops.names(older_than_s=_SWEEP_GRACE_S))
        for start in range(0, len(names), _DELETE_BATCH):
            chunk = names[start:start + _DELETE_BATCH]
            with self._tx() as session:
                kept = set(session.scalars(select(AlertRow.crop_path)
                                           .where(AlertRow.crop_path.in_(chunk))))
            for name in chunk:
                if name not in kept:
                    self.crops.remove(name)


def _delete_children(session: Session, ids: Sequence[str]) -> None:
    session.execute(delete(ReviewRow).where(ReviewRow.alert_id.in_(ids)))
    session.execute(delete(DeliveryRow).where(DeliveryRow.alert_id.in_(ids)))
