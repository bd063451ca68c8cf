"""The log scan finds what it looks for (so a clean chaos run means something)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from tests.chaos.logscan import scan_logs, scan_text


def _embedding(seed: int) -> str:
    vector = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return base64.b64encode((vector / np.linalg.norm(vector)).tobytes()).decode()


def test_a_clean_service_log_has_no_findings(tmp_path: Path) -> None:
    lines = [{"msg": "alert", "alert_id": "5fb5614a-3865-5c64-886b-40d4003e138a",
              "camera": "gate-a", "score": 0.9731},
             {"msg": "partitions assigned", "partitions": ["x.facescreen.frames:0"]}]
    log = tmp_path / "analyzer-1.log"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert scan_logs([log], [_embedding(1)], secrets=["pw-Very-Secret-1"]) == []


def test_each_kind_of_leak_is_found() -> None:
    embedding = _embedding(2)
    vector = np.frombuffer(base64.b64decode(embedding), np.float32)
    jpeg_b64 = "/9j/4AAQSkZJRgABAQAAAQABAAD"
    cases = {
        "an embedding of the run": f'{{"msg": "event", "x": "{embedding[40:80]}"}}',
        "a vector of numbers": "faces: " + ", ".join(f"{v:.5f}" for v in vector[:20]),
        "a long base64 run": "payload " + "QUJD" * 20,
        "a JPEG in base64": f"frame {jpeg_b64}",
        "escaped JPEG bytes": r"value=b'\xff\xd8\xff\xe0\x00\x10JFIF'",
        "a bearer token": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc",
        "a secret": "connecting to redis://:pw-Very-Secret-1@127.0.0.1:6379/0",
    }
    for what, text in cases.items():
        found = scan_text("x.log", text.encode(), {embedding[i:i + 16]
                                                   for i in range(0, 600, 4)},
                          ["pw-Very-Secret-1"])
        assert any(what in f for f in found), (what, found)
    assert scan_text("x.log", b"\xff\xd8\xff\xe0 raw", set(), []) == ["x.log: JPEG magic bytes"]


def test_a_missing_log_is_a_finding(tmp_path: Path) -> None:
    assert scan_logs([tmp_path / "matcher-1.log"], []) == ["matcher-1.log: no log written"]
