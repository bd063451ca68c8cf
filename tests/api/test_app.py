"""The app around the routes: the stream fed by polling when another process ingests,
the retention job, the dashboard folder at `/`, health when a store is down, rate-limit
arithmetic."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import httpx
import pytest
from facescreen.alerts.store import AlertStore
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.api import ApiLimits, create_app
from facescreen.api.ratelimit import RateLimiter
from facescreen.api.server import ApiServer

from tests.api.conftest import Api, alert_doc, make_context, running_api
from tests.api.test_alerts import Stream, wait_for_subscribers


def test_stream_polls_the_store_another_process_writes(tmp_path: Path,
                                                       analyzer: FaceAnalyzer) -> None:
    """Distributed mode: the alert-store consumer is another process with its own
    connection; the API polls `changed_since` and sends each change once."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with running_api(tmp_path, url, analyzer, poll_changes_s=0.2) as api:
        consumer = AlertStore(url)  # the other process's store
        stream = Stream(f"{api.url}/api/v1/alerts/stream", api.auth("viewer"))
        wait_for_subscribers(api, 1)
        doc = alert_doc()
        consumer.ingest(doc)
        first = stream.next()
        assert first is not None and json.loads(first["data"])["alert_id"] == doc["alert_id"]
        consumer.review(doc["alert_id"], "acknowledge", actor="elsewhere")
        second = stream.next()
        assert second is not None and json.loads(second["data"])["review"] == "acknowledged"
        with pytest.raises(queue.Empty):  # polled again and again, but sent once
            stream.events.get(timeout=1.5)
        consumer.close()


def test_retention_job_purges_old_alerts(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = AlertStore(url)
    store.upgrade()
    old, new = alert_doc(emitted_at=time.time() - 40 * 86400), alert_doc(emitted_at=time.time())
    store.ingest(old)
    store.ingest(new)
    with running_api(tmp_path, url, analyzer, retention_s=30 * 86400.0) as api:
        deadline = time.monotonic() + 10
        while api.ctx.alerts.get(old["alert_id"]) is not None:
            assert time.monotonic() < deadline, "retention did not run"
            time.sleep(0.05)
        assert api.ctx.alerts.get(new["alert_id"]) is not None
    store.close()


def test_dashboard_folder_served_at_root(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>facescreen</title>")
    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}")
    store.upgrade()
    ctx = make_context(tmp_path, store, analyzer)
    with ApiServer(create_app(ctx, static_dir=static)) as server:
        page = httpx.get(f"{server.url}/")
        assert page.status_code == 200 and "<title>facescreen</title>" in page.text
        assert httpx.get(f"{server.url}/api/v1/health").json()["status"] == "ok"
        missing = httpx.get(f"{server.url}/api/v1/nothing-here")
        assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    app = create_app(ctx, static_dir=tmp_path / "absent")
    assert not any(getattr(r, "name", "") == "dashboard" for r in app.routes)
    store.close()


def test_health_says_which_store_is_down(api: Api) -> None:
    (api.data_dir / "watchlist.json").write_text("[1, 2")  # a corrupt data directory
    r = api.client.get("/api/v1/health")
    assert r.status_code == 503
    assert r.json() == {"status": "degraded", "checks": {
        "alert_store": "ok", "watchlist_store": "down (WatchlistError)"}}
    r = api.call("GET", "/api/v1/watchlists", who="viewer")
    assert r.status_code == 503 and "corrupt" in r.json()["detail"]


def test_declared_oversized_json_body_refused(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    limits = ApiLimits(max_request_bytes=1000)
    with running_api(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", analyzer, limits) as api:
        r = api.call("POST", "/api/v1/watchlists", json={"name": "x", "description": "d" * 2000})
        assert r.status_code == 413
        assert r.json() == {"detail": "request body larger than 1,000 bytes"}


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(per_minute=6, burst=2)  # one every 10 s
    assert [limiter.take("t", now=0.0) for _ in range(3)] == [0, 0, 10]
    assert limiter.take("t", now=5.0) == 5  # half refilled: five seconds to go
    assert limiter.take("t", now=10.0) == 0
    assert limiter.take("other", now=10.0) == 0  # buckets are per key
    assert limiter.take("t", now=1000.0) == 0 and limiter.take("t", now=1000.0) == 0
    assert limiter.take("t", now=1000.0) == 10  # the burst is the cap, however long idle
    with pytest.raises(ValueError):
        RateLimiter(per_minute=0, burst=1)


def test_kept_alive_responses_are_not_held_back(api: Api) -> None:
    """The server's sockets are TCP with TCP_NODELAY: before, each response on a kept-alive
    connection waited ~40 ms for the client's delayed ACK (Nagle)."""
    import statistics

    times = []
    for _ in range(20):
        start = time.perf_counter()
        assert api.client.get("/api/v1/health").status_code == 200
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.025, times
