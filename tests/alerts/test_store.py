"""The alert store on SQLite and the real PostgreSQL: migrations, ingest, reviews, listing."""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

import pytest
from facescreen.alerts import migrations
from facescreen.alerts.store import (
    AlertFilter,
    AlertNotFound,
    AlertRecord,
    AlertStore,
    InvalidAlert,
    InvalidCursor,
    ReviewConflict,
    StoreError,
)
from sqlalchemy import inspect, text

from tests.alerts.factory import alert_event

TABLES = {"alerts", "alert_reviews", "api_tokens", "webhook_deliveries",
          migrations.VERSION_TABLE}


def test_migrations_build_an_empty_database_that_matches_the_models(empty_db_url: str) -> None:
    assert migrations.current(empty_db_url) is None
    migrations.upgrade(empty_db_url)
    assert migrations.current(empty_db_url) == migrations.head()
    assert migrations.pending_diffs(empty_db_url) == []  # `alembic check`: models == migrations
    migrations.upgrade(empty_db_url)  # idempotent: every process calls it at start
    store = AlertStore(empty_db_url)
    try:
        assert set(inspect(store.engine).get_table_names()) >= TABLES
        # The check can fail: a column the models lack is reported.
        with store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE alerts ADD COLUMN stray INTEGER"))
        diffs = migrations.pending_diffs(empty_db_url)
        assert any(d[0] == "remove_column" and d[3].name == "stray" for d in diffs), diffs
    finally:
        store.close()


def test_a_store_never_migrated_says_so(empty_db_url: str) -> None:
    store = AlertStore(empty_db_url)
    try:
        with pytest.raises(StoreError, match="run the migrations"):
            store.get(str(uuid.uuid4()))
    finally:
        store.close()


def test_ingest_keeps_the_highest_revision_and_is_idempotent(alert_store: AlertStore) -> None:
    alert_id = str(uuid.uuid4())
    opened = alert_event(alert_id, 0, score=0.70, emitted_at=100.0)
    assert alert_store.ingest(opened) is True
    assert alert_store.ingest(opened) is False  # the same document again
    newer = alert_event(alert_id, 2, score=0.80, emitted_at=102.0, faces_used=12)
    assert alert_store.ingest(newer) is True
    older = alert_event(alert_id, 1, score=0.75, emitted_at=101.0)
    assert alert_store.ingest(older) is False  # arrives late: changes nothing
    record = alert_store.get(alert_id)
    assert record is not None
    assert (record.revision, record.state, record.score, record.emitted_at) == (2, "update", 0.80, 102.0)
    assert record.evidence == newer["evidence"] and record.frame_index == newer["frame_index"]
    assert alert_store.event(alert_id) == newer  # the stored revision, as its event
    closed = alert_event(alert_id, 3, state="closed", score=0.81, emitted_at=103.0)
    assert alert_store.ingest(closed) is True
    assert alert_store.ingest(closed) is False
    record = alert_store.get(alert_id)
    assert record is not None and (record.state, record.revision) == ("closed", 3)
    with alert_store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alerts")).scalar_one() == 1


def test_ingest_keeps_the_review_and_refuses_what_is_not_an_alert(alert_store: AlertStore) -> None:
    alert_id = str(uuid.uuid4())
    alert_store.ingest(alert_event(alert_id, 0))
    alert_store.review(alert_id, "acknowledge", "rev1", "seen him")
    assert alert_store.ingest(alert_event(alert_id, 1, score=0.9))
    record = alert_store.get(alert_id)
    assert record is not None
    assert (record.review, record.reviewed_by, record.review_comment, record.score) == (
        "acknowledged", "rev1", "seen him", 0.9)
    bad = alert_event(subject_id="Jane Q. Public", score=0.5)
    bad["score"] = 7.0
    with pytest.raises(InvalidAlert, match="score: fails maximum") as caught:
        alert_store.ingest(bad)
    assert "Jane" not in str(caught.value)  # names the field, never the values
    docs: list[Any] = [[], {"schema_version": 1}, {**alert_event(), "alert_id": "not-a-uuid"},
            {**alert_event(), "subject_id": "x" * 300}, {**alert_event(), "source": "a\x00b"}]
    for doc in docs:
        with pytest.raises(InvalidAlert):
            alert_store.ingest(doc)
    assert alert_store.list()[0] == [alert_store.get(alert_id)]


