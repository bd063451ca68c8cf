"""Webhook deliveries recorded in the real alert store (SQLite), resumed after a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from facescreen.alerts.store import AlertStore, sqlite_url
from facescreen.alerts.webhook_store import StoreRecorder, resume_due
from facescreen.alerts.webhooks import MemoryRecorder

from tests.alerts.receiver import Receiver, event, sender, serving


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlertStore]:
    s = AlertStore(sqlite_url(tmp_path))
    s.upgrade()
    yield s
    s.close()


def test_outcomes_land_in_the_deliveries_table_and_a_redelivered_event_is_not_resent(
        store: AlertStore) -> None:
    ev = event(revision=1)
    store.ingest(ev)
    with serving(["500", "200"]) as rx, sender(rx, recorder=StoreRecorder(store)) as s:
        outcome = s.deliver(ev)
        assert outcome is not None and outcome.status == "delivered" and outcome.id is not None
        again = s.deliver(ev)  # the alerts topic is at-least-once
        assert again is not None and again.status == "delivered"
        assert len(rx.requests) == 2  # the 500 and the 200; nothing for the repeat
    (row,) = store.deliveries(alert_id=ev["alert_id"])
    assert (row.status, row.attempts, row.revision, row.route, row.last_error) == (
        "delivered", 2, 1, "vip", None)


def test_dead_is_recorded_with_the_last_error(store: AlertStore) -> None:
    ev = event()
    store.ingest(ev)
    with serving(["500", "502", "503"]) as rx, \
            sender(rx, recorder=StoreRecorder(store), max_attempts=3) as s:
        outcome = s.deliver(ev)
    assert outcome is not None and outcome.status == "dead"
    (row,) = store.deliveries(status="dead")
    assert (row.attempts, row.last_error, row.next_attempt_at) == (3, "HTTP 503", None)


def _left_pending(store: AlertStore, rx: Receiver, revision: int, attempts: int) -> int:
    """What a process killed between two attempts leaves behind."""
    row = store.add_delivery(event()["alert_id"], revision, "vip", rx.url)
    store.update_delivery(row.id, status="pending", attempts=attempts,
                          next_attempt_at=time.time() - 1, last_error="HTTP 500")
    return row.id


def test_resume_finishes_what_a_stopped_process_left_pending(store: AlertStore) -> None:
    ev = event(revision=2)
    store.ingest(ev)
    with serving(["500", "200"]) as rx:
        _left_pending(store, rx, revision=2, attempts=2)
        _left_pending(store, rx, revision=1, attempts=1)  # an older revision, now superseded
        with sender(rx, recorder=StoreRecorder(store), max_attempts=5) as s:
            outcomes = resume_due(s, store)
        assert len(rx.requests) == 2 and {r["key"] for r in rx.requests} == {f"{ev['alert_id']}:2"}
    by_rev = {o.revision: o for o in outcomes}
    assert (by_rev[2].status, by_rev[2].attempts) == ("delivered", 4)  # 2 before, 2 now
    assert by_rev[1].status == "dead" and by_rev[1].last_error == "superseded by revision 2"
    assert store.due_deliveries() == []
    assert {(r.revision, r.status) for r in store.deliveries()} == {(1, "dead"), (2, "delivered")}


def test_resume_spends_only_the_attempts_left(store: AlertStore) -> None:
    ev = event()
    store.ingest(ev)
    with serving(["500"] * 10) as rx:
        _left_pending(store, rx, revision=0, attempts=3)
        with sender(rx, recorder=StoreRecorder(store), max_attempts=4) as s:
            (outcome,) = resume_due(s, store)
        assert len(rx.requests) == 1
    assert (outcome.status, outcome.attempts, outcome.last_error) == ("dead", 4, "HTTP 500")


def test_resume_refuses_a_sender_recording_elsewhere(store: AlertStore) -> None:
    with serving([]) as rx, sender(rx, recorder=MemoryRecorder()) as s, \
            pytest.raises(ValueError, match="records into this store"):
        resume_due(s, store)


def test_a_route_removed_from_the_config_is_dead_on_resume(store: AlertStore) -> None:
    ev = event(watchlist="gone")
    store.ingest(ev)
    with serving([]) as rx:
        row = store.add_delivery(ev["alert_id"], 0, "gone", rx.url)
        with sender(rx, recorder=StoreRecorder(store)) as s:
            (outcome,) = resume_due(s, store)
        assert rx.requests == []
    assert outcome.id == row.id and outcome.status == "dead"
    assert outcome.last_error == "route gone is no longer configured"
