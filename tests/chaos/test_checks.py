"""The chaos verdicts on made-up runs: each kind of loss or duplicate is caught."""

from __future__ import annotations

from typing import Any

from tests.chaos.checks import account_alerts, account_frames, recovery_s
from tests.chaos.stack import Outage


def _event(camera: str, seq: int, analyzed_at: float) -> dict[str, Any]:
    return {"camera": camera, "seq": seq, "analyzed_at": analyzed_at}


def test_frames_lost_unexpected_and_redelivered_across_a_kill() -> None:
    events = [_event("a", 0, 1.0), _event("a", 1, 2.0), _event("a", 1, 9.0),
              _event("a", 3, 9.5), _event("b", 0, 3.0), _event("b", 0, 3.5)]
    account = account_frames([("a", 0), ("a", 1), ("a", 2), ("b", 0)], events)
    assert account.lost == [("a", 2)] and account.unexpected == [("a", 3)]
    assert sorted(account.redelivered) == [("a", 1), ("b", 0)]
    assert account.redelivered_across(5.0) == 1  # b#0 was done twice before the kill


def _alert(alert_id: str, revision: int, state: str, **extra: Any) -> dict[str, Any]:
    doc = {"alert_id": alert_id, "revision": revision, "state": state, "subject_id": "s",
           "watchlist": "w", "frame_index": revision, "score": 0.97, "source": "gate-a",
           "emitted_at": 100.0 + revision}
    return {**doc, **extra}


def _expected(*docs: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    keys = ("state", "subject_id", "watchlist", "frame_index", "score", "source")
    return {(d["alert_id"], d["revision"]): {k: d[k] for k in keys} for d in docs}


def test_alerts_as_the_reference_says_with_an_identical_republication() -> None:
    reference = [_alert("A", 1, "open"), _alert("A", 2, "closed")]
    again = {**reference[0], "emitted_at": 555.0}  # redone after a kill: same content
    account = account_alerts(_expected(*reference), [*reference, again])
    assert (account.lost, account.extra_ids, account.extra_revisions, account.conflicting,
            account.differing) == ([], [], [], [], [])
    assert account.reemitted == 1 and account.duplicates == 0


def test_a_lost_revision_a_second_id_and_conflicting_content_are_caught() -> None:
    reference = [_alert("A", 1, "open"), _alert("A", 2, "closed")]
    published = [reference[0],
                 _alert("B", 1, "open"),  # the same passage opened again: state lost
                 _alert("A", 1, "open", frame_index=7),  # one revision, two contents
                 _alert("A", 3, "update")]  # a revision the reference does not have
    account = account_alerts(_expected(*reference), published)
    assert account.lost == [("A", 2)]
    assert account.extra_ids == ["B"] and account.extra_revisions == [("A", 3)]
    assert account.conflicting == [("A", 1)] and account.duplicates == 3


def test_alert_content_unlike_the_reference_is_caught() -> None:
    reference = [_alert("A", 1, "open")]
    account = account_alerts(_expected(*reference), [_alert("A", 1, "open", score=0.9)])
    assert [key for key, _, _ in account.differing] == [("A", 1)]


def test_recovery_is_the_first_output_after_the_restart() -> None:
    outage = Outage("triton", killed_at=10.0, restarted_at=11.0, ready_at=17.0)
    faces = [9.0, 10.05, 18.5, 19.0]  # 10.05: the dead server's last answer, acknowledged late
    assert recovery_s(outage, faces, []) == 8.5
    assert recovery_s(Outage("valkey", 10.0, 11.0, 11.1), faces, [12.5]) == 2.5
    assert recovery_s(Outage("matcher", 10.0, 11.0, 20.0), faces, [9.0]) is None
    # a dependent that first failed at 18.7: only output after that counts as recovered
    assert recovery_s(outage, faces, [], after=18.7) == 9.0