def test_concurrent_ingest_never_lowers_a_revision(alert_store: AlertStore) -> None:
    alert_id = str(uuid.uuid4())
    docs = [alert_event(alert_id, r, emitted_at=100.0 + r) for r in range(24)]
    random.Random(3).shuffle(docs)
    errors: list[BaseException] = []

    def work(part: list[dict[str, Any]]) -> None:
        try:
            for doc in part:
                alert_store.ingest(doc)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(docs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    record = alert_store.get(alert_id)
    assert record is not None and record.revision == 23 and record.emitted_at == 123.0


def test_reviews_are_kept_as_a_history_and_the_last_verdict_wins(alert_store: AlertStore) -> None:
    alert_id = str(uuid.uuid4())
    alert_store.ingest(alert_event(alert_id, 1))
    seen: list[AlertRecord] = []
    alert_store.add_listener(seen.append)
    first = alert_store.review(alert_id, "acknowledge", "ann", "looks like him", expect="new")
    assert first.review == "acknowledged" and first.reviewed_by == "ann"
    with pytest.raises(ReviewConflict, match="acknowledged, not new"):
        alert_store.review(alert_id, "reject", "bob", "", expect="new")  # ann got there first
    last = alert_store.review(alert_id, "reject", "bob", "not him")
    assert (last.review, last.reviewed_by, last.review_comment) == ("rejected", "bob", "not him")
    history = alert_store.reviews(alert_id)
    assert [(h.verdict, h.actor, h.comment, h.revision) for h in history] == [
        ("acknowledge", "ann", "looks like him", 1), ("reject", "bob", "not him", 1)]
    assert history[0].at <= history[1].at
    assert [r.review for r in seen] == ["acknowledged", "rejected"]
    assert alert_store.ingest(alert_event(alert_id, 1)) is False
    assert len(seen) == 2  # no change, no notification
    unknown = str(uuid.uuid4())
    with pytest.raises(AlertNotFound, match=f"no alert {unknown}"):
        alert_store.review(unknown, "reject", "bob", "")
    with pytest.raises(AlertNotFound, match="not an alert id"):
        alert_store.review("../etc", "reject", "bob", "")
    with pytest.raises(AlertNotFound):
        alert_store.reviews(unknown)
    with pytest.raises(StoreError, match="expected acknowledge or reject"):
        alert_store.review(alert_id, "approve", "bob", "")
    assert alert_store.get(unknown) is None and alert_store.get("nonsense") is None


def _expected(records: list[AlertRecord], keep: object) -> list[str]:
    chosen = [r for r in records if keep(r)]  # type: ignore[operator]
    chosen.sort(key=lambda r: (r.emitted_at, r.alert_id), reverse=True)
    return [r.alert_id for r in chosen]


def _all_pages(store: AlertStore, f: AlertFilter, limit: int) -> list[str]:
    ids: list[str] = []
    page, cursor = store.list(f, limit=limit)
    ids += [r.alert_id for r in page]
    while cursor is not None:
        assert len(page) == limit
        page, cursor = store.list(f, limit=limit, cursor=cursor)
        ids += [r.alert_id for r in page]
    return ids


def test_keyset_pagination_with_filters_newest_first(alert_store: AlertStore) -> None:
    rng = random.Random(7)
    for i in range(40):
        emitted = 1000.0 + rng.choice([0, 1, 2, 3, 5, 8]) + (i % 3) * 0.5  # many ties
        alert_store.ingest(alert_event(
            revision=rng.randint(0, 3), source=rng.choice(["gate", "hall"]),
            subject_id=rng.choice(["s1", "s2", "s3"]), watchlist=rng.choice(["vip", "ban"]),
            score=round(rng.uniform(0.6, 0.99), 3), emitted_at=emitted,
            captured_at=float(i)))
    records = alert_store.list(limit=1000)[0]
    assert len(records) == 40
    some = records[::3]
    for r in some[:6]:
        alert_store.review(r.alert_id, "reject", "rev", "")
    records = alert_store.list(limit=1000)[0]
    cases = [
        (AlertFilter(), lambda r: True),
        (AlertFilter(watchlist="vip", camera="gate"), lambda r: r.watchlist == "vip" and r.source == "gate"),
        (AlertFilter(subject_id="s2", min_score=0.75), lambda r: r.subject_id == "s2" and r.score >= 0.75),
        (AlertFilter(review="rejected"), lambda r: r.review == "rejected"),
        (AlertFilter(review="new", state="open"), lambda r: r.review == "new" and r.state == "open"),
        (AlertFilter(since=1002.0, until=1005.0), lambda r: 1002.0 <= r.emitted_at < 1005.0),
        (AlertFilter(since=10.0, until=20.0, time_field="captured"), lambda r: 10 <= r.captured_at < 20),
    ]
    for f, keep in cases:
        want = _expected(records, keep)
        assert want, f
        for limit in (1, 4, 7):
            assert _all_pages(alert_store, f, limit) == want, (f, limit)
    with pytest.raises(InvalidCursor):
        alert_store.list(cursor="c1.garbage!")
    with pytest.raises(InvalidCursor):
        alert_store.list(cursor="something else")
    with pytest.raises(StoreError, match="limit"):
        alert_store.list(limit=0)
    with pytest.raises(ValueError, match="until is before since"):
        AlertFilter(since=5.0, until=1.0)


def test_changed_since_follows_ingests_and_reviews(alert_store: AlertStore) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    alert_store.ingest(alert_event(a))
    mark = alert_store.changed_since(0.0)[-1]
    alert_store.ingest(alert_event(b))
    (after,) = alert_store.changed_since(_updated(alert_store, a))
    assert after.alert_id == b and mark.alert_id == a
    alert_store.review(a, "acknowledge", "ann", "")
    assert [r.alert_id for r in alert_store.changed_since(_updated(alert_store, b))] == [a]


def _updated(store: AlertStore, alert_id: str) -> float:
    with store.engine.connect() as conn:
        return float(conn.execute(text("SELECT updated_at FROM alerts WHERE alert_id = :a"),
                                  {"a": alert_id}).scalar_one())
