"""`/metrics`, `/healthz` and `/readyz` on one small HTTP server in a daemon thread.

`/healthz` answers while the process runs (a liveness probe restarts only a hung or dead
process); `/readyz` answers 200 only when every readiness check holds (connected to the
broker, partitions assigned, inference loaded, topics present, work progressing), so a
load balancer or an operator sees a worker that cannot do its job, and why:

    {"ready": false,
     "checks": {"broker": true, "inference": false, "topics": true, "progress": false},
     "retrying": {"inference": {"attempts": 4, "error": "InferenceUnavailable: ...",
                                "since": "2026-12-01T12:30:00Z"}},
     "stalled": {"facescreen.frames:3": {"waiting_s": 75.2}}}

`retrying` lists the operations being retried now (`facescreen.ops.retry`), `stalled` the
work that has waited longer than `stall_s` without moving (`progress` is false then).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

DEFAULT_STALL_S = 60.0


@dataclass
class _Retry:
    attempts: int
    error: str
    since: float  # wall clock of the first failure


class Readiness:
    """Named readiness checks, set by the service as things connect and disconnect.

    Besides plain checks it keeps two views that make readiness reflect progress rather
    than connections alone: operations being retried (`retrying` / `recovered`) and units
    of work that wait (`waiting` / `progressed`): a partition with lag, a camera with a
    frame in hand. Once something has waited `stall_s` without progressing, the
    `progress` check is false.
    """

    def __init__(self, *names: str, stall_s: float = DEFAULT_STALL_S) -> None:
        self._lock = threading.Lock()
        self._checks = dict.fromkeys(names, False)
        self._retrying: dict[str, _Retry] = {}
        self._waiting: dict[str, float] = {}  # key -> monotonic time it started waiting
        self._progress_used = False
        self.stall_s = stall_s

    def mark(self, name: str, ok: bool) -> None:
        with self._lock:
            self._checks[name] = ok

    def retrying(self, operation: str, attempts: int, error: str) -> None:
        """`operation` failed `attempts` times so far (error text already masked)."""
        with self._lock:
            known = self._retrying.get(operation)
            since = known.since if known is not None else time.time()
            self._retrying[operation] = _Retry(attempts, error, since)

    def recovered(self, operation: str) -> None:
        with self._lock:
            self._retrying.pop(operation, None)

    def waiting(self, key: str) -> None:
        """Work is waiting on `key`; the clock starts at the first call since progress."""
        with self._lock:
            self._progress_used = True
            self._waiting.setdefault(key, time.monotonic())

    def progressed(self, key: str) -> None:
        """`key` moved on: whatever waited there is done (call `waiting` again if more)."""
        with self._lock:
            self._progress_used = True
            self._waiting.pop(key, None)

    def forget(self, key: str) -> None:
        """`key` is no longer ours (a partition revoked, a camera finished)."""
        self.progressed(key)

    def stalled(self) -> dict[str, float]:
        """Keys that have waited at least `stall_s`, with how long (seconds)."""
        now = time.monotonic()
        with self._lock:
            return {k: now - t for k, t in self._waiting.items() if now - t >= self.stall_s}

    def snapshot(self) -> dict[str, bool]:
        stalled = self.stalled()
        with self._lock:
            checks = dict(self._checks)
            if self._progress_used or "progress" in checks:
                checks["progress"] = checks.get("progress", True) and not stalled
        return checks

    def ready(self) -> bool:
        return all(self.snapshot().values())

    def report(self) -> dict[str, Any]:
        """The `/readyz` body."""
        checks = self.snapshot()
        with self._lock:
            retrying = {op: {"attempts": r.attempts, "error": r.error,
                             "since": _iso(r.since)} for op, r in self._retrying.items()}
        body: dict[str, Any] = {"ready": all(checks.values()), "checks": checks}
        if retrying:
            body["retrying"] = retrying
        stalled = self.stalled()
        if stalled:
            body["stalled"] = {k: {"waiting_s": round(s, 1)} for k, s in sorted(stalled.items())}
        return body


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


class HealthServer:
    """Serves the three endpoints; `port=0` picks a free port (see `.port`)."""

    def __init__(self, readiness: Readiness, host: str = "127.0.0.1", port: int = 0) -> None:
        self.readiness = readiness
        handler = _handler(readiness)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(200, {"status": "alive"})
            elif path == "/readyz":
                body = readiness.report()
                self._json(200 if body["ready"] else 503, body)
            else:
                self._json(404, {"error": "not found"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the service's own logs

    return Handler
