"""Subjects and watchlists over HTTP: erasure (SQLite and PostgreSQL; read back from the
stores), search by image with the real models, audited reads, watchlist settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.api import ApiLimits
from facescreen.watchlist.redis_store import RedisWatchlistStore

from tests.api.conftest import Api, alert_doc, enrol, photo, running_api

JPEG = "image/jpeg"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path,
           analyzer: FaceAnalyzer) -> Iterator[Api]:
    url = (f"sqlite:///{tmp_path / 'alerts.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    with running_api(tmp_path, url, analyzer) as api:
        yield api


def search(api: Api, name: str, who: str = "reviewer", **data: str):  # type: ignore[no-untyped-def]
    return api.call("POST", "/api/v1/search", who=who, data=data,
                    files=[("image", (name, photo(name), JPEG))])


def test_erasure_removes_templates_alerts_and_crops(any_db: Api) -> None:
    api = any_db
    assert enrol(api, "franck", ["franck_01829.jpg", "franck_02045.jpg"]).status_code == 201
    assert enrol(api, "audrey", ["audrey.jpg"]).status_code == 201
    franck_images = {i.image_id for i in api.ctx.watchlists.subjects()["franck"].images}
    docs = [alert_doc(subject="franck", emitted_at=1.7e9 + n) for n in range(3)]
    kept = alert_doc(subject="audrey")
    for doc in [*docs, kept]:
        api.ctx.alerts.ingest(doc)
    api.ctx.alerts.save_crop(docs[0]["alert_id"], b"\xff\xd8\xff fake jpeg")
    crops = sorted((api.data_dir / "crops").iterdir())
    assert len(crops) == 1

    r = api.call("DELETE", "/api/v1/subjects/franck?reason=erasure request 17")
    assert r.status_code == 200, r.text
    report = r.json()
    assert {k: report[k] for k in ("subject_id", "watchlists", "templates_removed",
                                   "alerts_removed", "crops_removed")} == {
        "subject_id": "franck", "watchlists": ["vip"], "templates_removed": 2,
        "alerts_removed": 3, "crops_removed": 1}
    entry = next(e for e in api.ctx.watchlists.audit_log() if e["id"] == report["audit_entry_id"])
    assert (entry["action"], entry["subject"], entry["reason"]) == (
        "erase_subject", "franck", "erasure request 17")
    assert entry["actor"].startswith("test-admin (token ")

    # Read the stores themselves: nothing of franck is left.
    assert "franck" not in api.ctx.watchlists.subjects()
    with np.load(api.data_dir / "embeddings.npz") as npz:
        left = set(npz["image_ids"].tolist())
        assert not franck_images & left and len(left) == len(npz["vectors"]) == 1
    for doc in docs:
        assert api.ctx.alerts.get(doc["alert_id"]) is None
    assert not any(p.exists() for p in crops)
    assert api.ctx.alerts.get(kept["alert_id"]) is not None
    page, _ = api.ctx.alerts.list(limit=50)
    assert [a.subject_id for a in page] == ["audrey"]
    # ... and the API agrees.
    assert api.call("GET", "/api/v1/subjects/franck").status_code == 404
    assert api.call("DELETE", "/api/v1/subjects/franck").status_code == 404
    found = search(api, "franck_02159.jpg").json()["faces"][0]["candidates"]
    assert [c["subject_id"] for c in found] == ["audrey"]


def test_distributed_stores_enrol_search_erase(tmp_path: Path, analyzer: FaceAnalyzer,
                                              pg_url: str, redis_url: str) -> None:
    """The distributed combination: PostgreSQL alerts, Redis watchlist (RediSearch KNN)."""
    e = analyzer.config.embedder
    with RedisWatchlistStore(redis_url, embedder=e.name, dim=e.dim) as redis_store, \
            running_api(tmp_path, pg_url, analyzer, watchlists=redis_store) as api:
        assert enrol(api, "franck", ["franck_01829.jpg", "franck_02045.jpg"]).status_code == 201
        assert enrol(api, "cage", ["cage.jpg"]).status_code == 201
        api.ctx.alerts.ingest(alert_doc(subject="franck"))
        (face,) = search(api, "franck_02159.jpg").json()["faces"]
        assert [c["subject_id"] for c in face["candidates"]] == ["franck", "cage"]
        report = api.call("DELETE", "/api/v1/subjects/franck").json()
        assert (report["templates_removed"], report["alerts_removed"]) == (2, 1)
        assert report["audit_entry_id"] and "-" in report["audit_entry_id"]  # a stream id
        assert "franck" not in redis_store.subjects()
        (face,) = search(api, "franck_02159.jpg").json()["faces"]
        assert [c["subject_id"] for c in face["candidates"]] == ["cage"]
        assert api.ctx.alerts.list(limit=10)[0] == []


def test_search_finds_the_enrolled_man_and_is_audited(api: Api) -> None:
    assert api.call("POST", "/api/v1/watchlists",
                    json={"name": "vip", "threshold": 0.9}).status_code == 201
    assert api.call("POST", "/api/v1/watchlists", json={"name": "staff"}).status_code == 201
    assert enrol(api, "franck", ["franck_01829.jpg", "franck_02045.jpg"]).status_code == 201
    assert enrol(api, "cage", ["cage.jpg"]).status_code == 201
    r = search(api, "franck_02159.jpg", reason="incident 4")
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert face["quality_passed"] and len(face["box"]) == 4
    best, second = face["candidates"]
    assert best["subject_id"] == "franck" and best["watchlist"] == "vip"
    assert best["score"] > 0.9 and best["above_threshold"] and best["threshold"] == 0.9
    assert second["subject_id"] == "cage" and not second["above_threshold"]
    entry = api.ctx.watchlists.audit_log()[-1]
    assert entry["action"] == "search" and entry["actor"].startswith("test-reviewer (token")
    assert (entry["matches"], entry["returned"], entry["reason"], entry["faces"]) == (
        ["franck"], ["cage", "franck"], "incident 4", 1)
    assert "embedding" not in entry and entry["photo_name"] == "franck_02159.jpg"

    staff = search(api, "franck_02159.jpg", watchlists="staff").json()
    assert staff["faces"][0]["candidates"] == []
    r = search(api, "franck_02159.jpg", watchlists="vip,nope")
    assert r.status_code == 422 and "nope" in r.json()["detail"]
    wall = api.call("POST", "/api/v1/search", who="reviewer",
                    files=[("image", ("wall.jpg", b"\xff\xd8\xff" + b"0" * 100, JPEG))])
    assert wall.status_code == 400 and "wall.jpg" in wall.json()["detail"]
    r = api.call("POST", "/api/v1/search", who="reviewer",
                 files=[("image", ("a.jpg", photo("audrey.jpg"), JPEG))] * 2)
    assert r.status_code == 400 and "at most 1" in r.json()["detail"]


def test_search_rate_limited_per_token(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    limits = ApiLimits(search_burst=2, search_per_minute=6)
    with running_api(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", analyzer, limits) as api:
        assert [search(api, "cage.jpg").status_code for _ in range(2)] == [200, 200]
        r = search(api, "cage.jpg")
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 10
        assert search(api, "cage.jpg", who="admin").status_code == 200  # its own bucket
        searches = [e for e in api.ctx.watchlists.audit_log() if e["action"] == "search"]
        assert len(searches) == 3  # the refused one did not search


def test_subject_reads_are_audited_with_the_reader(api: Api) -> None:
    assert enrol(api, "franck", ["franck_01829.jpg"]).status_code == 201
    r = api.call("GET", "/api/v1/subjects/franck", who="viewer")
    assert r.status_code == 200
    assert [i["label"] for i in r.json()["images"]] == ["franck_01829.jpg"]
    assert "embedding" not in r.text
    entry = api.ctx.watchlists.audit_log()[-1]
    assert (entry["action"], entry["subject"]) == ("read_subject", "franck")
    assert entry["actor"] == f"test-viewer (token {api.token_ids['viewer']})"
    listing = api.call("GET", "/api/v1/subjects?watchlist=vip", who="viewer").json()
    assert [s["subject_id"] for s in listing] == ["franck"]
    entry = api.ctx.watchlists.audit_log()[-1]
    assert (entry["action"], entry["count"], entry["watchlist"]) == ("list_subjects", 1, "vip")
    assert api.call("GET", "/api/v1/subjects/nobody", who="viewer").status_code == 404


def test_watchlist_settings(api: Api) -> None:
    body = {"name": "vip", "threshold": 0.93, "target_fpir": 0.001, "priority": 80,
            "route": "desk", "description": "persons of interest", "reason": "set up"}
    r = api.call("POST", "/api/v1/watchlists", json=body)
    assert r.status_code == 201
    assert r.json() == {**{k: v for k, v in body.items() if k != "reason"},
                        "calibrated": False, "calibration_stale": False, "subjects": 0}
    assert api.call("POST", "/api/v1/watchlists", json={"name": "vip"}).status_code == 409
    assert api.call("POST", "/api/v1/watchlists", json={"name": "low"}).status_code == 201
    names = [w["name"] for w in api.call("GET", "/api/v1/watchlists", who="viewer").json()]
    assert names == ["vip", "low"]  # by priority
    r = api.call("PATCH", "/api/v1/watchlists/vip", json={"threshold": 0.95, "reason": "FPIR"})
    assert r.status_code == 200 and (r.json()["threshold"], r.json()["priority"]) == (0.95, 80)
    audit = api.ctx.watchlists.audit_log()[-1]
    assert (audit["action"], audit["threshold"], audit["reason"]) == ("set_watchlist", 0.95,
                                                                      "FPIR")
    for bad, status, why in [
        ({"name": "a\tb"}, 400, "control characters"), ({"name": ""}, 422, "name"),
        ({"name": "x", "threshold": 2}, 422, "threshold"),
        ({"name": "x", "priority": 500}, 422, "priority"),
        ({"name": "x", "target_fpir": 0}, 422, "target_fpir"),
        ({"name": "x", "threshhold": 0.9}, 422, "threshhold"),
        ({"name": "x", "route": "a\nb"}, 400, "control characters"),
    ]:
        r = api.call("POST", "/api/v1/watchlists", json=bad)
        assert r.status_code == status and why in r.json()["detail"], (bad, r.text)
    assert api.call("PATCH", "/api/v1/watchlists/none", json={}).status_code == 404
    assert api.call("GET", "/api/v1/watchlists/none", who="viewer").status_code == 404
    assert enrol(api, "franck", ["franck_01829.jpg"], watchlist="low").status_code == 201
    r = api.call("DELETE", "/api/v1/watchlists/low")
    assert r.status_code == 409 and "1 subject" in r.json()["detail"]
    assert api.call("DELETE", "/api/v1/watchlists/vip?reason=closed").status_code == 204
    assert api.call("DELETE", "/api/v1/watchlists/vip").status_code == 404
    assert set(api.ctx.watchlists.watchlists()) == {"low"}


def test_cameras_and_audit_listing(api: Api) -> None:
    assert api.call("GET", "/api/v1/cameras", who="viewer").json() == [
        {"name": "cam1", "state": "running", "fps": 5.0}]
    api.call("POST", "/api/v1/watchlists", json={"name": "vip"})
    api.call("GET", "/api/v1/subjects", who="viewer")
    entries = api.call("GET", "/api/v1/audit?limit=1").json()["entries"]
    assert [e["action"] for e in entries] == ["list_subjects"]  # newest first
    only = api.call("GET", "/api/v1/audit?action=set_watchlist").json()["entries"]
    assert [e["watchlist"] for e in only] == ["vip"]
    assert api.call("GET", "/api/v1/audit?since=9999999999").json()["entries"] == []


def _membership(api: Api) -> None:
    """An enrolled subject put on a second watchlist is found there with the template it
    has, taken off again, and its last list is refused (that is an erasure); audited."""
    assert enrol(api, "franck", ["franck_01829.jpg"], watchlist="vip").status_code == 201
    path = "/api/v1/subjects/franck/watchlists/staff"
    assert api.call("PUT", path, params={"reason": "r"}).status_code == 422  # no such list
    assert api.call("POST", "/api/v1/watchlists", json={"name": "staff"}).status_code == 201
    assert api.call("PUT", path).status_code == 422  # the reason is required
    assert api.call("PUT", path, who="reviewer", params={"reason": "r"}).status_code == 403
    assert api.call("PUT", "/api/v1/subjects/nobody/watchlists/staff",
                    params={"reason": "r"}).status_code == 404
    r = api.call("PUT", path, params={"reason": "moved desks"})
    assert r.status_code == 200 and r.json()["watchlists"] == ["vip", "staff"]
    assert api.call("PUT", path, params={"reason": "again"}).json()["watchlists"] == [
        "vip", "staff"]
    entry = next(e for e in api.ctx.watchlists.audit_log() if e["action"] == "add_membership")
    assert (entry["subject"], entry["watchlist"], entry["reason"]) == (
        "franck", "staff", "moved desks")
    (face,) = search(api, "franck_02159.jpg", watchlists="staff").json()["faces"]
    assert [(c["subject_id"], c["watchlist"]) for c in face["candidates"]] == [
        ("franck", "staff")]
    r = api.call("DELETE", "/api/v1/subjects/franck/watchlists/vip", params={"reason": "r"})
    assert r.status_code == 200 and r.json()["watchlists"] == ["staff"]
    assert len(r.json()["images"]) == 1  # the photos stay with the subject
    (face,) = search(api, "franck_02159.jpg", watchlists="vip").json()["faces"]
    assert face["candidates"] == []
    r = api.call("DELETE", "/api/v1/subjects/franck/watchlists/staff", params={"reason": "r"})
    assert r.status_code == 409 and "erase the subject" in r.text
    assert api.call("DELETE", "/api/v1/subjects/franck/watchlists/vip",
                    params={"reason": "r"}).status_code == 404


def test_a_subject_joins_and_leaves_a_second_watchlist(api: Api) -> None:
    _membership(api)


def test_a_subject_joins_a_second_watchlist_in_redis(tmp_path: Path, analyzer: FaceAnalyzer,
                                                     pg_url: str, redis_url: str) -> None:
    e = analyzer.config.embedder
    with RedisWatchlistStore(redis_url, embedder=e.name, dim=e.dim) as redis_store, \
            running_api(tmp_path, pg_url, analyzer, watchlists=redis_store) as api:
        _membership(api)
