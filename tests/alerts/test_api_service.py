"""`facescreen api` as a service of its own: PostgreSQL filled by another process, live
changes found by polling, a rejection published on the feedback topic for the matcher."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from facescreen.alerts.store import AlertStore

from tests.alerts.conftest import pg_database
from tests.alerts.factory import alert_event
from tests.conftest import REPO
from tests.distributed.fixtures_kafka import make_topics, read_topic


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_service_reads_postgresql_and_publishes_rejections(broker: str,
                                                               tmp_path: Path) -> None:
    topics = make_topics(broker, "api")
    with pg_database("api") as url:
        store = AlertStore(url)
        store.upgrade()
        reviewer = store.create_token("rev", "reviewer")[1]
        port = _free_port()
        log = (tmp_path / "api.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "facescreen.cli.main", "api", "--db", "env:FS_TEST_DB",
             "--data-dir", str(tmp_path / "wl"), "--bootstrap", broker,
             "--topic-prefix", topics.prefix, "--port", str(port), "--poll", "0.2"],
            cwd=REPO, stdout=log, stderr=log, env={**os.environ, "FS_TEST_DB": url})
        log.close()
        base, auth = f"http://127.0.0.1:{port}/api/v1", {"Authorization": f"Bearer {reviewer}"}
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            doc = alert_event(source="gate-1", emitted_at=time.time())
            store.ingest(doc)  # as the alert-store consumer would, from another process
            listed = httpx.get(f"{base}/alerts", headers=auth, timeout=10).json()
            assert [a["alert_id"] for a in listed["items"]] == [doc["alert_id"]]
            answer = httpx.post(f"{base}/alerts/{doc['alert_id']}/reject", headers=auth,
                                json={"comment": "not her"}, timeout=10)
            assert answer.status_code == 200 and answer.json()["review"] == "rejected"
            records = read_topic(broker, topics.bus.feedback.name, key=b"gate-1")
            (feedback,) = [json.loads(r.value) for r in records]
            assert (feedback["alert_id"], feedback["camera"], feedback["verdict"]) == (
                doc["alert_id"], "gate-1", "reject")
        finally:
            proc.terminate()
            proc.wait(30)
            store.close()
