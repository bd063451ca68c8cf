"""Running the API under uvicorn, in the foreground or (tests, embedded mode) in a thread.

The server gets a socket that is already bound, so a caller that asked for port 0 knows
the port before the first request, and uvicorn's own logging configuration is left off:
the process's logging (JSON, redacted: `facescreen.ops.logs`) applies, with
`access_token=` masked in access lines.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from facescreen.api.auth import install_log_filter


class ApiServer:
    """uvicorn on `host:port` (0: a free port), started in a daemon thread."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
                 access_log: bool = True) -> None:
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it every kept-alive response waited ~40 ms for a delayed ACK (measured).
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=access_log,
                                timeout_graceful_shutdown=2, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="facescreen-api", daemon=True)
        install_log_filter()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve in the foreground until interrupted."""
    server = ApiServer(app, host, port)
    server.server.run(sockets=[server.sock])
