"""Alerts over HTTP: list and filters, crops, verdicts (with the matcher's feedback and the
audit trail), and the live SSE stream on a real uvicorn server."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.api import ApiLimits

from tests.api.conftest import Api, alert_doc, encode, running_api


def test_list_filters_and_pages(api: Api) -> None:
    store = api.ctx.alerts
    for n in range(7):
        store.ingest(alert_doc(subject=f"s{n % 2}", watchlist="vip" if n < 5 else "staff",
                               source=f"cam{n % 3}", emitted_at=1.7e9 + n, score=round(0.9 + n / 100, 2)))
    r = api.call("GET", "/api/v1/alerts?limit=3", who="viewer")
    page = r.json()
    assert r.status_code == 200 and len(page["items"]) == 3 and page["next_cursor"]
    seen = [a["emitted_at"] for a in page["items"]]
    while page["next_cursor"]:
        page = api.call("GET", "/api/v1/alerts", who="viewer",
                        params={"limit": 3, "cursor": page["next_cursor"]}).json()
        seen += [a["emitted_at"] for a in page["items"]]
    assert seen == sorted(seen, reverse=True) and len(seen) == 7
    only = api.call("GET", "/api/v1/alerts", who="viewer",
                    params={"watchlist": "staff", "camera": "cam2"}).json()["items"]
    assert [(a["watchlist"], a["source"]) for a in only] == [("staff", "cam2")]
    high = api.call("GET", "/api/v1/alerts?min_score=0.935&subject=s0", who="viewer").json()
    assert [(a["subject_id"], a["score"]) for a in high["items"]] == [("s0", 0.96), ("s0", 0.94)]
    window = api.call("GET", f"/api/v1/alerts?since={1.7e9 + 2}&until={1.7e9 + 4}",
                      who="viewer").json()["items"]
    assert [a["emitted_at"] for a in window] == [1.7e9 + 3, 1.7e9 + 2]
    for bad, why in [("until=1&since=2", "until is before since"), ("limit=0", "limit"),
                     ("review=maybe", "review"), ("min_score=2", "min_score"),
                     ("cursor=garbage", "")]:
        r = api.call("GET", f"/api/v1/alerts?{bad}", who="viewer")
        assert r.status_code in (400, 422) and why in r.json()["detail"], (bad, r.text)


def test_get_and_crop(api: Api) -> None:
    doc = alert_doc()
    api.ctx.alerts.ingest(doc)
    record = api.call("GET", f"/api/v1/alerts/{doc['alert_id']}", who="viewer").json()
    assert record["subject_id"] == "franck" and record["crop_available"] is False
    assert api.call("GET", "/api/v1/alerts/not-an-id", who="viewer").status_code == 404
    missing = "00000000-0000-4000-8000-000000000000"
    assert api.call("GET", f"/api/v1/alerts/{missing}", who="viewer").status_code == 404
    crop_url = f"/api/v1/alerts/{doc['alert_id']}/crop"
    assert api.call("GET", crop_url, who="viewer").status_code == 404
    import numpy as np

    jpeg = encode(np.full((40, 30, 3), 128, np.uint8), ".jpg")
    api.ctx.alerts.save_crop(doc["alert_id"], jpeg)
    r = api.call("GET", crop_url, who="viewer")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == jpeg and r.headers["cache-control"] == "no-store"


def test_acknowledge_and_reject(api: Api) -> None:
    doc = alert_doc(source="gate-3")
    api.ctx.alerts.ingest(doc)
    url = f"/api/v1/alerts/{doc['alert_id']}"
    r = api.call("POST", f"{url}/acknowledge", who="reviewer", json={"comment": "seen"})
    assert r.status_code == 200 and r.json()["review"] == "acknowledged"
    assert r.json()["reviewed_by"].startswith("test-reviewer (token ")
    assert api.feedback() == []  # acknowledging tells the matcher nothing
    r = api.call("POST", f"{url}/reject", who="reviewer", json={"comment": "not him"})
    assert r.status_code == 200 and r.json()["review"] == "rejected"
    (feedback,) = api.feedback()
    assert (feedback.alert_id, feedback.camera, feedback.verdict, feedback.comment) == (
        doc["alert_id"], "gate-3", "reject", "not him")
    assert feedback.actor == r.json()["reviewed_by"]
    history = api.ctx.alerts.reviews(doc["alert_id"])
    assert [(h.verdict, h.comment) for h in history] == [("acknowledge", "seen"),
                                                          ("reject", "not him")]
    audit = [e for e in api.ctx.watchlists.audit_log() if e["action"].endswith("_alert")]
    assert [(e["action"], e["alert_id"], e["subject"]) for e in audit] == [
        ("acknowledge_alert", doc["alert_id"], "franck"),
        ("reject_alert", doc["alert_id"], "franck")]
    assert audit[1]["feedback_id"] == feedback.feedback_id
    r = api.call("POST", "/api/v1/alerts/00000000-0000-4000-8000-000000000000/reject",
                 who="reviewer")
    assert r.status_code == 404 and len(api.feedback()) == 1  # no verdict on no alert
    r = api.call("POST", f"{url}/reject", who="reviewer", json={"comment": "x" * 2000})
    assert r.status_code == 422
    r = api.call("POST", f"{url}/reject", who="reviewer", json={"verdict": "x"})
    assert r.status_code == 422 and "verdict" in r.json()["detail"]
    r = api.call("POST", f"{url}/reject", who="reviewer", content=b'{"comment": "bad \\ud800"}',
                 headers={"content-type": "application/json"})  # JSON may spell one
    assert r.status_code == 422 and "comment" in r.json()["detail"]  # not a 500 from the DB
    assert len(api.ctx.alerts.reviews(doc["alert_id"])) == 2  # nothing stored


class Stream:
    """An SSE client in a thread: events land in a queue."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.status: int | None = None
        self._thread = threading.Thread(target=self._run, args=(url, headers or {}),
                                        daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        event: dict[str, Any] = {}
        try:
            with httpx.stream("GET", url, headers=headers, timeout=20) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if not line:
                        if "data" in event or "comment" in event:
                            self.events.put(event)
                        event = {}
                    elif line.startswith(":"):
                        event["comment"] = line[1:].strip()
                    else:
                        key, _, value = line.partition(":")
                        event[key] = value.strip()
        finally:
            self.events.put(None)  # the stream ended

    def next(self, kind: str = "alert", timeout: float = 10.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            item = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if item is None or item.get("event") == kind:
                return item

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


@pytest.fixture
def live(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[Api]:
    limits = ApiLimits(stream_recheck_s=0.3)
    with running_api(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", analyzer, limits) as api:
        yield api


def wait_for_subscribers(api: Api, count: int) -> None:
    deadline = time.monotonic() + 10
    while api.ctx.broadcaster.subscribers < count:
        assert time.monotonic() < deadline, "stream did not subscribe"
        time.sleep(0.02)


def test_stream_carries_ingests_and_verdicts(live: Api) -> None:
    stream = Stream(f"{live.url}/api/v1/alerts/stream", live.auth("viewer"))
    staff = Stream(f"{live.url}/api/v1/alerts/stream?watchlist=staff&access_token="
                   f"{live.secrets['viewer']}")
    wait_for_subscribers(live, 2)
    doc = alert_doc()
    assert live.ctx.alerts.ingest(doc)  # as the pipeline's sink does
    event = stream.next()
    assert event is not None and stream.status == 200
    record = json.loads(event["data"])
    assert (record["alert_id"], record["review"], event["id"]) == (
        doc["alert_id"], "new", f"{doc['alert_id']}:0")
    assert not live.ctx.alerts.ingest(doc)  # a duplicate changes nothing: no event
    live.ctx.alerts.ingest({**doc, "revision": 1, "state": "update", "score": 0.99})
    update = stream.next()
    assert update is not None and json.loads(update["data"])["revision"] == 1
    live.call("POST", f"/api/v1/alerts/{doc['alert_id']}/reject", who="reviewer")
    verdict = stream.next()
    assert verdict is not None and json.loads(verdict["data"])["review"] == "rejected"
    other = alert_doc(watchlist="staff")
    live.ctx.alerts.ingest(other)
    only = staff.next()
    assert only is not None and json.loads(only["data"])["alert_id"] == other["alert_id"]
    assert json.loads(stream.next()["data"])["alert_id"] == other["alert_id"]  # type: ignore[index]


def test_stream_ends_when_its_token_is_revoked(live: Api) -> None:
    stream = Stream(f"{live.url}/api/v1/alerts/stream", live.auth("viewer"))
    wait_for_subscribers(live, 1)
    live.ctx.alerts.revoke_token(live.token_ids["viewer"])
    assert stream.next(timeout=10) is None  # ended, within a few recheck periods
    assert stream.join(5)
    assert live.ctx.broadcaster.subscribers == 0


def test_slow_stream_is_cut_not_buffered(live: Api) -> None:
    """A stream whose queue overflows ends (the browser reconnects and re-reads)."""
    live.ctx.broadcaster.queue_size = 4
    import asyncio

    async def overflow() -> bool:
        async with live.ctx.broadcaster.subscribe() as sub:
            for n in range(10):
                live.ctx.broadcaster.publish({"alert_id": str(n)})
            await asyncio.sleep(0.05)
            got = []
            try:
                while True:
                    item = await sub.next(0.2)
                    if item is None:
                        return False
                    got.append(item)
            except EOFError:
                return len(got) == 3 and sub.overflowed

    assert asyncio.run(overflow())
