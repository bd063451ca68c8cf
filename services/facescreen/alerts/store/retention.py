"""Retention: ages like `30d` and the periodic purge an API process runs.

Alerts name people; keeping them longer than their review needs is a liability, so the
store deletes by age whatever the alert's state (`AlertStore.purge`). The job runs once
at start, then every `every_s`, in a daemon thread, and logs only counts.
"""

from __future__ import annotations

import logging
import re
import threading

from facescreen.alerts.store.records import StoreError
from facescreen.alerts.store.repository import AlertStore

log = logging.getLogger("facescreen.alerts.retention")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_age(text: str) -> float:
    """Seconds in `30d`, `12h`, `90m`, `3600s`, `2w` or a bare number of seconds."""
    match = _AGE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"age {text!r}: expected a positive number with a unit s, m, h, d "
                         "or w (e.g. 30d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


class RetentionJob:
    """Purge alerts older than `older_than_s` every `every_s` seconds until stopped."""

    def __init__(self, store: AlertStore, older_than_s: float, every_s: float = 3600.0) -> None:
        if older_than_s <= 0 or every_s <= 0:
            raise ValueError("retention age and interval must be positive")
        self.store = store
        self.older_than_s = older_than_s
        self.every_s = every_s
        self.purged = 0  # alerts deleted since start
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="alert-retention", daemon=True)

    def start(self) -> RetentionJob:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def run_once(self) -> int:
        try:
            deleted = self.store.purge(self.older_than_s)
        except StoreError as exc:
            log.warning("retention purge failed: %s", exc)
            return 0
        self.purged += deleted
        self.runs += 1
        if deleted:
            log.info("retention purged alerts", extra={"fields": {"deleted": deleted}})
        return deleted

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.every_s)
