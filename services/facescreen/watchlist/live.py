"""A data directory's watchlist kept current during a run (embedded mode, `--data-dir` matcher).

Deleting a subject or its expiry must take effect while cameras run, not at the next
restart: the index is rebuilt when the directory's files change (checked at most
every `check_every_s`) and when the clock passes the next expiry (checked at every
search, which costs one comparison). Thresholds are a dict updated in place, so the
screeners that hold it decide with the current values.
"""

from __future__ import annotations

import logging
import math
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
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._check_every_s = check_every_s
        self._clock = clock
        self._checked = -math.inf
        self._token: tuple[int, ...] = ()
        self._next_expiry = math.inf
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
        token = self._files_token()
        snapshot = self._store.snapshot(now)  # one read of the files for all of it
        self.index, thresholds, subjects = snapshot.index, snapshot.thresholds, snapshot.subjects
        self._next_expiry = min((s.expires for s in subjects.values()
                                 if s.expires is not None and s.expires > now),
                                default=math.inf)
        self.thresholds.clear()
        self.thresholds.update(thresholds)
        self._token = token
        self.reloads += 1
        log.info("watchlist loaded", extra={"fields": {
            "watchlists": sorted(self.thresholds), "templates": len(self.index)}})
        stale = stale_calibrations(snapshot.watchlists, subjects, now)
        if stale:
            log.warning("calibration stale: the gallery grew since the threshold was set; "
                        "run 'facescreen watchlist calibrate' again", extra={"fields": {
                            "watchlists": stale}})

    def refresh(self) -> None:
        """Rebuild if a subject expired or, at most every `check_every_s`, if files changed."""
        now = self._clock()
        if now >= self._next_expiry:
            self._reload(now)
            return
        if time.monotonic() - self._checked >= self._check_every_s:
            self._checked = time.monotonic()
            if self._files_token() != self._token:
                self._reload(now)

    def search(self, probes: FloatArray, k: int) -> list[list[Candidate]]:
        self.refresh()
        return self.index.search(probes, k)
