"""The alert life cycle: evidence before a decision, one id per (track, subject), updates,
closing, cooldowns, reviewer feedback and state that survives a restart."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from facescreen.alerts.events import alert_to_event, validator
from facescreen.config.pipeline import load_pipeline_config
from facescreen.core.alerting import Alert
from facescreen.core.alignment import l2_normalise
from facescreen.core.feedback import Feedback
from facescreen.core.matching import GalleryIndex
from facescreen.core.screening import ScreeningPolicy, SourceScreener
from facescreen.core.types import Detection, Face, Quality

DIM = 16
RNG = np.random.default_rng(7)
BASIS = np.linalg.qr(RNG.normal(size=(DIM, DIM)))[0].astype(np.float32)  # orthonormal rows


def scored(score: float, axis: int = 0, other: int = 5) -> np.ndarray:
    """A unit vector whose cosine to BASIS[axis] is exactly `score`."""
    v = score * BASIS[axis] + math.sqrt(1 - score * score) * BASIS[other]
    return l2_normalise(v.astype(np.float32))


def face(vec: np.ndarray | None, x: float = 0.0, q: float = 0.8) -> Face:
    box = (x, 0.0, x + 100.0, 100.0)
    landmarks = np.zeros((5, 2), np.float32)
    return Face(Detection(box, landmarks, 0.95), Quality(q, {}), vec)


def gallery(*subjects: str) -> GalleryIndex:
    return GalleryIndex(subjects, ("vip",) * len(subjects), BASIS[:len(subjects)].copy())


def run(screener: SourceScreener, vectors: Sequence[np.ndarray | None], start: int = 0,
        t0: float | None = None, x: float = 0.0, fps: float = 5.0) -> list[Alert]:
    """Screen one face a frame (None: a face that failed quality) from frame `start`, at
    time `t0` (default start / fps)."""
    t0 = start / fps if t0 is None else t0
    alerts: list[Alert] = []
    for n, vec in enumerate(vectors):
        alerts += screener.screen([face(vec, x)], start + n, t0 + n / fps)[1]
    return alerts


def test_a_track_waits_for_enough_quality_faces_before_alerting() -> None:
    screener = SourceScreener("cam", gallery("alice").search, {"vip": 0.9})
    just_above = scored(0.91)
    assert run(screener, [just_above, None, just_above]) == []  # 2 quality faces, 1 without
    opened = run(screener, [just_above], start=3)
    assert [(a.state, a.revision) for a in opened] == [("open", 0)]
    assert opened[0].evidence.faces_used == 3 and opened[0].evidence.frames_seen == 4


def test_a_score_far_above_the_threshold_alerts_on_the_first_face() -> None:
    screener = SourceScreener("cam", gallery("alice").search, {"vip": 0.9})
    (alert,) = run(screener, [scored(0.95)])
    assert alert.state == "open" and alert.evidence.faces_used == 1
    assert alert.evidence.time_to_decision_s == 0.0


def test_better_evidence_updates_the_same_alert_and_the_track_end_closes_it() -> None:
    policy = ScreeningPolicy(min_faces=2, update_min_interval_s=0.0)
    screener = SourceScreener("cam", gallery("alice", "bob").search, {"vip": 0.9}, policy)
    alerts = run(screener, [scored(0.91), scored(0.92), scored(0.99), scored(0.99)])
    # the voted score climbs with each 0.99 face: an update per gain of at least 0.01
    assert [a.state for a in alerts] == ["open"] + ["update"] * (len(alerts) - 1)
    assert len(alerts) >= 2 and len({a.alert_id for a in alerts}) == 1
    assert [a.revision for a in alerts] == list(range(len(alerts)))
    update = alerts[-1]
    assert update.score > alerts[0].score + 0.01
    ev = update.evidence
    assert ev.score_min <= ev.score_mean <= ev.score_max == pytest.approx(update.score)
    assert ev.margin is not None and ev.margin > 0.5  # bob is far behind
    closed = screener.finish()
    assert [(a.state, a.alert_id, a.revision) for a in closed] == [
        ("closed", update.alert_id, update.revision + 1)]


def test_updates_need_a_real_gain() -> None:
    policy = ScreeningPolicy(min_faces=1, update_min_interval_s=0.0)
    screener = SourceScreener("cam", gallery("alice").search, {"vip": 0.9}, policy)
    steady = run(screener, [scored(0.935)] * 10)
    assert [a.state for a in steady] == ["open"]


def test_cooldown_then_a_new_passage_alerts_with_a_new_id() -> None:
    policy = ScreeningPolicy(cooldown_s=10.0, min_faces=1)
    screener = SourceScreener("cam", gallery("alice").search, {"vip": 0.9}, policy)
    first = run(screener, [scored(0.95)] * 3)
    assert [a.state for a in first] == ["open"]
    # the person leaves long enough for the track to end, then is back within the cooldown
    gap = policy.tracker.relink_s + policy.tracker.max_lost_s + 1
    ended = screener.screen([], 100, 0.4 + gap)[1]
    assert [a.state for a in ended] == ["closed"]
    again = run(screener, [scored(0.95)] * 3, start=200, t0=0.5 + gap)
    assert not any(a.state == "open" for a in again)
    later = screener.screen([face(scored(0.95))], 500, 1000.0)[1]
    assert [a.state for a in later] == ["open"] and later[0].alert_id != first[0].alert_id


def test_alert_ids_are_stable_across_replays() -> None:
    ids = []
    for _ in range(2):
        screener = SourceScreener("cam", gallery("alice").search, {"vip": 0.9})
        ids.append([a.alert_id for a in run(screener, [scored(0.93)] * 5)])
    assert ids[0] == ids[1] and len(ids[0]) == 1


def test_low_similarity_never_alerts() -> None:
    screener = SourceScreener("cam", gallery("alice").search, {"vip": 0.9})
    assert run(screener, [scored(0.5)] * 20) == []


def test_rejected_alert_stops_its_track_and_suppresses_look_alikes() -> None:
    policy = ScreeningPolicy(min_faces=1, cooldown_s=0.0, update_min_interval_s=0.0)
    screener = SourceScreener("cam", gallery("alice").search, {"vip": 0.9}, policy)
    (opened,) = run(screener, [scored(0.92)])
    verdict = Feedback("f1", opened.alert_id, "cam", "reject", "reviewer", "not her", 0.0)
    assert screener.apply_feedback(verdict)
    assert run(screener, [scored(0.99)] * 3, start=1) == []  # no update, no new alert
    assert screener.finish() == []  # the rejected alert is not closed again
    # the same stranger on a new track within the suppression window: still no alert
    assert run(screener, [scored(0.95)] * 3, start=100) == []
    # someone else who matches alice (a different face) still alerts
    other = run(screener, [scored(0.95, other=9)] * 3, start=200, x=400.0)
    assert [a.state for a in other] == ["open"]
    unknown = Feedback("f2", "00000000-0000-0000-0000-000000000000", "cam", "reject", "r", "",
                       0.0)
    assert not screener.apply_feedback(unknown)


def test_state_round_trip_continues_exactly_as_without_a_restart() -> None:
    policy = ScreeningPolicy(min_faces=2, update_min_interval_s=0.0)
    search, thresholds = gallery("alice", "bob").search, {"vip": 0.9}
    frames = [scored(0.91), scored(0.93), scored(0.97), scored(0.99), scored(0.99)]
    whole = SourceScreener("cam", search, thresholds, policy)
    expected = run(whole, frames) + whole.finish()
    first = SourceScreener("cam", search, thresholds, policy)
    got = run(first, frames[:2])
    state = json.loads(json.dumps(first.to_state()))  # what a changelog carries
    resumed = SourceScreener.from_state(state, search, thresholds, policy)
    got += run(resumed, frames[2:], start=2) + resumed.finish()
    assert [(a.alert_id, a.state, a.revision, a.score) for a in got] == [
        (a.alert_id, a.state, a.revision, a.score) for a in expected]
    with pytest.raises(ValueError):
        SourceScreener.from_state({**state, "version": 99}, search, thresholds, policy)


def test_alert_events_follow_schema_version_2_and_refuse_nan() -> None:
    screener = SourceScreener("cam", gallery("alice").search, {"vip": 0.9})
    alerts = run(screener, [scored(0.96)] * 4) + screener.finish()
    for alert in alerts:
        validator("alert").validate(alert_to_event(alert, "centerface", "dlib"))
    broken = Alert(**{**alerts[0].__dict__, "timestamp": float("nan")})
    with pytest.raises(ValueError, match="not finite"):
        alert_to_event(broken, "centerface", "dlib")


def test_decision_and_tracking_come_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text("[decision]\nmin_faces = 5\ncooldown_s = 3\n[tracking]\nmin_hits = 2\n"
                    "[cameras.gate.decision]\nmin_faces = 1\n"
                    "[cameras.gate.tracking]\nmax_lost_s = 0.5\n")
    config = load_pipeline_config(path)
    policy = config.screening_policy()
    assert (policy.min_faces, policy.cooldown_s, policy.tracker.min_hits) == (5, 3.0, 2)
    gate = config.screening_policy("gate")  # the camera's table over the pipeline's
    assert (gate.min_faces, gate.cooldown_s, gate.tracker.min_hits,
            gate.tracker.max_lost_s) == (1, 3.0, 2, 0.5)
    assert config.screening_policy("other") == policy
    for bad, message in [("[decision]\nmin_face = 5\n", "unknown key"),
                         ("[decision]\nmin_faces = 0\n", "min_faces"),
                         ("[decision]\ncooldown_s = \"long\"\n", "cooldown_s"),
                         ("[cameras.gate.screening]\nmin_brightness = 0\n", "only")]:
        path.write_text(bad)
        with pytest.raises(ValueError, match=message):
            load_pipeline_config(path)
