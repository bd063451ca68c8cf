"""One read of the data directory gives the index (templates as `subject_template` makes
them, expired subjects left out) and the records; a live reload reads the files once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import GalleryIndex, subject_template
from facescreen.watchlist.live import LiveLocalWatchlist
from facescreen.watchlist.store import LocalWatchlistStore

DIM = 8


def _vec(seed: int) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=DIM).astype(np.float32))


def _enrolled(path: Path) -> LocalWatchlistStore:
    store = LocalWatchlistStore(path, embedder="test-embedder", dim=DIM)
    store.add_subject("alice", "vip", [("a1", 0.9, _vec(1)), ("a2", 0.9, _vec(2)),
                                       ("a3", 0.9, _vec(3))], actor="op")
    store.add_subject("alice", "staff", [("a4", 0.9, _vec(4))], actor="op")
    store.add_subject("bob", "vip", [("b1", 0.9, _vec(5))], actor="op")
    store.add_subject("carol", "vip", [("c1", 0.9, _vec(6)), ("c2", 0.9, _vec(7))],
                      actor="op", expires=time.time() + 3600)
    return store


def test_snapshot_templates_match_subject_template_and_skip_the_expired(tmp_path: Path) -> None:
    store = _enrolled(tmp_path)
    snapshot = store.snapshot(now=time.time() + 7200)  # carol has expired by then
    index = snapshot.index
    assert isinstance(index, GalleryIndex)  # the default: exact
    assert list(zip(index.subject_ids, index.watchlists, strict=True)) == [
        ("alice", "vip"), ("alice", "staff"), ("bob", "vip")]
    alice = subject_template(np.stack([_vec(s) for s in (1, 2, 3, 4)]))
    np.testing.assert_allclose(index.templates[0], alice, atol=1e-6)
    np.testing.assert_allclose(index.templates[1], alice, atol=1e-6)
    np.testing.assert_allclose(index.templates[2], _vec(5), atol=1e-6)
    assert index.templates.flags.c_contiguous
    assert set(snapshot.subjects) == {"alice", "bob", "carol"}  # the records, expired too
    assert set(snapshot.watchlists) == set(snapshot.thresholds) == {"vip", "staff"}
    assert len(store.snapshot().index) == 4  # now: carol is live


def test_a_live_reload_reads_the_directory_once(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = _enrolled(tmp_path)
    reads = 0
    load = LocalWatchlistStore._load

    def counting(self: LocalWatchlistStore) -> object:
        nonlocal reads
        reads += 1
        return load(self)

    monkeypatch.setattr(LocalWatchlistStore, "_load", counting)
    live = LiveLocalWatchlist(store)
    assert reads == 1 and len(live.index) == 4
    assert live.thresholds == {"vip": pytest.approx(0.95), "staff": pytest.approx(0.95)}
