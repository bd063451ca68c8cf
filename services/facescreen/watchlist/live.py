"""A data directory's watchlist kept current during a run (embedded mode, `--data-dir` matcher).

Deleting a subject or its expiry must take effect while cameras run, not at the next
restart: the index is rebuilt when the directory's files change (checked at most
every `check_every_s`) and when the clock passes the next expiry (checked at every
search, which costs one comparison). Thresholds are a dict updated in place, so the
screeners that hold it decide with the current values.

A small watchlist is reloaded in the search that notices the change, so the change holds
from that search on. From `background_rows` templates up a reload takes long enough (~50 s
at a million here) that waiting for it would stop every camera's screening, so it runs on a
thread while searches go on against the index they have, and the new one replaces it when
complete. Meanwhile a subject whose expiry has passed is filtered out of the results, and a
deleted one can still match until the swap (at most the reload's duration, logged).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from facescreen.core.matching import Candidate, GalleryIndex, TemplateIndex
from facescreen.core.types import FloatArray
from facescreen.watchlist.store import LocalWatchlistStore, stale_calibrations

log = logging.getLogger("facescreen.watchlist.live")
_FILES = ("watchlist.json", "embeddings.npz")


class LiveLocalWatchlist:
    """`search(probes, k)` over the subjects live now, and `thresholds`, both current.

    >>> import tempfile, pathlib
    >>> live = LiveLocalWatchlist(LocalWatchlistStore(pathlib.Path(tempfile.mkdtemp()),
    ...                                               embedder="e", dim=4))
    >>> live.thresholds, len(live.index)
    ({}, 0)
    """

    def __init__(self, store: LocalWatchlistStore, check_every_s: float = 1.0,
                 clock: Callable[[], float] = time.time, background_rows: int = 50_000) -> None:
        self._store = store
        self._check_every_s = check_every_s
        self._clock = clock
        self._background_rows = background_rows
        self._checked = -math.inf
        self._token: tuple[int, ...] = ()
        self._next_expiry = math.inf
        self._expires: dict[str, float] = {}
        self._reloading: threading.Thread | None = None
        self._lock = threading.Lock()
        self.thresholds: dict[str, float] = {}
        self.index: TemplateIndex = GalleryIndex.empty(store.dim)
        self.reloads = 0
        self._reload(self._clock())

    def _files_token(self) -> tuple[int, ...]:
        token = []
        for name in _FILES:
            try:
                token.append((self._store.data_dir / name).stat().st_mtime_ns)
            except OSError:
                token.append(0)
        return tuple(token)

    def _reload(self, now: float) -> None:
        started = time.perf_counter()
        token = self._files_token()
        snapshot = self._store.snapshot(now)  # one read of the files for all of it
        thresholds, subjects = snapshot.thresholds, snapshot.subjects
        expires = {s.subject_id: s.expires for s in subjects.values() if s.expires is not None}
        # The swap: searches on other threads see the old index or the new one, and the
        # thresholds dict is never empty in between (keys gone are removed after the update).
        self.index = snapshot.index
        self._expires = expires
        self._next_expiry = min((t for t in expires.values() if t > now), default=math.inf)
        gone = set(self.thresholds) - set(thresholds)
        self.thresholds.update(thresholds)
        for name in gone:
            del self.thresholds[name]
        self._token = token
        self.reloads += 1
        log.info("watchlist loaded", extra={"fields": {
            "watchlists": sorted(self.thresholds), "templates": len(self.index),
            "seconds": round(time.perf_counter() - started, 2)}})
        stale = stale_calibrations(snapshot.watchlists, subjects, now)
        if stale:
            log.warning("calibration stale: the gallery grew since the threshold was set; "
                        "run 'facescreen watchlist calibrate' again", extra={"fields": {
                            "watchlists": stale}})

    def refresh(self) -> None:
        """Rebuild if a subject expired or, at most every `check_every_s`, if files changed."""
        now = self._clock()
        due = now >= self._next_expiry
        if not due and time.monotonic() - self._checked >= self._check_every_s:
            self._checked = time.monotonic()
            due = self._files_token() != self._token
        if not due:
            return
        if len(self.index) < self._background_rows:
            self._reload(now)
            return
        with self._lock:
            if self._reloading is None or not self._reloading.is_alive():
                self._reloading = threading.Thread(target=self._reload_logged, args=(now,),
                                                   name="watchlist-reload", daemon=True)
                self._reloading.start()

    def _reload_logged(self, now: float) -> None:
        """A background reload: a failure keeps the current index and is retried at the
        next check (the files' token is only taken on success)."""
        try:
            self._reload(now)
        except Exception as exc:
            log.error("watchlist reload failed, still searching the previous index: %s", exc)

    def wait_reloaded(self, timeout_s: float | None = None) -> bool:
        """Wait for a background reload under way (if any); True when none is left."""
        with self._lock:
            thread = self._reloading
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def search(self, probes: FloatArray, k: int) -> list[list[Candidate]]:
        self.refresh()
        found = self.index.search(probes, k)
        now = self._clock()
        if now < self._next_expiry:
            return found
        # Only while a background reload is still to drop them: subjects already expired.
        return [[c for c in row if self._expires.get(c.subject_id, math.inf) > now]
                for row in found]
