"""Webhook deliveries off the hot path: one worker thread drains a queue of alert events.

The pipeline (or the alert-store consumer) hands each stored revision to `submit` and goes
on; a slow or failing receiver then delays only its own deliveries, never the screening.
Deliveries are recorded in the alert store (`StoreRecorder`), so at start the worker first
finishes what a stopped process left pending, and an event handed over twice is sent once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facescreen.alerts.store import AlertStore
from facescreen.alerts.webhook_routes import WebhookRoute, load_routes
from facescreen.alerts.webhook_store import StoreRecorder, resume_due
from facescreen.alerts.webhooks import WebhookSender

log = logging.getLogger("facescreen.webhooks")
_STOP = object()


class WebhookDispatcher:
    """`submit(event)` now, delivery (with retries) later, in order, on one thread."""

    def __init__(self, routes: Mapping[str, WebhookRoute], store: AlertStore,
                 max_queue: int = 10_000, **sender_options: Any) -> None:
        self.sender = WebhookSender(routes, recorder=StoreRecorder(store), **sender_options)
        self._store = store
        self._queue: queue.Queue[object] = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)

    @classmethod
    def from_file(cls, path: Path, store: AlertStore) -> WebhookDispatcher:
        return cls(load_routes(path), store)

    def start(self) -> WebhookDispatcher:
        self._thread.start()
        return self

    def submit(self, event: Mapping[str, Any]) -> None:
        """Queue one revision for its watchlist's route (no route: nothing happens)."""
        if str(event.get("watchlist")) not in self.sender.routes:
            return
        try:
            self._queue.put_nowait(dict(event))
        except queue.Full:  # recorded as pending by nobody: the alert is in the store still
            log.error("webhook queue full: alert %s rev %s not delivered",
                      event.get("alert_id"), event.get("revision"))

    def _run(self) -> None:
        try:
            resumed = resume_due(self.sender, self._store)
            if resumed:
                log.info("webhooks resumed: %d pending deliveries finished", len(resumed))
        except Exception as exc:  # a broken store must not kill the deliveries to come
            log.error("webhooks: resuming pending deliveries failed: %s", type(exc).__name__)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self.sender.deliver(item)  # type: ignore[arg-type]
            except Exception as exc:  # one bad event must not stop the others
                log.error("webhook delivery failed: %s", type(exc).__name__)

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued (up to `timeout_s`), then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
        self.sender.close()
