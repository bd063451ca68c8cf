"""A large watchlist reloads on a thread: searches go on against the index they have (no
camera waits a minute for a reload), an expired subject is filtered out meanwhile, the new
index replaces the old one when complete, and a failed reload keeps the old one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from facescreen.core.alignment import l2_normalise
from facescreen.watchlist.live import LiveLocalWatchlist
from facescreen.watchlist.store import LocalWatchlistStore, Snapshot

DIM = 8


def _vec(seed: int) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=DIM).astype(np.float32))


class GatedStore(LocalWatchlistStore):
    """The real store, whose snapshots wait for `gate` once `hold` is set: a reload that
    takes as long as the test wants."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, embedder="e", dim=DIM)
        self.hold = False
        self.gate = threading.Event()

    def snapshot(self, now: float | None = None) -> Snapshot:
        if self.hold:
            assert self.gate.wait(10.0)
        return super().snapshot(now)


def _top(live: LiveLocalWatchlist, seed: int) -> list[str]:
    return [c.subject_id for c in live.search(_vec(seed)[None], 3)[0] if c.score > 0.999]


def test_searches_go_on_during_a_reload_and_see_the_change_after_it(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    now = [time.time()]
    store.add_subject("alice", "vip", [("a", 0.9, _vec(1))], actor="op")
    store.add_subject("bob", "vip", [("b", 0.9, _vec(2))], actor="op")
    store.add_subject("carol", "vip", [("c", 0.9, _vec(3))], actor="op", expires=now[0] + 60)
    live = LiveLocalWatchlist(store, check_every_s=0.0, clock=lambda: now[0], background_rows=1)
    assert _top(live, 2) == ["bob"] and _top(live, 3) == ["carol"]

    store.hold = True
    store.remove_subject("bob", actor="op", reason="erasure request")
    started = time.perf_counter()
    assert _top(live, 2) == ["bob"]  # the old index, until the new one is complete
    assert time.perf_counter() - started < 1.0 and not live.wait_reloaded(0.05)
    now[0] += 120  # carol's expiry passes while the reload is still held
    assert _top(live, 3) == [] and _top(live, 1) == ["alice"]

    store.gate.set()
    assert live.wait_reloaded(10.0)
    assert _top(live, 2) == [] and _top(live, 1) == ["alice"]
    # that reload began before carol expired; the expiry set off the next one
    assert _top(live, 3) == [] and live.wait_reloaded(10.0)
    assert len(live.index) == 1 and _top(live, 3) == []


def test_a_failed_background_reload_keeps_the_index_and_is_retried(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = GatedStore(tmp_path)
    store.add_subject("alice", "vip", [("a", 0.9, _vec(1))], actor="op")
    live = LiveLocalWatchlist(store, check_every_s=0.0, background_rows=1)
    good = (tmp_path / "watchlist.json").read_text()
    (tmp_path / "watchlist.json").write_text("{not json")
    assert _top(live, 1) == ["alice"]
    assert live.wait_reloaded(10.0)
    assert "watchlist reload failed, still searching the previous index" in caplog.text
    assert _top(live, 1) == ["alice"]
    (tmp_path / "watchlist.json").write_text(good)
    store.add_subject("bob", "vip", [("b", 0.9, _vec(2))], actor="op")
    _top(live, 2)
    assert live.wait_reloaded(10.0)
    assert _top(live, 2) == ["bob"] and len(live.index) == 2


def test_a_small_watchlist_reloads_in_the_search_that_notices(tmp_path: Path) -> None:
    store = LocalWatchlistStore(tmp_path, embedder="e", dim=DIM)
    store.add_subject("alice", "vip", [("a", 0.9, _vec(1))], actor="op")
    live = LiveLocalWatchlist(store, check_every_s=0.0)  # 1 template < 50,000
    store.remove_subject("alice", actor="op", reason="request")
    assert _top(live, 1) == [] and live.reloads == 2
