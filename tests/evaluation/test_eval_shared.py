"""`facescreen eval` end to end on small subsets of the real evaluation data in ../shared/data.

The ranges asserted are far below what the pipeline measures on the full sets, but far above
what a broken stage (wrong colour order, misaligned chips, a swapped landmark) would give.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.cli.main import main
from facescreen.evaluation import runner

from tests.infra import missing

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data() -> Path:
    if not SHARED.is_dir():
        missing(f"evaluation data not found at {SHARED} (see shared/data/README.md)")
    return SHARED


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main(["eval", *args, "--json", "--no-progress", "--threads", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.shared_data
def test_verify_lfw_subset(data: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "roc.png"
    # 1,000 impostor pairs make FAR 1e-3 measurable (one may pass). Here the full pipeline
    # gives ~96% TAR; feeding the embedder BGR instead of RGB drops it to ~85%, a template
    # mismatch to ~37%.
    r = run_json(capsys, "verify", str(data / "lfw-aligned112"), "--limit", "2000",
                 "--plot", str(plot))
    assert r["pairs"] == {"genuine": 1000, "impostor": 1000, "folds": 10}
    assert r["accuracy"]["mean"] > 0.97
    strict = next(p for p in r["tar_at_far"] if p["far_target"] == 0.001)
    assert strict["tar"] > 0.92 and strict["far"] <= 0.001
    assert r["eer"]["rate"] < 0.03
    assert r["genuine_score"]["mean"] > r["impostor_score"]["mean"] + 0.1
    gender = r["by_gender"]
    assert gender["female_female"]["impostor_pairs"] + gender["male_male"]["impostor_pairs"] > 100
    assert plot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.shared_data
def test_identify_celeba_subset(data: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "det.png"
    r = run_json(capsys, "identify", str(data / "celeba-dev"), "--limit", "12",
                 "--enrol", "1", "--plot", str(plot))
    s, q = r["subjects"], r["searches"]
    assert (s["total"], s["enrolled"] + len(s["failed_to_enrol"]), s["strangers"]) == (12, 6, 6)
    # Every photo is either an enrolment photo, a mated or a non-mated search.
    assert q["mated"] + q["nonmated"] + s["enrolled"] == r["photos"]["total"]
    assert q["mated_failed_to_acquire"] < 0.2 * q["mated"]
    assert r["rank1"]["acquired"] > 0.8  # ~0.89 here; ~0.72 with a wrong alignment template
    loose = next(p for p in r["fnir_at_fpir"] if p["fpir_target"] == 0.05)
    assert loose["fnir"] < 0.4 and loose["fpir"] <= 0.05  # ~0.23 here; ~0.8 misaligned
    assert 0.5 < loose["threshold"] < 1.0
    assert plot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.shared_data
def test_identify_runs_share_the_photo_cache(data: Path, analyzer: FaceAnalyzer) -> None:
    cache: dict[str, runner.ImageFaces] = {}
    one = runner.run_identify(analyzer, data / "celeba-dev", enrol_n=1, limit=6, cache=cache,
                              progress=False)
    detections = analyzer.clock.calls["detect"]
    three = runner.run_identify(analyzer, data / "celeba-dev", enrol_n=3, limit=6,
                                cache=cache, progress=False)
    assert analyzer.clock.calls["detect"] == detections  # nothing analysed twice
    assert len(cache) == one["photos"]["total"] == three["photos"]["total"]
    # Same gallery; two more photos per subject go to enrolment (fewer mated searches).
    assert one["subjects"]["enrolled"] == three["subjects"]["enrolled"] == 3
    assert three["searches"]["mated"] < one["searches"]["mated"]
    assert three["searches"]["nonmated"] == one["searches"]["nonmated"]


@pytest.mark.shared_data
def test_detect_widerface_subset(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_json(capsys, "detect", str(data / "widerface-val-dev"), "--limit", "60")
    assert r["images"]["evaluated"] == 60
    assert len(r["by_event"]) == 5  # the subset spans every event class
    large = r["by_size"][">=128"]
    assert large["gt"] >= 20 and large["recall"] > 0.8
    assert r["by_size"]["64-128"]["recall"] > 0.7
    assert r["overall"]["precision"] > 0.85
    assert r["by_size"]["<16"]["recall"] < r["by_size"]["32-64"]["recall"]
    assert r["demographics"]["box_mismatches"] == 0
    assert set(r["by_attribute"]) == {"gender", "age", "skin"}


# ---------------------------------------------- user errors (no data or models needed)


@pytest.mark.parametrize("task", ["verify", "identify", "detect"])
def test_missing_root_is_a_clear_error(task: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", task, str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize(("task", "expected"), [
    ("verify", "pairs.txt"), ("identify", "one folder of images per subject"),
    ("detect", "bbx_gt.txt")])
def test_wrong_layout_is_a_clear_error(task: str, expected: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "stray.jpg").write_bytes(b"")
    code = main(["eval", task, str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err
