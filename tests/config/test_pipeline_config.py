"""The pipeline TOML: every bad value is one line naming the table and key, never a
traceback later; good files load into the core's dataclasses."""

from __future__ import annotations

from pathlib import Path

import pytest
from facescreen.cli.main import main
from facescreen.config.pipeline import ConfigError, load_pipeline_config

from tests.conftest import REPO

BAD = [
    ('[detector]\nmax_side = "big"\n', "[detector] max_side = 'big'"),
    ("[detector]\nmax_side = 0\n", "max_side must be >="),
    ("[detector]\nscore_threshold = 1.5\n", "score_threshold must be in (0, 1)"),
    ('[detector]\ncolour = "RGBA"\n', "colour must be RGB or BGR"),
    ("[detector]\nmean = [1, 2]\n", "[detector] mean"),
    ("[embedder]\ndim = -3\n", "dim must be in 1..4096"),
    ("[embedder]\ntemplate = [[1, 2], [3, 4]]\n", "template must be five"),
    ("[screening]\nmin_brightness = 2\n", "min_brightness must be in [0, 1]"),
    ("[screening]\nmax_abs_yaw_deg = 180\n", "max_abs_yaw_deg must be in (0, 90]"),
    ("[tracking]\nmin_hits = 0\n", "[tracking]"),
    ('[decision]\nmin_faces = "three"\n', "[decision] min_faces = 'three'"),
    ("[decision]\ncooldown_s = -1\n", "cooldown_s must be a finite number >= 0"),
    ('[inference]\nruntime = "tensorrt"\n', "inference.runtime must be one of"),
    ("[detectr]\nmax_side = 640\n", "unknown table(s) ['detectr']"),
    ("[detector]\nmax_sides = 640\n", "unknown key(s) ['max_sides']"),
    ("detector = 3\n", "[detector] must be a table"),
    ("[cameras.gate.screening]\nmin_brightness = 0\n", "only [decision] and [tracking]"),
    ("[detector\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_each_bad_value_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    text: str, message: str) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_pipeline_config(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    code = main(["watchlist", "list", "--data-dir", str(tmp_path), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_shipped_configs_load() -> None:
    for path in sorted((REPO / "docs" / "configs").glob("*.toml")):
        config = load_pipeline_config(path)
        assert config.detector.max_side >= config.detector.size_multiple, path
