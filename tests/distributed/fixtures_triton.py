"""Fixtures for the Triton server: one real tritonserver (PyPI nvidia-pytriton) per session.

The server runs the CPU form of `triton_models/` from `.venv-triton`, which the fixture makes
with `scripts/setup-triton-env.sh` when it is missing (a no-op when it is up to date).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from facescreen.devstack.triton import TritonEnvError, TritonServer, ensure_triton_env, start_triton

from tests.infra import missing

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A ready server: `.grpc_url`, `.http_url`, `.metrics_url`, `.log_path`; stopped at the end."""
    try:
        ensure_triton_env()
    except TritonEnvError as exc:
        missing(f".venv-triton is missing and could not be created: {exc}")
    server = start_triton(tmp_path_factory.mktemp("triton"), REPO / "triton_models")
    try:
        yield server
    finally:
        server.stop()
