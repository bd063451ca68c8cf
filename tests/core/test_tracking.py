"""Track life cycle: association stages, expiry in frames and seconds, re-link, state round trip."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import vote_template
from facescreen.core.tracking import FaceTracker, Track, TrackerPolicy, TrackState
from facescreen.core.types import Detection, Face, Quality

DIM = 64  # random unit vectors of 64 dims are nearly orthogonal (cosine ~ +-0.13)


def _unit(seed: int) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=DIM).astype(np.float32))


def _near(identity: np.ndarray, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """Another photo of the same person: cosine about 0.93 to `identity`."""
    return l2_normalise((identity + rng.normal(scale=noise, size=DIM)).astype(np.float32))


def _box(x: float, y: float = 50.0, size: float = 100.0) -> tuple[float, float, float, float]:
    return (x, y, x + size, y + size)


def _face(box: tuple[float, float, float, float], embedding: np.ndarray | None = None,
          score: float = 0.8) -> Face:
    """A quality face when it has an embedding, else one that failed quality."""
    reasons = () if embedding is not None else ("sharpness below bar",)
    detection = Detection(box=box, landmarks=np.zeros((5, 2), np.float32), score=0.9)
    return Face(detection, Quality(score, {}, reasons), embedding)


def _state(track: Track) -> TrackState:
    """The state read afresh (a plain attribute read would let mypy narrow it for good)."""
    return track.state


def _crossing_ids(policy: TrackerPolicy) -> tuple[set[int], set[int]]:
    rng = np.random.default_rng(0)
    a, b = _unit(1), _unit(2)
    tracker = FaceTracker(policy)
    ids_a, ids_b = set(), set()
    for i in range(10):  # a walks right, b left; at i=5 each stands exactly where the other was
        ta, tb = tracker.update([_face(_box(30 * i), _near(a, rng)),
                                 _face(_box(270 - 30 * i), _near(b, rng))], i / 10, i)
        ids_a.add(ta.track_id)
        ids_b.add(tb.track_id)
    return ids_a, ids_b


def test_crossing_faces_keep_their_ids_by_appearance() -> None:
    ids_a, ids_b = _crossing_ids(TrackerPolicy())
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    # Overlap alone swaps them where they cross: the scene really needs appearance.
    blind_a, _ = _crossing_ids(TrackerPolicy(appearance_gate=-1.0, appearance_weight=0.0))
    assert len(blind_a) == 2


def test_shot_cut_same_box_other_person_starts_a_new_track() -> None:
    rng = np.random.default_rng(1)
    a, b = _unit(3), _unit(4)
    tracker = FaceTracker()
    first = [tracker.update([_face(_box(0), _near(a, rng))], i / 25, i)[0] for i in range(5)]
    after_cut = tracker.update([_face(_box(0), _near(b, rng))], 5 / 25, 5)[0]
    assert {t.track_id for t in first} == {1} and after_cut.track_id == 2
    assert first[0].quality_hits == 5 and after_cut.quality_hits == 1
    # Cutting back to the first person finds their track again.
    back = tracker.update([_face(_box(0), _near(a, rng))], 6 / 25, 6)[0]
    assert back.track_id == 1


def _seen_then_hidden(tracker: FaceTracker, hidden_until: int, fps: float = 10.0) -> Track:
    rng = np.random.default_rng(2)
    a = _unit(5)
    for i in range(5):
        track = tracker.update([_face(_box(0), _near(a, rng))], i / fps, i)[0]
    for i in range(5, hidden_until):
        assert tracker.update([], i / fps, i) == []
    return track


def test_occluded_person_is_relinked_elsewhere_within_relink_s() -> None:
    tracker = FaceTracker()
    track = _seen_then_hidden(tracker, hidden_until=40)  # 3.6 s unseen: past both expiry bounds
    assert _state(track) is TrackState.LOST and track.confirmed
    again = tracker.update([_face(_box(400, 300), _near(_unit(5), np.random.default_rng(9)))],
                           4.0, 40)[0]
    assert again is track and _state(track) is TrackState.CONFIRMED
    assert (track.hits, track.last_frame, track.last_seen) == (6, 40, 4.0)
    assert tracker.pop_ended() == []


def test_after_relink_s_the_person_gets_a_new_track_and_the_old_one_ends_once() -> None:
    tracker = FaceTracker()
    old = _seen_then_hidden(tracker, hidden_until=60)  # last seen at 0.4 s, now 5.9 s
    assert tracker.pop_ended() == [] and _state(old) is TrackState.LOST
    for i in range(60, 70):
        tracker.update([], i / 10, i)
    assert tracker.pop_ended() == [old] and _state(old) is TrackState.ENDED
    assert tracker.pop_ended() == [] and tracker.tracks == []
    new = tracker.update([_face(_box(0), _near(_unit(5), np.random.default_rng(9)))], 7.0, 70)[0]
    assert new.track_id == 2 and not new.confirmed


def test_low_fps_walker_keeps_one_track_though_boxes_never_overlap() -> None:
    rng = np.random.default_rng(3)
    a = _unit(6)
    tracker = FaceTracker()  # --fps 1 on a 25 fps source: frame_index jumps by 25
    tracks = [tracker.update([_face(_box(150 * i), _near(a, rng))], float(i), 25 * i)[0]
              for i in range(8)]
    assert {t.track_id for t in tracks} == {1}
    assert (tracks[0].first_frame, tracks[0].last_frame, tracks[0].quality_hits) == (0, 175, 8)


def test_dropped_frames_do_not_count_as_missed() -> None:
    tracker = FaceTracker()
    kept = tracker.update([_face(_box(0), _unit(7))], 0.0, 0)[0]
    # The decoder dropped frames 1..74 (3 s, past max_lost_s); no analysed frame was missed,
    # so the track is still live and a face without embedding joins it by overlap.
    joined = tracker.update([_face(_box(10))], 75 / 25, 75)[0]
    assert joined is kept and (kept.hits, kept.quality_hits, kept.last_frame) == (2, 1, 75)
    # But relink_s bounds every track: after a 7 s stall the same face starts a new track.
    later = tracker.update([_face(_box(10), _unit(7))], 10.0, 250)[0]
    assert later.track_id == 2 and tracker.pop_ended() == [kept]


def test_expiry_either_bound_suffices() -> None:
    # 1 fps: 5 s unseen is past max_lost_s but only 4 analysed frames, so overlap still joins.
    slow = FaceTracker()
    track = slow.update([_face(_box(0), _unit(8))], 0.0, 0)[0]
    for i in range(1, 5):
        slow.update([], float(i), i)
    assert slow.update([_face(_box(5))], 5.0, 5)[0] is track  # no embedding: overlap only
    # relink_s caps both bounds: 8 s later (7 frames) the track has ended.
    for i in range(6, 12):
        slow.update([], float(i), i)
    assert slow.pop_ended() == [] and _state(track) is TrackState.TENTATIVE
    slow.update([], 12.0, 12)
    assert slow.pop_ended() == [track] and _state(track) is TrackState.ENDED
    assert slow.update([_face(_box(5))], 13.0, 13)[0].track_id == 2
    # 25 fps: 49 frames unseen is past max_lost_frames but only 2.0 s, so overlap still joins.
    fast = FaceTracker()
    track = fast.update([_face(_box(0), _unit(8))], 0.0, 0)[0]
    for i in range(1, 50):
        fast.update([], i / 25, i)
    assert fast.update([_face(_box(5))], 2.0, 50)[0] is track
    # Past both (51 frames, 2.08 s): LOST, and a face without embedding cannot re-link it.
    for i in range(51, 102):
        fast.update([], i / 25, i)
    assert _state(track) is TrackState.LOST
    other = fast.update([_face(_box(5))], 102 / 25, 102)[0]
    assert other.track_id == 2 and track.hits == 2


def test_min_hits_counts_only_faces_that_passed_quality() -> None:
    rng = np.random.default_rng(4)
    a = _unit(9)
    tracker = FaceTracker(TrackerPolicy(min_hits=3))
    embeddings = [_near(a, rng), _near(a, rng), None, None, _near(a, rng)]
    states = []
    for i, emb in enumerate(embeddings):
        track = tracker.update([_face(_box(2 * i), emb)], i / 25, i)[0]
        states.append(track.state)
    assert states == [TrackState.TENTATIVE] * 4 + [TrackState.CONFIRMED]
    assert (track.hits, track.quality_hits, track.confirmed_frame) == (5, 3, 4)


def test_faces_without_embedding_keep_a_track_alive_without_voting() -> None:
    tracker = FaceTracker()
    rng = np.random.default_rng(5)
    track = tracker.update([_face(_box(0), _unit(10), score=0.7)], 0.0, 0)[0]
    identity = track.identity
    for i in range(1, 41):  # 4 s of blurred faces: past both expiry bounds, yet never lost
        assert tracker.update([_face(_box(i), score=0.99)], i / 10, i)[0] is track
        assert _state(track) is TrackState.TENTATIVE
    assert (track.hits, track.quality_hits, track.best_quality) == (41, 1, 0.7)
    assert track.identity is not None and identity is not None
    assert np.array_equal(track.identity, identity)
    # Too little overlap for a face nothing vouches for (IoU 0.33 < low_min_iou): a new track.
    stray = tracker.update([_face(_box(90))], 4.1, 41)[0]
    assert stray.track_id == 2 and stray.identity is None
    # The blurred faces were what kept it: without them the track is LOST by now.
    bare = FaceTracker()
    unseen = bare.update([_face(_box(0), _unit(10))], 0.0, 0)[0]
    for i in range(1, 41):
        bare.update([], i / 10, i)
    assert _state(unseen) is TrackState.LOST
    # A track that never had an embedding ends as soon as it stops being live.
    for i in range(42, 70):
        tracker.update([_face(_box(0), _near(_unit(10), rng))], i / 10, i)
    assert stray in tracker.pop_ended()


def test_identity_is_the_vote_template_of_its_quality_faces() -> None:
    rng = np.random.default_rng(6)
    a = _unit(11)
    tracker = FaceTracker()
    embeddings, scores = [], []
    for i in range(30):
        score = float(rng.uniform(0.0, 1.0)) if i % 7 else 1e-5  # some below the 1e-3 floor
        emb = None if i % 4 == 3 else _near(a, rng)
        track = tracker.update([_face(_box(i), emb, score)], i / 25, i)[0]
        if emb is not None:
            embeddings.append(emb)
            scores.append(score)
    expected = vote_template(np.stack(embeddings), np.asarray(scores, np.float32))
    assert track.track_id == 1 and track.identity is not None
    np.testing.assert_allclose(track.identity, expected, atol=1e-6)
    assert track.best_quality == max(scores) and track.quality_hits == len(embeddings)


def _scene(seed: int) -> Iterator[tuple[list[Face], float, int]]:
    """Three people at 5 fps who come, cross, vanish and come back, plus blurred faces."""
    rng = np.random.default_rng(seed)
    people = [_unit(20), _unit(21), _unit(22)]
    for i in range(120):
        faces = []
        if i < 30 or 45 <= i < 60:  # person 0 hides from 6 s to 9 s, then leaves at 12 s
            faces.append(_face(_box(5 * (i % 40)), _near(people[0], rng)))
        if 10 <= i < 100:
            emb = None if i % 5 == 0 else _near(people[1], rng)
            faces.append(_face(_box(300 - 3 * (i - 10), 60), emb, float(rng.uniform(0.2, 0.9))))
        if i >= 70:
            faces.append(_face(_box(500, 300), _near(people[2], rng)))
        yield faces, i / 5, 2 * i


def _drive(tracker: FaceTracker, frames: list[tuple[list[Face], float, int]]) -> list[object]:
    log: list[object] = []
    for faces, t, index in frames:
        log.append([tr.track_id for tr in tracker.update(faces, t, index)])
        log.append([(tr.track_id, tr.hits) for tr in tracker.pop_ended()])
    log.append([(tr.track_id, tr.hits, tr.state.value) for tr in tracker.finish()])
    return log


@pytest.mark.parametrize(("split", "kind"), [(42, "tracks"), (92, "ended")])
def test_state_round_trip_continues_identically_through_json(split: int, kind: str) -> None:
    def frames() -> list[tuple[list[Face], float, int]]:
        return list(_scene(7))

    straight = FaceTracker()
    for faces, t, index in frames()[:split]:
        straight.update(faces, t, index)
    state = straight.to_state()
    # At 42 the snapshot holds a LOST track (person 0 hidden); at 92 an ended one not yet popped.
    assert any(d["state"] == {"tracks": "lost", "ended": "ended"}[kind] for d in state[kind])
    text = json.dumps(state)
    assert json.loads(text) == state
    restored = FaceTracker.from_state(json.loads(text))
    assert restored.to_state() == state
    assert _drive(restored, frames()[split:]) == _drive(straight, frames()[split:])


def test_scene_is_one_track_per_passage() -> None:
    log = _drive(FaceTracker(), list(_scene(7)))
    assert [(1, 45)] in log  # person 0 ended during the stream, after re-link past a 3 s gap
    assert log[-1] == [(2, 90, "ended"), (3, 50, "ended")]


def test_pop_ended_and_finish_report_each_track_exactly_once() -> None:
    tracker = FaceTracker()
    reported: list[int] = []
    for faces, t, index in _scene(8):
        tracker.update(faces, t, index)
        if index % 6 == 0 and index < 150:  # person 0 ends after the last pop
            reported += [tr.track_id for tr in tracker.pop_ended()]
    # Tracks that ended after the last pop come back from finish, with every live one.
    ended = tracker.finish()
    assert [tr.track_id for tr in ended] == [1, 2, 3]
    assert all(tr.state is TrackState.ENDED for tr in ended)
    reported += [tr.track_id for tr in ended]
    assert sorted(reported) == list(range(1, tracker.to_state()["next_id"]))
    assert tracker.finish() == [] and tracker.pop_ended() == []


def test_reset_forgets_everything() -> None:
    policy = TrackerPolicy(min_hits=2)
    tracker = FaceTracker(policy)
    for faces, t, index in list(_scene(9))[:40]:
        tracker.update(faces, t, index)
    tracker.reset()
    assert tracker.to_state() == FaceTracker(policy).to_state()
    assert tracker.update([_face(_box(0), _unit(30))], 100.0, 0)[0].track_id == 1


def test_state_of_another_version_is_refused_and_bad_policies_too() -> None:
    with pytest.raises(ValueError, match="version"):
        FaceTracker.from_state({"version": 99})
    with pytest.raises(ValueError, match="min_hits"):
        TrackerPolicy(min_hits=0)
    with pytest.raises(ValueError, match="relink_s"):
        TrackerPolicy(max_lost_s=10.0, relink_s=6.0)
