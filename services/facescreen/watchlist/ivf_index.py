"""An approximate watchlist index for large lists: faiss IVF-Flat per watchlist.

Why: the exact index reads every template for every probe, ~0.5 GB a probe at a million
templates, so its latency is memory-bound (~70 ms here) however the product is computed.
An inverted file clusters a list's templates once (k-means) and scores a probe only against
the cells nearest to it; the templates are kept as they are (Flat), so every returned
score is the exact cosine and only the choice of templates looked at is approximate.
Face templates cluster (a shared "face" direction, demographic groups), which is what
makes the nearest cells hold the nearest templates.

Why per watchlist: a search restricted to some lists then reads only their indexes, with
no filter inside faiss; small lists (below `ivf_min_rows`) stay exact. Why rebuilt, not
updated: like the exact index it is built from a snapshot of the data directory, so a
deleted or expired subject's template is gone from memory with the old index.

    >>> import numpy as np
    >>> from facescreen.core.specs import GallerySpec
    >>> rows = np.eye(4, dtype=np.float32)
    >>> index = build_index(("a", "b", "c", "d"), ("vip",) * 4, rows, GallerySpec("ivf"))
    >>> [c.subject_id for c in index.search(rows[2:3], k=1)[0]]  # small list: exact
    ['c']
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from facescreen.core.matching import Candidate, GalleryIndex, TemplateIndex
from facescreen.core.specs import GallerySpec
from facescreen.core.types import FloatArray

# faiss asks for at least 39 training points a cell; fewer and its k-means warns and the
# cells are poorly placed.
_POINTS_PER_CELL = 39
_TRAIN_POINTS_PER_CELL = 64  # training sample: enough for stable cells, far from all rows


def build_index(subject_ids: tuple[str, ...], watchlists: tuple[str, ...],
                templates: FloatArray, spec: GallerySpec) -> TemplateIndex:
    """The index `spec` asks for over these rows: exact, or IVF where a list is large."""
    if spec.index == "exact":
        return GalleryIndex(subject_ids, watchlists, templates)
    rows = _rows_by_list(watchlists)
    if not any(len(r) >= spec.ivf_min_rows for r in rows.values()):
        return GalleryIndex(subject_ids, watchlists, templates)
    return IvfGalleryIndex(subject_ids, watchlists, templates, spec, rows)


def _rows_by_list(watchlists: Sequence[str]) -> dict[str, np.ndarray]:
    """Each list's row numbers, from one sort of the names."""
    names, inverse = np.unique(np.asarray(watchlists, dtype=np.str_), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(names)))[:-1]
    return {str(n): r for n, r in zip(names, np.split(order, bounds), strict=True)}


class IvfGalleryIndex:
    """`GalleryIndex.search` over an IVF-Flat index for each large watchlist.

    `build_s` and `cells` say what the build cost and made (the bench reports them)."""

    def __init__(self, subject_ids: tuple[str, ...], watchlists: tuple[str, ...],
                 templates: FloatArray, spec: GallerySpec,
                 rows_by_list: dict[str, np.ndarray] | None = None) -> None:
        import faiss  # only where an IVF index is asked for: the exact path needs none

        started = time.perf_counter()
        self.subject_ids = subject_ids
        self.watchlists = watchlists
        self.cells: dict[str, int] = {}
        self._exact: dict[str, GalleryIndex] = {}
        self._ivf: dict[str, Any] = {}
        vectors = np.ascontiguousarray(templates, np.float32)
        for name, rows in (rows_by_list or _rows_by_list(watchlists)).items():
            if len(rows) < spec.ivf_min_rows:
                self._exact[name] = GalleryIndex(tuple(subject_ids[i] for i in rows),
                                                 (name,) * len(rows), vectors[rows])
                continue
            cells = spec.ivf_lists or round(float(np.sqrt(len(rows))))
            cells = max(1, min(cells, len(rows) // _POINTS_PER_CELL))
            quantizer = faiss.IndexFlatIP(vectors.shape[1])
            index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], cells,
                                       faiss.METRIC_INNER_PRODUCT)
            sample = min(len(rows), cells * _TRAIN_POINTS_PER_CELL)
            chosen = np.random.default_rng(0).choice(rows, size=sample, replace=False)
            index.train(vectors[np.sort(chosen)])  # a fixed sample: the same cells every build
            index.add_with_ids(vectors[rows], rows.astype(np.int64))
            self._ivf[name] = index
            self.cells[name] = cells
        self.set_probe(spec.ivf_probe)
        self.build_s = time.perf_counter() - started

    def __len__(self) -> int:
        return len(self.subject_ids)

    def search(self, probes: FloatArray, k: int = 5,
               watchlists: Sequence[str] | None = None) -> list[list[Candidate]]:
        """Top-k candidates per probe row, best first, optionally only from some lists."""
        probes = np.ascontiguousarray(probes, np.float32)
        wanted = None if watchlists is None else set(watchlists)
        merged: list[list[Candidate]] = [[] for _ in range(len(probes))]
        if len(probes) == 0 or k <= 0:
            return merged
        for name, exact in self._exact.items():
            if wanted is None or name in wanted:
                for row, found in zip(merged, exact.search(probes, k), strict=True):
                    row.extend(found)
        for name, index in self._ivf.items():
            if wanted is not None and name not in wanted:
                continue
            scores, ids = index.search(probes, k)
            for row, s_row, id_row in zip(merged, scores, ids, strict=True):
                row.extend(Candidate(self.subject_ids[j], self.watchlists[j], float(s))
                           for s, j in zip(s_row, id_row, strict=True) if j >= 0)
        if len(self._exact) + len(self._ivf) == 1:
            return merged  # one list: already best first
        return [sorted(row, key=lambda c: -c.score)[:k] for row in merged]

    def set_probe(self, cells: int) -> None:
        """Probe `cells` cells a search from now on (at most all): recall against speed,
        changed without a rebuild."""
        for index in self._ivf.values():
            index.nprobe = max(1, min(cells, index.nlist))

    def memory_bytes(self) -> int:
        """Bytes the templates and ids take inside the indexes (what a list costs in RAM)."""
        total = sum(e.templates.nbytes for e in self._exact.values())
        for index in self._ivf.values():
            total += index.ntotal * (index.d * 4 + 8) + index.nlist * index.d * 4
        return total
