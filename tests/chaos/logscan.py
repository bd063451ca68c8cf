"""Scan service logs for what must never be in them: embeddings, image bytes, secrets.

Looked for, in every log file of a run (services and servers alike):
- any embedding of the run's face events (a 16-character window of its base64),
- a run of 16 or more numbers in a row (an embedding printed as floats),
- a base64 run of 64 characters or more, a JPEG's base64 start (`/9j/`), JPEG magic bytes
  raw or escaped,
- the given secrets (passwords, tokens) and `Bearer` credentials.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

WINDOW = 16
_TOKENS = re.compile(rf"[A-Za-z0-9+/]{{{WINDOW},}}")
_FLOATS = re.compile(r"(?:[-+]?\d*\.\d+(?:[eE][-+]?\d+)?[,\s]+){15,}[-+]?\d*\.\d+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{64,}={0,2}")
_JPEG_B64 = re.compile(r"/9j/[A-Za-z0-9+/]{12,}")
_JPEG_ESCAPED = re.compile(r"\\xff\\xd8\\xff", re.IGNORECASE)
_BEARER = re.compile(r"(?i)bearer\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,}")


def _windows(embeddings: Iterable[str]) -> set[str]:
    """Every WINDOW-long slice of every embedding that starts on a 4-character boundary of
    its base64 (the alignment a copy of it keeps)."""
    out: set[str] = set()
    for text in embeddings:
        for start in range(0, len(text) - WINDOW + 1, 4):
            out.add(text[start:start + WINDOW])
    return out


def scan_text(name: str, raw: bytes, windows: set[str], secrets: Iterable[str]) -> list[str]:
    found: list[str] = []
    if b"\xff\xd8\xff" in raw:
        found.append(f"{name}: JPEG magic bytes")
    text = raw.decode("utf-8", errors="replace")
    for token in _TOKENS.findall(text):
        if any(token[i:i + WINDOW] in windows for i in range(len(token) - WINDOW + 1)):
            found.append(f"{name}: an embedding of the run ({token[:12]}...)")
            break
    for pattern, what in ((_FLOATS, "a vector of numbers"), (_BASE64, "a long base64 run"),
                          (_JPEG_B64, "a JPEG in base64"), (_JPEG_ESCAPED, "escaped JPEG bytes"),
                          (_BEARER, "a bearer token")):
        match = pattern.search(text)
        if match:
            found.append(f"{name}: {what} ({match.group(0)[:24]}...)")
    for secret in secrets:
        if secret and secret in text:
            found.append(f"{name}: a secret ({len(secret)} characters)")
    return found


def scan_logs(paths: Iterable[Path], embeddings: Iterable[str],
              secrets: Iterable[str] = ()) -> list[str]:
    """Findings (file: what), empty when every log is clean; a missing log is a finding."""
    windows = _windows(embeddings)
    keep = list(secrets)
    found: list[str] = []
    for path in paths:
        if not path.is_file():
            found.append(f"{path.name}: no log written")
            continue
        found += scan_text(path.name, path.read_bytes(), windows, keep)
    return found
