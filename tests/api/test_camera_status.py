"""Camera status from the ingest workers' real /metrics endpoints."""

from __future__ import annotations

import socket

from facescreen.api.camera_status import MetricsCameraStatus
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_merges_workers_and_marks_an_unreachable_one() -> None:
    registry = CollectorRegistry()
    up = Gauge("facescreen_source_up", "up", ["source"], registry=registry)
    captured = Counter("facescreen_frames_captured", "captured", ["source"], registry=registry)
    published = Counter("facescreen_ingest_frames_published", "published", ["camera"],
                        registry=registry)
    up.labels("gate-1").set(1)
    up.labels("gate-2").set(0)
    captured.labels("gate-1").inc(120)
    published.labels("gate-1").inc(118)
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        dead = f"http://127.0.0.1:{_free_port()}/metrics"
        status = MetricsCameraStatus([f"http://127.0.0.1:{port}/metrics", dead], 1.0)()
    finally:
        server.shutdown()
        thread.join(5)
    by_name = {c["name"]: c for c in status}
    assert by_name["gate-1"]["state"] == "up" and by_name["gate-1"]["frames_captured"] == 120
    assert by_name["gate-1"]["frames_published"] == 118
    assert by_name["gate-2"]["state"] == "down"
    assert by_name[None]["state"] == "unknown" and by_name[None]["endpoint"] == dead
