"""A real webhook receiver for tests: http.server on 127.0.0.1 in a thread, scripted to fail.

The script is a list of actions, one per request, then 200 for ever: "500", "429:1" (with
Retry-After: 1), "hang" (answers nothing until the test ends: the sender times out).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from facescreen.alerts.events import alert_to_event
from facescreen.alerts.webhook_routes import WebhookRoute
from facescreen.alerts.webhooks import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSender,
    verify_signature,
)
from facescreen.core.alerting import Alert, Evidence

SECRET = "s3cret-for-the-vip-receiver-0123456789"


def event(revision: int = 0, watchlist: str = "vip") -> dict[str, Any]:
    """A schema-v2 alert event, as the pipeline writes it."""
    evidence = Evidence(frames_seen=9, faces_used=6, best_quality=0.8, score_min=0.61, score_mean=0.7,
                        score_max=0.74, searches=6, margin=0.2, first_frame=3, decided_frame=8,
                        time_to_decision_s=0.4)
    alert = Alert(alert_id=str(uuid.UUID(int=42)), state="open" if revision == 0 else "update",
                  revision=revision, source="cam1", frame_index=8, timestamp=12.5, track_id=1,
                  subject_id="alice", watchlist=watchlist, score=0.72, threshold=0.6,
                  box=(10.0, 20.0, 110.0, 140.0), quality=0.8, track_first_seen=12.1, evidence=evidence)
    return alert_to_event(alert, "centerface", "dlib")


@dataclass
class Receiver:
    """What the receiver saw, and what it answers: a script of actions, then 200 for ever."""

    script: list[str]
    requests: list[dict[str, Any]] = field(default_factory=list)
    accepted: dict[str, bytes] = field(default_factory=dict)  # idempotency key -> body
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


def _handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ts, sig, key = (self.headers.get(h) for h in (TIMESTAMP_HEADER, SIGNATURE_HEADER,
                                                         IDEMPOTENCY_HEADER))
            with rx.lock:
                action = rx.script.pop(0) if rx.script else "200"
                rx.requests.append({"ts": ts, "sig": sig, "key": key, "body": body, "action": action,
                                    "verified": verify_signature(SECRET, ts, body, sig, max_age_s=300)})
            if action == "hang":  # longer than the sender's timeout; it gives up first
                rx.release.wait(10)
                return
            code = int(action.split(":")[0])
            if code == 200 and key is not None:
                with rx.lock:  # taken before the answer, as a receiver would; deduped on the key
                    rx.accepted.setdefault(key, body)
            self.send_response(code)
            if ":" in action:
                self.send_header("Retry-After", action.split(":")[1])
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextlib.contextmanager
def serving(script: list[str]) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 (a free port) for the block; its url is `rx.url`."""
    rx = Receiver(script=list(script))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rx))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rx.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield rx
    finally:
        rx.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def route(url: str, **kw: Any) -> dict[str, WebhookRoute]:
    return {"vip": WebhookRoute("vip", url, "HOOK_SECRET", SECRET.encode(), **kw)}


def sender(rx: Receiver, waits: list[float] | None = None, **kw: Any) -> WebhookSender:
    def sleep(s: float) -> None:
        if waits is not None:
            waits.append(s)
        time.sleep(min(s, 0.05))

    opts: dict[str, Any] = {"initial_wait_s": 0.01, "max_wait_s": 0.2, "jitter_s": 0.01,
                            "timeout_s": 1.0, "sleep": sleep} | kw
    return WebhookSender(route(rx.url), **opts)
