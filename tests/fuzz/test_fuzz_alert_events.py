"""Hostile alert events at the alert store's door (the alerts topic), into a real store.

`store_message` is what the alert-store consumer runs for every message: it may only store
the revision, find it already stored (a replay or an older revision), or raise
DeadLetter with a reason. Anything else (StoreUnavailable aside, which is the database's
state, not the message's fault) would be dead-lettered by the consumer as
`internal_error`: a defect, which these tests fail on. SQLite in a temporary folder here;
the bounds that only PostgreSQL enforces have their own test on the real server.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from facescreen.alerts.events import validator
from facescreen.alerts.service import store_message
from facescreen.alerts.store import AlertStore, sqlite_url
from facescreen.alerts.store.documents import MAX_REVISION
from facescreen.bus.deadletter import DeadLetter, MessageRef, dead_letter_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.alerts.conftest import pg_database
from tests.alerts.factory import alert_event
from tests.fuzz.schema_strategies import Mutant, mutants, valid

FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
FEW = settings(FUZZ, max_examples=50)  # two SQLite commits each
TEXTS = ("source", "subject_id", "watchlist")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertStore]:
    folder: Path = tmp_path_factory.mktemp("alert-store")
    alerts = AlertStore(sqlite_url(folder))
    alerts.upgrade()
    yield alerts
    alerts.close()


def _store(store: AlertStore, value: bytes | None) -> str:
    ref = MessageRef("facescreen.alerts", 0, 11, b"cam1", value, [])
    started = time.perf_counter()
    try:
        outcome = "stored" if store_message(store, ref) is not None else "unchanged"
    except DeadLetter as letter:
        assert letter.reason != "internal_error"
        assert letter.detail and "\n" not in letter.detail and len(letter.detail) <= 1000
        dead_letter_event("alert-store", ref, letter)
        outcome = letter.reason
    assert time.perf_counter() - started < 2.0
    return outcome


def _texts(doc: dict[str, Any]) -> list[str]:
    return [doc[name] for name in TEXTS] + list(doc["models"].values())


@FEW
@given(valid("alert"))
def test_any_valid_alert_is_stored(store: AlertStore, doc: dict[str, Any]) -> None:
    doc["alert_id"] = str(uuid.uuid4())  # hypothesis replays examples into the same store
    outcome = _store(store, json.dumps(doc).encode())
    if any("\x00" in text for text in _texts(doc)) or doc["revision"] > MAX_REVISION:
        assert outcome == "invalid_alert"  # what PostgreSQL cannot hold, refused on both
    else:
        assert outcome == "stored"
        assert _store(store, json.dumps(doc).encode()) == "unchanged"  # a replay


@FUZZ
@given(mutants("alert"))
def test_a_broken_alert_is_a_dead_letter(store: AlertStore, mutant: Mutant) -> None:
    value = mutant.encode()
    outcome = _store(store, value)
    try:
        still_valid = validator("alert").is_valid(json.loads(value))
    except (ValueError, RecursionError):
        still_valid = False
    if not still_valid:
        assert outcome not in ("stored", "unchanged"), mutant.kind


@FUZZ
@given(st.binary(max_size=2048) | st.sampled_from([b"", b"null", b"[]", b"{}", b"1e999"]))
def test_random_bytes(store: AlertStore, value: bytes) -> None:
    assert _store(store, value) not in ("stored", "unchanged")


@pytest.mark.parametrize("field", TEXTS)
def test_a_lone_surrogate_is_an_invalid_alert(store: AlertStore, field: str) -> None:
    """`"\\ud800"` is valid JSON and passes the schema, but no database encoding holds it."""
    doc = alert_event(str(uuid.uuid4()))
    doc[field] = "\ud800" + doc[field]
    assert _store(store, json.dumps(doc).encode()) == "invalid_alert"


def test_revisions_replays_and_triggers(store: AlertStore) -> None:
    alert_id = str(uuid.uuid4())
    assert _store(store, json.dumps(alert_event(alert_id, 1)).encode()) == "stored"
    assert _store(store, json.dumps(alert_event(alert_id, 0)).encode()) == "unchanged"
    assert _store(store, json.dumps(alert_event(alert_id, 2)).encode()) == "stored"
    assert _store(store, None) == "invalid_json"
    assert _store(store, b"[" * 10_000 + b"]" * 10_000) == "too_deep"
    assert _store(store, b"[" * 100_000 + b"]" * 100_000) == "oversized"
    nan = json.dumps(alert_event() | {"score": float("nan")}).encode()
    assert _store(store, nan) == "non_finite"


def test_a_revision_beyond_the_postgresql_column_is_an_invalid_alert() -> None:
    """The schema bounds no revision; PostgreSQL's column is 32-bit. Past 2**31 - 1 the
    database itself refused the row (`integer out of range`), which the consumer could
    only call an internal error; the store must say the alert is invalid, on both."""
    with pg_database("fuzz") as url:
        store = AlertStore(url)
        store.upgrade()
        try:
            doc = alert_event(str(uuid.uuid4()), 2**31)
            assert _store(store, json.dumps(doc).encode()) == "invalid_alert"
            doc = alert_event(str(uuid.uuid4()), 2**31 - 1)
            assert _store(store, json.dumps(doc).encode()) == "stored"
        finally:
            store.close()
