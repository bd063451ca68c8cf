"""Fixtures of the deployment checks: rendered overlays, the CRD schemas, .venv-deploy.

What they need and where it comes from: `kubectl` (with kustomize) on PATH, the CRD
schemas in ../shared/k8s-crd-schemas (test material, never copied here), and .venv-deploy
with docker-compose and promql-parser (made by scripts/setup-deploy-env.sh, which this
fixture runs: it returns at once when the venv is up to date). Any of them missing skips
on a user's machine and fails in CI (tests.infra.missing).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
from facescreen.devstack.deploycheck import manifests
from facescreen.devstack.deploycheck.manifests import Obj

from tests.conftest import REPO
from tests.infra import missing

CRD_ROOT = REPO.parent / "shared" / "k8s-crd-schemas"
DEPLOY_VENV = REPO / ".venv-deploy"


@pytest.fixture(scope="session")
def crd_root() -> Path:
    if not (CRD_ROOT / "kafka.strimzi.io").is_dir():
        missing(f"CRD schemas not found at {CRD_ROOT} (../shared/k8s-crd-schemas)")
    return CRD_ROOT


@pytest.fixture(scope="session")
def deploy_venv() -> Path:
    """.venv-deploy, made (or found up to date) by scripts/setup-deploy-env.sh."""
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup-deploy-env.sh")],
                            capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0 or not (DEPLOY_VENV / "bin" / "docker-compose").is_file():
        missing(f"scripts/setup-deploy-env.sh could not make {DEPLOY_VENV}: "
                f"{(result.stderr or result.stdout).strip()[-400:]}")
    return DEPLOY_VENV


@pytest.fixture(scope="session")
def rendered_all() -> dict[str, list[Obj]]:
    """name -> objects of every overlay, rendered once for the session."""
    if shutil.which("kubectl") is None:
        missing("kubectl (with kustomize) is not on PATH")
    return {p.name: manifests.render(p) for p in manifests.overlays(REPO / "k8s")}


@pytest.fixture
def dev_objects(rendered_all: dict[str, list[Obj]]) -> list[Obj]:
    """A private copy of the dev overlay's objects, to plant faults in."""
    return copy.deepcopy(rendered_all["dev"])


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = manifests.find(objs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]
