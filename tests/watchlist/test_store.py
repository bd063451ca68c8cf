"""The embedded watchlist store on disk: persistence, deletion, audit, expiry, bad directories."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import GalleryIndex
from facescreen.watchlist.store import LocalWatchlistStore, WatchlistError

from tests.conftest import read_only

DIM = 8


def _vec(seed: int) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=DIM).astype(np.float32))


def _store(path: Path) -> LocalWatchlistStore:
    return LocalWatchlistStore(path, embedder="test-embedder", dim=DIM)


def test_enrol_persist_and_search(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.set_watchlist("vip", actor="op", threshold=0.8)
    store.add_subject("alice", "vip", [("a1.jpg", 0.9, _vec(1)), ("a2.jpg", 0.8, _vec(2))],
                      actor="op", reason="case 17")
    store.add_subject("bob", "banned", [("b.jpg", 0.9, _vec(3))], actor="op")
    reopened = _store(tmp_path)
    index, thresholds = reopened.index()
    assert isinstance(index, GalleryIndex)  # the default: exact
    assert sorted(index.subject_ids) == ["alice", "bob"]
    assert thresholds == {"vip": 0.8, "banned": pytest.approx(0.95)}
    (top,) = index.search(_vec(3)[None], k=1)
    assert top[0].subject_id == "bob" and top[0].score == pytest.approx(1.0, abs=1e-5)
    assert (tmp_path / "embeddings.npz").stat().st_mode & 0o077 == 0  # biometric: owner only


def test_delete_removes_every_embedding_and_is_audited(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    store.add_subject("alice", "staff", [("a2.jpg", 0.9, _vec(2))], actor="op")
    store.remove_subject("alice", watchlist="staff", actor="op", reason="left the company")
    assert store.subjects()["alice"].watchlists == ["vip"]
    store.remove_subject("alice", actor="dpo", reason="erasure request")
    assert store.subjects() == {}
    with np.load(tmp_path / "embeddings.npz") as npz:
        assert npz["image_ids"].shape == (0,) and npz["vectors"].shape == (0, DIM)
    actions = [(e["action"], e["actor"], e["reason"]) for e in store.audit_log()]
    assert actions[-1] == ("remove_subject", "dpo", "erasure request")
    assert len(actions) == 4
    audit_text = (tmp_path / "audit.jsonl").read_text()
    assert "embedding" not in audit_text.replace('"images"', "")


def test_unknown_subject_and_bad_threshold_are_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(WatchlistError, match="unknown subject 'nobody'"):
        store.remove_subject("nobody", actor="op")
    with pytest.raises(WatchlistError, match="not a cosine"):
        store.set_watchlist("vip", actor="op", threshold=3.0)
    with pytest.raises(WatchlistError, match="expected"):
        store.add_subject("x", "vip", [("x.jpg", 0.9, np.zeros(3, np.float32))], actor="op")


def test_expired_subjects_do_not_match_and_are_purged(tmp_path: Path) -> None:
    store = _store(tmp_path)
    soon = time.time() + 100
    store.add_subject("old", "vip", [("o.jpg", 0.9, _vec(1))], actor="op", expires=soon)
    store.add_subject("new", "vip", [("n.jpg", 0.9, _vec(2))], actor="op")
    index, _ = store.index(now=soon + 1)
    assert isinstance(index, GalleryIndex)  # the default: exact
    assert index.subject_ids == ("new",)
    assert store.purge_expired(actor="op", now=soon + 1) == ["old"]
    assert list(store.subjects()) == ["new"]


def test_corrupt_directory_gives_clear_error(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    (tmp_path / "watchlist.json").write_text("{not json")
    with pytest.raises(WatchlistError, match="corrupt"):
        store.index()
    store2 = _store(tmp_path / "b")
    store2.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    (tmp_path / "b" / "embeddings.npz").write_bytes(b"garbage")
    with pytest.raises(WatchlistError, match="corrupt"):
        store2.subjects()


def test_other_embedder_is_refused(tmp_path: Path) -> None:
    _store(tmp_path).add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    other = LocalWatchlistStore(tmp_path, embedder="arcface", dim=512)
    with pytest.raises(WatchlistError, match="re-enrol"):
        other.index()


def test_read_only_directory_refuses_changes_but_still_reads(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    with read_only(tmp_path):
        index, _ = store.index()
        assert isinstance(index, GalleryIndex)  # the default: exact
        assert index.subject_ids == ("alice",)
        with pytest.raises(WatchlistError, match=r"not writable|cannot write"):
            store.add_subject("bob", "vip", [("b.jpg", 0.9, _vec(2))], actor="op")
    assert list(store.subjects()) == ["alice"]
    assert json.loads((tmp_path / "watchlist.json").read_text())["format"] == 2


def test_a_format_1_directory_is_read_and_rewritten_as_format_2(tmp_path: Path) -> None:
    """Format 1 kept one npz member per image; such a directory still loads, and the next
    change writes the one-matrix layout (ids and vectors row by row)."""
    store = _store(tmp_path)
    store.add_subject("alice", "vip", [("a1.jpg", 0.9, _vec(1)), ("a2.jpg", 0.9, _vec(2))],
                      actor="op")
    meta = json.loads((tmp_path / "watchlist.json").read_text())
    (tmp_path / "watchlist.json").write_text(json.dumps(meta | {"format": 1}))
    with np.load(tmp_path / "embeddings.npz") as npz:
        ids, vectors = npz["image_ids"].tolist(), npz["vectors"]
    np.savez(tmp_path / "embeddings.npz", **dict(zip(ids, vectors, strict=True)))
    (top,) = store.index()[0].search(_vec(2)[None], k=1)
    assert top[0].subject_id == "alice"
    store.add_subject("bob", "vip", [("b.jpg", 0.9, _vec(3))], actor="op")
    assert json.loads((tmp_path / "watchlist.json").read_text())["format"] == 2
    with np.load(tmp_path / "embeddings.npz") as npz:
        assert sorted(npz.files) == ["image_ids", "vectors"]
        assert npz["image_ids"].tolist()[:2] == ids and len(npz["image_ids"]) == 3
        np.testing.assert_allclose(npz["vectors"][:2], vectors, atol=1e-6)
        np.testing.assert_allclose(npz["vectors"][2], _vec(3), atol=1e-6)


def test_embeddings_that_do_not_pair_with_their_ids_are_a_corrupt_directory(
        tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.add_subject("alice", "vip", [("a1.jpg", 0.9, _vec(1))], actor="op")
    np.savez(tmp_path / "embeddings.npz", image_ids=np.asarray(["a", "b"]), vectors=_vec(1)[None])
    with pytest.raises(WatchlistError, match="is corrupt: ValueError: image_ids"):
        store.subjects()


@pytest.mark.parametrize(("subject", "watchlist", "vector", "expires", "message"), [
    ("  ", "vip", _vec(1), None, "subject needs a name"),
    ("alice", "  ", _vec(1), None, "watchlist needs a name"),
    ("alice\nbob  vip  3 images", "vip", _vec(1), None, "control characters"),
    ("a" * 201, "vip", _vec(1), None, "longer than"),
    ("alice", "vip", np.full(DIM, np.nan, np.float32), None, "finite unit vector"),
    ("alice", "vip", np.ones(DIM, np.float32), None, "finite unit vector"),
    ("alice", "vip", _vec(1)[:4], None, "shape"),
    ("alice", "vip", _vec(1), 1.0, "future"),
])
def test_bad_enrolment_values_are_refused_and_nothing_is_written(
        tmp_path: Path, subject: str, watchlist: str, vector: np.ndarray,
        expires: float | None, message: str) -> None:
    store = _store(tmp_path)
    with pytest.raises(WatchlistError, match=message):
        store.add_subject(subject, watchlist, [("a.jpg", 0.9, vector)], actor="op",
                          expires=expires)
    assert store.subjects() == {} and store.audit_log() == []


def test_a_change_that_cannot_be_audited_is_not_made(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    before = (tmp_path / "watchlist.json").read_bytes()
    with read_only(tmp_path / "audit.jsonl"), pytest.raises(WatchlistError,
                                                             match="nothing changed"):
        store.add_subject("bob", "vip", [("b.jpg", 0.9, _vec(2))], actor="op")
    assert (tmp_path / "watchlist.json").read_bytes() == before
    assert sorted(store.subjects()) == ["alice"] and len(store.audit_log()) == 1


def _corrupt_meta(path: Path, change: str) -> None:
    meta = json.loads((path / "watchlist.json").read_text())
    if change == "list":
        (path / "watchlist.json").write_text("[]")
    elif change == "watchlists-list":
        (path / "watchlist.json").write_text(json.dumps({**meta, "watchlists": []}))
    elif change == "empty-npz":
        (path / "embeddings.npz").write_bytes(b"")
    elif change == "wrong-dim":
        np.savez(path / "embeddings.npz", **{  # type: ignore[arg-type]
            i["image_id"]: np.ones(64, np.float32) / 8
            for s in meta["subjects"].values() for i in s["images"]})
    elif change == "nan":
        np.savez(path / "embeddings.npz", **{  # type: ignore[arg-type]
            i["image_id"]: np.full(DIM, np.nan, np.float32)
            for s in meta["subjects"].values() for i in s["images"]})


@pytest.mark.parametrize("change", ["list", "watchlists-list", "empty-npz", "wrong-dim", "nan"])
def test_each_corruption_is_one_clear_error(tmp_path: Path, change: str) -> None:
    store = _store(tmp_path)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    _corrupt_meta(tmp_path, change)
    with pytest.raises(WatchlistError, match="is corrupt"):
        store.index()


@pytest.mark.parametrize("tail", [b'{"time": 1, "act', b"\x00\xff\xfe binary"])
def test_a_cut_or_binary_audit_log_is_one_clear_error(tmp_path: Path, tail: bytes) -> None:
    store = _store(tmp_path)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    with (tmp_path / "audit.jsonl").open("ab") as fh:
        fh.write(tail)
    with pytest.raises(WatchlistError, match="line 2 is not an audit entry"):
        store.audit_log()
