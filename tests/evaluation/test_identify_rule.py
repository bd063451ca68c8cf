"""`eval identify --calibrate-half --rule point|upper` on a small celeba-dev subset: the
rule is in the JSON, the upper rule's threshold is never below the point rule's on the same
split, and its bound on the calibration half meets the target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from facescreen.cli.main import main


def _identify(root: Path, cache: Path, capsys: pytest.CaptureFixture[str],
              *extra: str) -> dict[str, Any]:
    assert main(["eval", "identify", str(root), "--limit", "12", "--track", "3",
                 "--max-tracks", "40", "--calibrate-half", "--target-fpir", "0.05",
                 "--cache-dir", str(cache), "--seeds", "0-1", "--json", "--no-progress",
                 "--threads", "2", *extra]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_rule_flag_in_eval_identify(shared_data: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = shared_data / "celeba-dev"
    point = _identify(root, tmp_path, capsys, "--rule", "point")
    upper = _identify(root, tmp_path, capsys)  # the default, as watchlist calibrate's
    assert (point["rule"], upper["rule"]) == ("point", "upper")
    assert upper["summary"]["calibration"]["rule"] == "upper"
    for p, u in zip(point["runs"], upper["runs"], strict=True):
        pc, uc = p["calibration"], u["calibration"]
        assert (pc["rule"], uc["rule"]) == ("point", "upper")
        assert uc["threshold"] >= pc["threshold"] and uc["fnir"] >= pc["fnir"]
        assert uc["fpir_measured"] <= pc["fpir_measured"]
        assert uc["fpir_upper_on_calibration_half"] <= 0.05
        assert pc["fpir_upper_on_calibration_half"] >= pc["fpir_on_calibration_half"]
        assert uc["upper_bootstrap"] == {"resampled": "impostor persons", "reps": 2000,
                                         "confidence": 0.95, "seed": 0}
    for key in ("at_most_x1_5", "within_x1_5"):
        assert 0 <= upper["summary"]["calibration"][key] <= 2
    with pytest.raises(SystemExit):
        main(["eval", "identify", str(root), "--rule", "median"])
