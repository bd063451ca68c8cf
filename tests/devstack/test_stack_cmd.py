"""`facescreen stack up|down` as a person runs it: real broker and valkey, subjects that
survive a restart of the stack, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from facescreen.cli.main import main
from facescreen.core.alignment import l2_normalise
from facescreen.watchlist.redis_store import RedisWatchlistStore

from tests.conftest import REPO


def _up(workdir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir.parent / "stack-up.log").open("a")  # a pipe nobody reads would block it
    proc = subprocess.Popen(
        [sys.executable, "-m", "facescreen.cli.main", "stack", "up", "--no-triton",
         "--workdir", str(workdir)], cwd=REPO, stdout=subprocess.PIPE,
        stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("}"):
            return proc, json.loads("".join(lines))
    proc.kill()
    raise AssertionError(f"stack up printed no addresses: {''.join(lines)}")


def _store(url: str) -> RedisWatchlistStore:
    return RedisWatchlistStore(url, embedder="test-embedder", dim=4)


def test_stack_keeps_subjects_across_a_restart_and_stops_on_down(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "stack"
    proc, addresses = _up(workdir)
    try:
        vec = l2_normalise(np.ones(4, np.float32))
        _store(addresses["store"]).add_subject("alice", "vip", [("a.jpg", 0.9, vec)],
                                               actor="op")
        assert main(["stack", "up", "--no-triton", "--workdir", str(workdir)]) == 2
        assert "already running" in capsys.readouterr().err
        assert main(["stack", "down", "--workdir", str(workdir)]) == 0
        assert proc.wait(30) == 0
        assert not (workdir / "stack.json").exists()
    finally:
        proc.kill()
    proc, addresses = _up(workdir)  # the same work folder: the append-only file is replayed
    try:
        assert sorted(_store(addresses["store"]).subjects()) == ["alice"]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert main(["stack", "down", "--workdir", str(workdir)]) == 2
    assert "no stack is running" in capsys.readouterr().err


def test_stack_up_without_built_models_is_one_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["stack", "up", "--workdir", str(tmp_path), "--models-root",
                 str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a model repository" in err and "Traceback" not in err
