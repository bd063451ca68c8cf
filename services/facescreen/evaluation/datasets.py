"""Readers for the evaluation layouts: LFW pairs, one folder per subject, WIDER FACE text GT.

Readers only parse and check layouts; they never load pixels. Every layout problem raises
`DatasetError` with the path and what was expected, so the CLI can print one clear line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class DatasetError(ValueError):
    """The folder or file does not have the layout the evaluation expects."""


# ------------------------------------------------------------------------------------ LFW


@dataclass(frozen=True)
class VerificationPair:
    """Two images to compare, whether they show the same person, and the pair's fold."""

    first: Path
    second: Path
    same: bool
    fold: int


def lfw_image_dir(root: Path) -> Path:
    """LFW images live in `<root>/data/<Name>/` (our copy) or directly in `<root>/<Name>/`."""
    return root / "data" if (root / "data").is_dir() else root


def lfw_image_path(images: Path, name: str, number: int) -> Path:
    return images / name / f"{name}_{number:04d}.jpg"


def read_lfw_pairs(root: Path, pairs_file: Path | None = None,
                   check_files: bool = True) -> list[VerificationPair]:
    """Parse LFW's `pairs.txt` (header `folds n`, then per fold n same and n different lines).

    Same/different is read from each line's field count (3 or 4); the fold from the line's
    position (blocks of 2n lines), as in the LFW View 2 protocol.
    """
    pairs_path = pairs_file or root / "pairs.txt"
    if not pairs_path.is_file():
        raise DatasetError(f"{root}: no {pairs_path.name} (expected an LFW folder with "
                           "pairs.txt and data/<Name>/<Name>_NNNN.jpg)")
    lines = [ln.split() for ln in pairs_path.read_text().splitlines() if ln.strip()]
    if not lines or len(lines[0]) != 2 or not all(x.isdigit() for x in lines[0]):
        raise DatasetError(f"{pairs_path}: first line must be '<folds> <pairs per class>'")
    folds, per_class = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if folds < 1 or per_class < 1 or len(body) != 2 * folds * per_class:
        raise DatasetError(f"{pairs_path}: header says {folds} folds x 2 x {per_class} pairs "
                           f"but {len(body)} pair lines follow")
    images = lfw_image_dir(root)
    pairs: list[VerificationPair] = []
    for k, fields in enumerate(body, start=2):
        try:
            if len(fields) == 3:
                a = lfw_image_path(images, fields[0], int(fields[1]))
                b = lfw_image_path(images, fields[0], int(fields[2]))
                same = True
            elif len(fields) == 4:
                a = lfw_image_path(images, fields[0], int(fields[1]))
                b = lfw_image_path(images, fields[2], int(fields[3]))
                same = False
            else:
                raise ValueError
        except ValueError:
            raise DatasetError(f"{pairs_path}:{k}: not 'name i j' or 'name1 i name2 j'") from None
        pairs.append(VerificationPair(a, b, same, (k - 2) // (2 * per_class)))
    if check_files:
        missing = sorted({str(p) for pr in pairs for p in (pr.first, pr.second)
                          if not p.is_file()})
        if missing:
            raise DatasetError(f"{root}: {len(missing)} image(s) named in {pairs_path.name} are "
                               f"missing, e.g. {missing[0]}")
    return pairs


def read_lfw_genders(root: Path) -> dict[str, str]:
    """File name (`Name_NNNN.jpg`) -> 'female' or 'male', from `labels/lfw_{female,male}_names.txt`.

    Empty when the lists are absent. A file listed under both is left out (unknown).
    """
    found: dict[str, set[str]] = {}
    for gender in ("female", "male"):
        path = root / "labels" / f"lfw_{gender}_names.txt"
        if not path.is_file():
            return {}
        for line in path.read_text().splitlines():
            if line.strip():
                found.setdefault(line.strip(), set()).add(gender)
    return {name: next(iter(g)) for name, g in found.items() if len(g) == 1}


# ------------------------------------------------------------------------ subject folders


def subject_image_root(root: Path) -> Path:
    """`<root>/images/<subject>/...` when there is an `images/` folder, `<root>/data/<Name>/`
    in the LFW layout (a `pairs.txt` beside `data/`), else `<root>/<subject>/`."""
    if (root / "images").is_dir():
        return root / "images"
    return lfw_image_dir(root) if (root / "pairs.txt").is_file() else root


def is_aligned_crops(root: Path) -> bool:
    """LFW's layout (pairs.txt and data/): photos that are aligned 112-px ArcFace crops."""
    return (root / "pairs.txt").is_file() and (root / "data").is_dir()


def read_subject_genders(root: Path, subjects: dict[str, list[Path]]) -> dict[str, str]:
    """Subject id -> 'female' or 'male' where every labelled photo of it agrees.

    Labels come from `labels/lfw_{female,male}_names.txt` (per file name, LFW); empty when
    there are none (celeba-dev has no gender labels).
    """
    by_file = read_lfw_genders(root)
    out: dict[str, str] = {}
    for sid, photos in subjects.items():
        found = {by_file[p.name] for p in photos if p.name in by_file}
        if len(found) == 1:
            out[sid] = found.pop()
    return out


def read_subject_folders(root: Path) -> dict[str, list[Path]]:
    """Subject id (folder name) -> its image files, both sorted; subjects without images dropped."""
    base = subject_image_root(root)
    if not base.is_dir():
        raise DatasetError(f"{root} is not a folder")
    subjects: dict[str, list[Path]] = {}
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            subjects[folder.name] = files
    if len(subjects) < 2:
        raise DatasetError(f"{base}: expected one folder of images per subject (at least two "
                           f"subjects), found {len(subjects)}")
    return subjects


# ----------------------------------------------------------------------------- WIDER FACE

# The per-face attribute columns after the box in WIDER's text ground truth.
WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


@dataclass(frozen=True)
class WiderImage:
    """One image's ground truth: boxes as x1, y1, x2, y2 and WIDER's attribute codes."""

    file: str  # relative to the images folder, e.g. `0--Parade/0_Parade_Parade_0_102.jpg`
    boxes: npt.NDArray[np.float64]  # (n, 4)
    attributes: npt.NDArray[np.int64]  # (n, 6) in WIDER_ATTRIBUTES order

    @property
    def invalid(self) -> npt.NDArray[np.bool_]:
        flags: npt.NDArray[np.bool_] = self.attributes[:, WIDER_ATTRIBUTES.index("invalid")] != 0
        return flags

    @property
    def event(self) -> str:
        """The event class: the image's folder, e.g. `0--Parade`."""
        return self.file.split("/", 1)[0]


def find_wider_gt(root: Path) -> Path:
    """The `*bbx_gt.txt` file in `root` or `root/gt` (the val one when several)."""
    found = sorted(root.glob("*bbx_gt.txt")) + sorted((root / "gt").glob("*bbx_gt.txt"))
    if not found:
        raise DatasetError(f"{root}: no WIDER ground truth (*_bbx_gt.txt) here or in gt/")
    val = [p for p in found if "val" in p.name]
    return (val or found)[0]


def read_wider_gt(path: Path) -> list[WiderImage]:
    """Parse WIDER's text GT: file line, count line, then one line per face.

    A count of 0 is followed by one dummy line, as in the official files.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: no such ground-truth file")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    images: list[WiderImage] = []
    i = 0
    while i < len(lines):
        name = lines[i]
        try:
            count = int(lines[i + 1])
            rows = [[float(x) for x in lines[i + 2 + k].split()] for k in range(max(count, 1))]
        except (IndexError, ValueError):
            raise DatasetError(f"{path}: entry {name!r} (line {i + 1}) is not "
                               "'file / count / count face lines'") from None
        if count < 0 or any(len(r) < 4 + len(WIDER_ATTRIBUTES) for r in rows):
            raise DatasetError(f"{path}: entry {name!r} has a bad count or short face lines")
        width = 4 + len(WIDER_ATTRIBUTES)
        data = np.asarray([r[:width] for r in rows[:count]], np.float64).reshape(count, width)
        boxes = np.column_stack([data[:, 0], data[:, 1], data[:, 0] + data[:, 2],
                                 data[:, 1] + data[:, 3]])
        images.append(WiderImage(name, boxes, data[:, 4:10].astype(np.int64)))
        i += 2 + max(count, 1)
    if not images:
        raise DatasetError(f"{path}: no images listed")
    return images


@dataclass(frozen=True)
class FaceDemographics:
    """Perceived attributes of one ground-truth face, and its box when the file gives one."""

    attributes: dict[str, str]  # e.g. {"gender": "Female", "age": "Adult", "skin": "II"}
    box: tuple[float, float, float, float] | None  # x1, y1, x2, y2


def read_wider_demographics(root: Path) -> dict[tuple[str, int], FaceDemographics]:
    """(image file, 0-based face index in its GT list) -> perceived attributes (and box).

    Reads `demographics/demographics_val_subset_with_boxes.csv`
    (`file,face_index,x1,y1,w,h,perceived_gender,perceived_age,perceived_skin`) or, failing
    that, the original `demographics_val_full.csv` (`,file,perceived_gender,...,face`, with
    `images/` before the file). Attribute keys drop the `perceived_` prefix. Empty if absent.
    """
    folder = root / "demographics"
    subset = folder / "demographics_val_subset_with_boxes.csv"
    full = folder / "demographics_val_full.csv"
    path, index_key = (subset, "face_index") if subset.is_file() else (full, "face")
    if not path.is_file():
        return {}
    out: dict[tuple[str, int], FaceDemographics] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                file = row["file"].removeprefix("images/")
                key = (file, int(row[index_key]))
                box = None
                if all(row.get(k) for k in ("x1", "y1", "w", "h")):
                    x, y, w, h = (float(row[k]) for k in ("x1", "y1", "w", "h"))
                    box = (x, y, x + w, y + h)
            except (KeyError, ValueError):
                raise DatasetError(f"{path}: expected columns file and {index_key}") from None
            attributes = {k.removeprefix("perceived_"): v for k, v in row.items()
                          if k.startswith("perceived_")}
            out[key] = FaceDemographics(attributes, box)
    return out
