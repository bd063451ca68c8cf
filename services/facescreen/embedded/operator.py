"""The operator's surface beside the embedded pipeline: alert store, HTTP API, dashboard.

`facescreen run --api HOST:PORT` serves, from the same process, what a small site needs:
alerts stored in the data directory's SQLite file (`alerts.db`, or `--alerts-db URL`),
the review API with its OpenAPI document at `/openapi.json`, and the dashboard at `/`.
The pipeline's alert revisions are written both as JSON lines and into the store, whose
listener feeds the dashboard's live stream; a reviewer's "not this person" goes to the
data directory's feedback log, which the running pipeline reads within a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from facescreen.alerts.events import JsonLinesSink
from facescreen.alerts.feedback import LocalFeedbackLog
from facescreen.alerts.store import AlertStore, StoreError, sqlite_url
from facescreen.alerts.webhook_dispatch import WebhookDispatcher
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.api.app import create_app
from facescreen.api.context import ApiContext
from facescreen.api.server import ApiServer
from facescreen.core.types import ImageBGR
from facescreen.watchlist.base import WatchlistStore

log = logging.getLogger("facescreen.embedded.operator")


class StoreSink:
    """JSON lines as before, and every revision into the alert store (a store failure is
    logged and the line is still written: the JSON stream stays the record of last resort)."""

    def __init__(self, lines: JsonLinesSink, store: AlertStore,
                 webhooks: WebhookDispatcher | None = None) -> None:
        self._lines, self._store, self._webhooks = lines, store, webhooks

    def write(self, event: dict[str, Any]) -> None:
        self._lines.write(event)
        try:
            changed = self._store.ingest(event)
        except StoreError as exc:
            log.error("alert %s not stored: %s", event.get("alert_id"), exc)
            return
        if changed and self._webhooks is not None:
            self._webhooks.submit(event)

    def close(self) -> None:
        self._lines.close()
        if self._webhooks is not None:
            self._webhooks.close()


def face_crop(image: ImageBGR, box: Sequence[float], margin: float = 0.3) -> bytes:
    """The face with some context around it, as a JPEG (what a reviewer compares)."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    right, bottom = min(width, int(x2 + dx)), min(height, int(y2 + dy))
    ok, data = cv2.imencode(".jpg", image[top:max(bottom, top + 1), left:max(right, left + 1)])
    if not ok:
        raise ValueError("face crop could not be encoded")
    return data.tobytes()


@dataclass
class OperatorSurface:
    """The store, the API context and the server of one embedded run."""

    store: AlertStore
    server: ApiServer

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()
        self.store.close()


def alerts_db_url(data_dir: Path, given: str | None) -> str:
    return given or sqlite_url(Path(data_dir))


def start_operator_surface(*, host: str, port: int, db_url: str, data_dir: Path | None,
                           watchlists: WatchlistStore, analyzer: Callable[[], FaceAnalyzer],
                           cameras: Callable[[], list[dict[str, Any]]],
                           crops_dir: Path | None) -> OperatorSurface:
    """Migrate the store, then serve the API and dashboard on `host:port` in a thread."""
    store = AlertStore(db_url, crops_dir=crops_dir)
    store.upgrade()
    feedback = LocalFeedbackLog(data_dir) if data_dir is not None else None

    def send_feedback(verdict: Any) -> None:
        if feedback is None:
            raise StoreError("this run has no data directory to record verdicts in")
        feedback.append(verdict)

    ctx = ApiContext(alerts=store, watchlists=watchlists, analyzer=analyzer,
                     feedback=send_feedback, cameras=cameras)
    server = ApiServer(create_app(ctx), host, port).start()
    return OperatorSurface(store, server)
