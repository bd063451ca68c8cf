"""Missing infrastructure skips on a user's machine and fails in CI (CI=true)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PROBE = '''
from tests.infra import missing

def test_needs_a_server():
    missing("no such server here")
'''


@pytest.mark.parametrize(("ci", "code", "word"), [("true", 1, "failed"), ("", 0, "skipped")])
def test_missing_infrastructure_fails_only_in_ci(tmp_path: Path, ci: str, code: int,
                                                 word: str) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), str(probe)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == code, result.stdout
    assert f"1 {word}" in result.stdout and "no such server here" in result.stdout + (
        result.stderr)
