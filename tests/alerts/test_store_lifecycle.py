"""Retention, erasure, crops, tokens and bad input, on SQLite and the real PostgreSQL.

What is deleted is checked where it lived: the tables (read with SQL, not through the
store) and the crops folder.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import uuid
from pathlib import Path

import pytest
from facescreen.alerts.store import (
    AlertNotFound,
    AlertStore,
    StoreError,
    StoreUnavailable,
    TokenNotFound,
    role_allows,
)
from facescreen.alerts.store.retention import RetentionJob, parse_age
from sqlalchemy import text

from tests.alerts.factory import JPEG, alert_event

DAY = 86_400.0


def _count(store: AlertStore, sql: str, **params: object) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def _with_everything(store: AlertStore, subject: str, emitted_at: float) -> str:
    """An alert with two reviews, a webhook delivery and a crop."""
    alert_id = str(uuid.uuid4())
    store.ingest(alert_event(alert_id, 0, subject_id=subject, emitted_at=emitted_at))
    store.review(alert_id, "acknowledge", "ann", "")
    store.review(alert_id, "reject", "bob", "")
    store.add_delivery(alert_id, 0, "vip", "http://127.0.0.1:9/hook")
    store.save_crop(alert_id, JPEG)
    return alert_id


def test_crops_are_private_files_and_opt_in(alert_store: AlertStore, db_url: str,
                                            tmp_path: Path) -> None:
    alert_id = str(uuid.uuid4())
    alert_store.ingest(alert_event(alert_id))
    assert alert_store.crop(alert_id) is None
    alert_store.save_crop(alert_id, JPEG)
    record = alert_store.get(alert_id)
    assert record is not None and record.crop_available
    assert alert_store.crop(alert_id) == JPEG
    folder = tmp_path / "crops"
    (path,) = folder.iterdir()
    assert path.name == f"{alert_id}.jpg"  # the alert id, never a person's name
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(StoreError, match="JPEG"):
        alert_store.save_crop(alert_id, b"GIF89a...")
    with pytest.raises(AlertNotFound):
        alert_store.save_crop(str(uuid.uuid4()), JPEG)
    plain = AlertStore(db_url)
    try:
        with pytest.raises(StoreError, match="crops are off"):
            plain.save_crop(alert_id, JPEG)
        with pytest.raises(StoreError, match="crops folder"):
            plain.delete_subject("alice")  # must not drop the rows and leave the picture
    finally:
        plain.close()
    assert path.exists() and alert_store.get(alert_id) is not None


def test_erasure_removes_the_subjects_rows_and_crop_files(alert_store: AlertStore,
                                                          tmp_path: Path) -> None:
    now = time.time()
    gone = [_with_everything(alert_store, "erase-me", now - i) for i in range(3)]
    kept = _with_everything(alert_store, "someone-else", now)
    assert alert_store.erase_subject("erase-me") == (3, 3)
    assert _count(alert_store, "SELECT count(*) FROM alerts WHERE subject_id = 'erase-me'") == 0
    for table in ("alerts", "alert_reviews", "webhook_deliveries"):
        sql = f"SELECT count(*) FROM {table} WHERE alert_id IN ({', '.join(repr(a) for a in gone)})"
        assert _count(alert_store, sql) == 0, table
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == [f"{kept}.jpg"]
    assert _count(alert_store, "SELECT count(*) FROM alert_reviews") == 2  # the other's stay
    assert alert_store.crop(kept) == JPEG
    assert alert_store.delete_subject("erase-me") == 0
    for alert_id in gone:
        assert alert_store.get(alert_id) is None and alert_store.crop(alert_id) is None


def test_retention_purges_by_age_whatever_the_state(alert_store: AlertStore,
                                                    tmp_path: Path) -> None:
    now = 2_000_000_000.0
    old = [_with_everything(alert_store, f"s{i}", now - 31 * DAY - i) for i in range(3)]
    closed_old = str(uuid.uuid4())
    alert_store.ingest(alert_event(closed_old, 4, state="closed", emitted_at=now - 40 * DAY))
    recent = _with_everything(alert_store, "s9", now - 29 * DAY)
    orphan = tmp_path / "crops" / f"{uuid.uuid4()}.jpg"  # a crop whose alert is gone
    orphan.write_bytes(JPEG)
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / "crops" / f"{uuid.uuid4()}.jpg"  # maybe being saved right now: kept
    fresh.write_bytes(JPEG)
    assert alert_store.purge(parse_age("30d"), now) == 4
    assert _count(alert_store, "SELECT count(*) FROM alerts") == 1
    assert _count(alert_store, "SELECT count(*) FROM alert_reviews") == 2
    assert _count(alert_store, "SELECT count(*) FROM webhook_deliveries") == 1
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == sorted(
        [f"{recent}.jpg", fresh.name])
    assert all(alert_store.get(a) is None for a in [*old, closed_old])
    assert alert_store.purge(30 * DAY, now) == 0
    with pytest.raises(StoreError, match="positive"):
        alert_store.purge(0, now)


def test_ages_parse() -> None:
    assert parse_age("30d") == 30 * DAY and parse_age("12h") == 43_200
    assert parse_age("90m") == 5400 and parse_age("2w") == 14 * DAY and parse_age("15") == 15
    for bad in ("", "-1d", "0d", "3x", "d"):
        with pytest.raises(ValueError, match="expected a positive number"):
            parse_age(bad)


def test_retention_job_purges_in_the_background(alert_store: AlertStore) -> None:
    alert_store.ingest(alert_event(emitted_at=time.time() - 10 * DAY))
    alert_store.ingest(alert_event(emitted_at=time.time()))
    job = RetentionJob(alert_store, older_than_s=DAY, every_s=3600).start()
    try:
        deadline = time.monotonic() + 20
        while job.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        job.stop()
    assert (job.runs, job.purged) == (1, 1)
    assert _count(alert_store, "SELECT count(*) FROM alerts") == 1


def test_tokens_are_stored_hashed_and_revoked_ones_refused(alert_store: AlertStore) -> None:
    token_id, secret = alert_store.create_token("ops team", "reviewer")
    with alert_store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT * FROM api_tokens"))]
    assert len(rows) == 1
    assert not any(secret in str(value) for value in rows[0])  # the secret is nowhere
    assert hashlib.sha256(secret.encode()).hexdigest() in rows[0]
    record = alert_store.check_token(secret)
    assert record is not None and (record.token_id, record.role, record.name) == (
        token_id, "reviewer", "ops team")
    assert alert_store.check_token(secret + "x") is None
    assert alert_store.check_token("") is None and alert_store.check_token("a" * 10_000) is None
    other_id, other = alert_store.create_token("viewer bot", "viewer")
    revoked = alert_store.revoke_token(token_id)
    assert revoked.revoked_at is not None
    assert alert_store.check_token(secret) is None  # refused from now on
    assert alert_store.revoke_token(token_id).revoked_at == revoked.revoked_at  # idempotent
    assert alert_store.check_token(other) is not None
    listed = {t.token_id: t for t in alert_store.list_tokens()}
    assert set(listed) == {token_id, other_id} and listed[token_id].revoked
    assert [t.token_id for t in alert_store.list_tokens(include_revoked=False)] == [other_id]
    with pytest.raises(TokenNotFound, match="no token with id 'nope'"):
        alert_store.revoke_token("nope")
    with pytest.raises(StoreError, match="role 'root'"):
        alert_store.create_token("x", "root")
    with pytest.raises(StoreError, match="control characters"):
        alert_store.create_token("bad\nname", "admin")
    assert role_allows("admin", "reviewer") and role_allows("reviewer", "viewer")
    assert not role_allows("viewer", "reviewer") and not role_allows("root", "viewer")


def test_deliveries_are_queued_once_per_revision_and_route(alert_store: AlertStore) -> None:
    alert_id = str(uuid.uuid4())
    alert_store.ingest(alert_event(alert_id))
    first = alert_store.add_delivery(alert_id, 0, "vip", "http://127.0.0.1:9/a")
    assert alert_store.add_delivery(alert_id, 0, "vip", "http://127.0.0.1:9/a").id == first.id
    later = alert_store.add_delivery(alert_id, 0, "ops", "http://127.0.0.1:9/b", time.time() + 60)
    assert [d.id for d in alert_store.due_deliveries()] == [first.id]
    done = alert_store.update_delivery(first.id, status="dead", attempts=5, last_error="HTTP 500")
    assert (done.status, done.attempts, done.last_error) == ("dead", 5, "HTTP 500")
    assert alert_store.due_deliveries() == []
    assert [d.id for d in alert_store.due_deliveries(time.time() + 120)] == [later.id]
    with pytest.raises(AlertNotFound):
        alert_store.add_delivery(str(uuid.uuid4()), 0, "vip", "http://x")


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://u@h/db", "driver 'mysql' is not supported"),
    ("::not a url", "bad database URL"),
    ("postgresql+psycopg://u:hunter2@127.0.0.1:5432/", "names no database"),
])
def test_bad_urls_are_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        AlertStore(url)
    assert "\n" not in str(caught.value) and "hunter2" not in str(caught.value)


def test_unreachable_and_missing_databases_are_one_line_errors(tmp_path: Path) -> None:
    store = AlertStore("postgresql+psycopg://postgres:hunter2@127.0.0.1:1/alerts")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Connection refused") as caught:
        store.upgrade()
    assert time.monotonic() - started < 10
    text_ = str(caught.value)
    assert "\n" not in text_ and "hunter2" not in text_ and "127.0.0.1:1/alerts" in text_
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreError, match="does not exist"):
        AlertStore(f"sqlite:///{tmp_path}/no/such/folder/alerts.db")


def test_a_missing_postgresql_database_is_not_mistaken_for_missing_tables(
        pg_session_db: str) -> None:
    missing_db = pg_session_db.rsplit("/", 1)[0] + "/facescreen_no_such_database"
    store = AlertStore(missing_db)
    with pytest.raises(StoreUnavailable, match='database "facescreen_no_such_database" does not exist'
                       ) as caught:
        store.upgrade()
    assert "migrations" not in str(caught.value)
