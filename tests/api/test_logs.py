"""Every log line of an API session (every logger at DEBUG, the server's access log, the
libraries' own) holds no token, no embedding and no image bytes.

Records are captured raw (message, arguments, extra fields, traceback), not through the
redacting JSON formatter, which would hide a leak rather than show it; stdout and stderr
are captured too.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.ingest.images import decode_image
from facescreen.watchlist.enrol import enrol_pictures

from tests.api.conftest import Api, alert_doc, enrol, photo, running_api

SENT = ["franck_01829.jpg", "franck_02045.jpg", "franck_02159.jpg", "audrey.jpg"]
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.name, record.levelname, str(record.msg), repr(record.args)]
        try:
            parts.append(record.getMessage())
        except Exception as exc:  # a bad format string is still a line to read
            parts.append(repr(exc))
        parts += [f"{k}={v!r}" for k, v in record.__dict__.items() if k not in _STANDARD]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        self.lines.append(" | ".join(parts))


@pytest.fixture
def captured() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def session(api: Api, analyzer: FaceAnalyzer) -> list[np.ndarray]:
    """Tokens, enrolment (good and refused), search, alerts, stream, verdicts, erasure;
    returns the embeddings the session handled (enrolled, and the search probe's)."""
    assert enrol(api, "franck", SENT[:2]).status_code == 201
    with np.load(api.data_dir / "embeddings.npz") as npz:
        embeddings = list(npz["vectors"])
    (probe,) = enrol_pictures(analyzer, [("p", decode_image(photo(SENT[2])))])
    embeddings.append(probe.embedding)
    assert enrol(api, "franck", SENT[:1]).status_code == 409
    assert enrol(api, "other", ["audrey.jpg"], face="9").status_code == 422
    r = api.call("POST", "/api/v1/search", who="reviewer",
                 files=[("image", ("probe.jpg", photo(SENT[2]), "image/jpeg"))])
    assert r.status_code == 200 and r.json()["faces"][0]["candidates"]
    doc = alert_doc(subject="franck")
    api.ctx.alerts.ingest(doc)
    api.ctx.alerts.save_crop(doc["alert_id"], photo("audrey.jpg"))
    with api.client.stream("GET", "/api/v1/alerts/stream",
                           params={"access_token": api.secrets["viewer"]}) as stream:
        assert stream.status_code == 200
        next(stream.iter_lines())
    assert api.call("GET", f"/api/v1/alerts/{doc['alert_id']}/crop", who="viewer").content
    assert api.call("GET", "/api/v1/alerts?limit=5", who="viewer").status_code == 200
    assert api.call("POST", f"/api/v1/alerts/{doc['alert_id']}/reject", who="reviewer",
                    json={"comment": "no"}).status_code == 200
    assert api.call("GET", "/api/v1/subjects/franck", who="viewer").status_code == 200
    assert api.call("GET", "/api/v1/me", who="revoked").status_code == 401
    wrong = api.secrets["admin"][::-1]
    assert api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {wrong}"}
                          ).status_code == 401
    assert api.client.get("/api/v1/alerts/stream", params={"access_token": wrong}
                          ).status_code == 401
    _, late = api.ctx.alerts.create_token("late", "admin")
    api.secrets["late"] = late
    assert api.call("DELETE", "/api/v1/subjects/franck", who="late").status_code == 200
    assert api.call("GET", "/api/v1/audit", who="late").status_code == 200
    return embeddings


def leaks(text: str, secrets: list[str], embeddings: list[np.ndarray]) -> list[str]:
    found = []
    for secret in secrets:
        for piece in (secret, secret[4:24], secret[-20:]):
            if piece in text:
                found.append(f"token piece {piece[:6]}...")
    for vector in embeddings:
        for value in vector[:16]:
            for shown in (f"{value:.6f}", f"{value:.4f}", repr(float(value))[:9]):
                if len(shown.lstrip("-0.")) >= 4 and shown in text:
                    found.append(f"embedding value {shown}")
    if re.search(r"(-?\d\.\d{3,}[,\s]+){8,}", text):
        found.append("a run of eight floats")
    for name in SENT:
        data = photo(name)
        for offset in (0, 100, 1000, len(data) // 2, len(data) - 40):
            chunk = data[offset:offset + 24]
            for shown in (repr(chunk)[2:-1], chunk.hex(), base64.b64encode(chunk).decode()[:24],
                          chunk.decode("latin-1")):
                if len(shown) >= 16 and shown in text:
                    found.append(f"image bytes of {name} at {offset}")
    return found


def test_no_token_embedding_or_image_in_any_log_line(tmp_path: Path, analyzer: FaceAnalyzer,
                                                      captured: Everything,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    with running_api(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", analyzer) as api:
        embeddings = session(api, analyzer)
    out, err = capfd.readouterr()
    text = "\n".join(captured.lines) + out + err
    assert len(captured.lines) > 30  # the access log and the libraries did speak
    assert any("uvicorn.access" in line for line in captured.lines)
    assert any("access_token=***" in line for line in captured.lines)
    assert len(embeddings) == 3 and embeddings[0].shape == (128,)
    secrets = [*api.secrets.values(), api.secrets["admin"][::-1]]  # and the wrong one sent
    assert len(secrets) == 6
    assert not leaks(text, secrets, embeddings), leaks(text, secrets, embeddings)


def test_the_leak_check_can_fail(tmp_path: Path) -> None:
    """The checker finds each kind of leak when one is there (a test that cannot fail is
    no test)."""

    secret = "fst_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0"
    vector = np.linspace(-0.31234, 0.51234, 128).astype(np.float32)
    image = photo("audrey.jpg")
    samples = {
        "token": f"Authorization: Bearer {secret}",
        "embedding": "vector " + ", ".join(f"{v:.6f}" for v in vector[:10]),
        "image": f"body {image[1000:1030]!r}",
        "image base64": base64.b64encode(image[:60]).decode(),
    }
    for kind, sample in samples.items():
        assert leaks(sample, [secret], [vector]), kind
    assert leaks("nothing to see: GET /api/v1/me 200", [secret], [vector]) == []
