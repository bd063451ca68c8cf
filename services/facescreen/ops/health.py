"""`/metrics`, `/healthz` and `/readyz` on one small HTTP server in a daemon thread.

`/healthz` answers while the process runs (a liveness probe restarts only a hung or dead
process); `/readyz` answers 200 only when every readiness check holds (connected to the
broker, partitions assigned, inference loaded), so a load balancer or an operator sees
a worker that cannot do its job yet.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class Readiness:
    """Named readiness checks, set by the service as things connect and disconnect."""

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        self._checks = dict.fromkeys(names, False)

    def mark(self, name: str, ok: bool) -> None:
        with self._lock:
            self._checks[name] = ok

    def snapshot(self) -> dict[str, bool]:
        with self._lock:
            return dict(self._checks)

    def ready(self) -> bool:
        return all(self.snapshot().values())


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
                checks = readiness.snapshot()
                ok = all(checks.values())
                self._json(200 if ok else 503, {"ready": ok, "checks": checks})
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
