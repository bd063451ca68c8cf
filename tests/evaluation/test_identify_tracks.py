"""`eval identify` with pseudo-tracks, calibration on half the strangers, normalisation,
the on-disk photo cache and rates by gender, on small subsets of ../shared/data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.cli.main import main
from facescreen.evaluation import datasets as ds
from facescreen.evaluation import runner
from facescreen.evaluation.photos import ImageFaces, PhotoCache, pipeline_key

from tests.conftest import REPO

LIMIT = 12


@pytest.fixture(scope="module")
def celeba(shared_data: Path) -> Path:
    return shared_data / "celeba-dev"


@pytest.fixture(scope="module")
def photos(celeba: Path, analyzer: FaceAnalyzer,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, ImageFaces], PhotoCache]:
    """The subset analysed once, through an on-disk cache in a temporary folder."""
    cache: dict[str, ImageFaces] = {}
    disk = PhotoCache(tmp_path_factory.mktemp("photo-cache"),
                      pipeline_key(analyzer.config, REPO, "pipeline"))
    runner.run_identify(analyzer, celeba, limit=LIMIT, cache=cache, photo_cache=disk,
                        progress=False)
    return cache, disk


def _split(root: Path, seed: int) -> tuple[dict[str, list[Path]], list[str], list[str]]:
    """The protocol's split, restated: sorted ids, the first LIMIT, shuffled with the seed."""
    subjects = ds.read_subject_folders(root)
    ids = sorted(subjects)[:LIMIT]
    order = np.random.default_rng(seed).permutation(len(ids))
    return subjects, [ids[i] for i in order[:len(ids) // 2]], [ids[i] for i in order[len(ids) // 2:]]


def test_tracks_are_bounded_combinations_and_calibration_is_held_apart(
        celeba: Path, analyzer: FaceAnalyzer,
        photos: tuple[dict[str, ImageFaces], PhotoCache]) -> None:
    cache, _ = photos
    r = runner.run_identify(analyzer, celeba, limit=LIMIT, track_k=3, max_tracks=40,
                            calibrate_half=True, target_fpir=0.05, cache=cache, progress=False)
    subjects, _, strangers = _split(celeba, 0)
    assert r["searches"]["nonmated"] == sum(min(math.comb(len(subjects[s]), 3), 40)
                                            for s in strangers)
    assert r["track"]["k"] == 3 and r["subjects"]["strangers"] == len(strangers)
    c = r["calibration"]
    assert {"fpir_target", "threshold", "fpir_measured", "fpir_ci", "fnir"} <= set(c)
    assert c["fpir_target"] == 0.05 and c["min_decisions"] == 200
    assert c["calibration_persons"] + c["measured_persons"] == len(strangers)
    assert c["calibration_decisions"] + c["measured_decisions"] == r["searches"]["nonmated"]
    assert c["fpir_measured"] == c["measured_alerts"] / c["measured_decisions"]
    assert c["fpir_ci"][0] <= c["fpir_measured"] <= c["fpir_ci"][1]
    assert c["fpir_ci_persons"][0] <= c["fpir_measured"] <= c["fpir_ci_persons"][1]
    assert c["fpir_on_calibration_half"] <= 0.05
    assert 0.0 <= c["fnir"] < 0.5  # ~0.17 on this subset
    # The same split and halves as single photos: only the decisions differ.
    single = runner.run_identify(analyzer, celeba, limit=LIMIT, calibrate_half=True,
                                 target_fpir=0.05, cache=cache, progress=False)
    assert single["searches"]["nonmated"] == sum(len(subjects[s]) for s in strangers)
    assert single["calibration"]["calibration_persons"] == c["calibration_persons"]


def test_photo_cache_on_disk_serves_a_second_process(
        celeba: Path, analyzer: FaceAnalyzer,
        photos: tuple[dict[str, ImageFaces], PhotoCache]) -> None:
    cache, disk = photos
    assert disk.path.stat().st_mode & 0o077 == 0  # embeddings: owner only
    fresh: dict[str, ImageFaces] = {}
    again = PhotoCache(disk.path.parent, pipeline_key(analyzer.config, REPO, "pipeline"))
    detections = analyzer.clock.calls["detect"]
    r = runner.run_identify(analyzer, celeba, limit=LIMIT, cache=fresh, photo_cache=again,
                            progress=False)
    assert analyzer.clock.calls["detect"] == detections  # nothing analysed again
    assert fresh.keys() == cache.keys() and len(fresh) == r["photos"]["total"]
    for key, faces in cache.items():
        got = fresh[key]
        assert (got.readable, got.detected, got.probe_quality) == (
            faces.readable, faces.detected, faces.probe_quality)
        assert (got.probe is None) == (faces.probe is None)
        if faces.probe is not None and got.probe is not None:
            assert np.array_equal(got.probe, faces.probe)
    # Another configuration is another key: its results are never served from this file.
    assert pipeline_key(analyzer.config, REPO, "aligned") != pipeline_key(
        analyzer.config, REPO, "pipeline")


def test_normalisation_is_measured_on_the_held_apart_half_only(
        celeba: Path, analyzer: FaceAnalyzer,
        photos: tuple[dict[str, ImageFaces], PhotoCache]) -> None:
    cache, _ = photos
    with pytest.raises(ValueError, match="calibrate-half"):
        runner.run_identify(analyzer, celeba, limit=LIMIT, norm="znorm", cache=cache,
                            progress=False)
    r = runner.run_identify(analyzer, celeba, limit=LIMIT, norm="znorm", calibrate_half=True,
                            target_fpir=0.05, cache=cache, progress=False)
    assert r["searches"]["nonmated_measured_on"] == "held-apart half of the strangers"
    assert r["searches"]["nonmated_measured"] == r["calibration"]["measured_decisions"]
    assert r["score_units"].startswith("z") and r["calibration"]["threshold"] > 1.0


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main(["eval", *args, "--json", "--no-progress", "--threads", "2", "--no-cache"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_lfw_identify_by_gender_and_seeds(shared_data: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    r = run_json(capsys, "identify", str(shared_data / "lfw-aligned112"), "--min-photos", "2",
                 "--limit", "120", "--calibrate-half", "--target-fpir", "0.1", "--seeds", "0-1")
    assert r["task"] == "identify-seeds" and r["summary"]["seeds"] == [0, 1]
    run = r["runs"][0]
    assert run["photos"]["mode"].startswith("aligned crops")
    g = run["by_gender"]
    assert g["threshold"] == run["calibration"]["threshold"]
    assert g["female"]["nonmated_decisions"] > 0 and g["male"]["nonmated_decisions"] > 0
    assert sum(g[k]["nonmated_decisions"] for k in ("female", "male", "unknown")) == \
        run["calibration"]["measured_decisions"]
    assert sum(g[k]["mated_decisions"] for k in ("female", "male", "unknown")) == \
        run["searches"]["mated"]
    assert set(r["summary"]["by_gender_pooled"]) == {"female", "male"}
    assert run["rank1"]["all_mated"] > 0.9  # LFW crops are easy for the embedder


def test_celeba_has_no_gender_labels(celeba: Path, analyzer: FaceAnalyzer,
                                     photos: tuple[dict[str, ImageFaces], PhotoCache]) -> None:
    r = runner.run_identify(analyzer, celeba, limit=LIMIT, cache=photos[0], progress=False)
    assert r["by_gender"] is None and "none found" in r["gender_labels"]


def test_norm_without_calibration_half_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "identify", str(tmp_path), "--norm", "znorm"])
    err = capsys.readouterr().err
    assert code == 2 and "--calibrate-half" in err and "Traceback" not in err
