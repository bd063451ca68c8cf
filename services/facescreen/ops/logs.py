"""Structured JSON logs, one object a line, with biometric data and secrets kept out.

Services never log embeddings, images or tokens on purpose; the formatter is the safety
net for what libraries put into messages and tracebacks (Faust, for one, prints the
event it failed on): long base64 runs and bytes literals are cut, credentials in URLs,
`Bearer` tokens and embedding fields are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from facescreen.ingest.sources import mask_uri

_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_FIELD = re.compile(r"""(?i)(["']?(?:embedding|image|jpeg|thumbnail|token|password)["']?"""
                    r"""\s*[:=]\s*)("[^"]*"|'[^']*'|b"[^"]*"|b'[^']*')""")
_BYTES = re.compile(r"""b(['"])(?:\\.|(?!\1).){48,}?\1""")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{64,}={0,2}")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "fields"}


def redact(text: str) -> str:
    """The text fit for a log line (see module docstring)."""
    text = mask_uri(text)
    text = _BEARER.sub(r"\1***", text)
    text = _FIELD.sub(r'\1"***"', text)
    text = _BYTES.sub("b'<redacted>'", text)
    return _BASE64.sub("<redacted>", text)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "service", "msg", ...fields}` per record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "service": self.service,
            "msg": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry[key] = redact(value) if isinstance(value, str) else value
        for key, value in record.__dict__.items():  # `extra=` keys other than `fields`
            if key not in _STANDARD and not key.startswith("_"):
                entry.setdefault(key, redact(str(value)))
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def setup_json_logging(service: str, level: int = logging.INFO,
                       stream: TextIO | None = None) -> None:
    """Replace the root handlers with one JSON handler on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_clients()


def quiet_clients() -> None:
    """kafka-python logs every connection at INFO; keep its warnings only."""
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
