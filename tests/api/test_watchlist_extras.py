"""What the API needs of both watchlist stores: target FPIR, priority and alert route on a
list, deleting an empty list, removing one image. Local store and real Redis alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from facescreen.core.matching import subject_template
from facescreen.watchlist.base import WatchlistStore
from facescreen.watchlist.redis_store import RedisWatchlistStore
from facescreen.watchlist.store import LocalWatchlistStore, WatchlistError

DIM = 8


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WatchlistStore]:
    if request.param == "local":
        yield LocalWatchlistStore(tmp_path, embedder="e", dim=DIM)
    else:
        url = request.getfixturevalue("redis_url")
        with RedisWatchlistStore(url, embedder="e", dim=DIM) as redis_store:
            yield redis_store


def test_list_settings_round_trip_and_audit(store: WatchlistStore) -> None:
    wl = store.set_watchlist("vip", actor="op", threshold=0.9, target_fpir=0.01, priority=70,
                             route="security-desk", reason="new list")
    assert (wl.target_fpir, wl.priority, wl.route) == (0.01, 70, "security-desk")
    store.set_watchlist("vip", actor="op", description="changed")  # keeps the rest
    again = store.watchlists()["vip"]
    assert (again.threshold, again.target_fpir, again.priority, again.route,
            again.description) == (0.9, 0.01, 70, "security-desk", "changed")
    store.set_watchlist("vip", actor="op", route="")
    assert store.watchlists()["vip"].route == ""
    entry = next(e for e in store.audit_log() if e["action"] == "set_watchlist")
    assert (entry["priority"], entry["target_fpir"], entry["route"]) == (70, 0.01,
                                                                        "security-desk")


@pytest.mark.parametrize(("kw", "why"), [
    ({"target_fpir": 0.0}, "target FPIR"), ({"target_fpir": 1.5}, "target FPIR"),
    ({"priority": -1}, "priority"), ({"priority": 101}, "priority"),
    ({"route": "a\nb"}, "control"), ({"threshold": 2.0}, "cosine"),
])
def test_bad_list_settings_refused(store: WatchlistStore, kw: dict[str, object],
                                   why: str) -> None:
    with pytest.raises(WatchlistError, match=why):
        store.set_watchlist("vip", actor="op", **kw)  # type: ignore[arg-type]
    assert "vip" not in store.watchlists()


def test_delete_watchlist_only_when_empty(store: WatchlistStore) -> None:
    store.set_watchlist("vip", actor="op")
    store.add_subject("s1", "vip", [("a.jpg", 0.9, unit(1))], actor="op")
    with pytest.raises(WatchlistError, match="1 subject"):
        store.delete_watchlist("vip", actor="op")
    store.remove_subject("s1", actor="op")
    store.delete_watchlist("vip", actor="op", reason="done")
    assert "vip" not in store.watchlists()
    with pytest.raises(WatchlistError, match="unknown watchlist"):
        store.delete_watchlist("vip", actor="op")
    assert store.audit_log()[-1]["action"] == "delete_watchlist"


def test_remove_image_recomputes_the_template(store: WatchlistStore) -> None:
    a, b, other = unit(1), unit(2), unit(3)
    store.set_watchlist("vip", actor="op", threshold=0.0)
    store.add_subject("s1", "vip", [("a.jpg", 0.9, a), ("b.jpg", 0.8, b)], actor="op")
    store.add_subject("s2", "vip", [("o.jpg", 0.9, other)], actor="op")
    images = store.subjects()["s1"].images
    search, _ = store.matcher()
    (before,) = search(b[None, :], 2)
    both = float(subject_template(np.stack([a, b])) @ b)
    assert before[0].subject_id == "s1" and before[0].score == pytest.approx(both, abs=1e-5)
    changed = store.remove_image("s1", images[0].image_id, actor="op", reason="bad photo")
    assert [i.label for i in changed.images] == ["b.jpg"]
    search, _ = store.matcher()
    (after,) = search(b[None, :], 1)
    assert after[0].subject_id == "s1" and after[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(WatchlistError, match="no image"):
        store.remove_image("s1", images[0].image_id, actor="op")
    with pytest.raises(WatchlistError, match="last"):
        store.remove_image("s1", images[1].image_id, actor="op")
    with pytest.raises(WatchlistError, match="unknown subject"):
        store.remove_image("nobody", "x", actor="op")
    assert [i.label for i in store.subjects()["s1"].images] == ["b.jpg"]
    entry = [e for e in store.audit_log() if e["action"] == "remove_image"]
    assert entry[0]["image_id"] == images[0].image_id and entry[0]["actor"] == "op"


def test_old_local_lists_without_the_new_fields_load(tmp_path: Path) -> None:
    store = LocalWatchlistStore(tmp_path, embedder="e", dim=DIM)
    store.set_watchlist("vip", actor="op", threshold=0.9)
    meta = json.loads((tmp_path / "watchlist.json").read_text())
    saved = meta["watchlists"]["vip"]
    assert (saved.pop("target_fpir"), saved.pop("priority"), saved.pop("route")) == (None, 0, "")
    (tmp_path / "watchlist.json").write_text(json.dumps(meta))  # as written before them
    wl = store.watchlists()["vip"]
    assert (wl.threshold, wl.target_fpir, wl.priority, wl.route) == (0.9, None, 0, "")
