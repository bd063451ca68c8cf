"""The exact index's top-k (partial selection, list filter by codes) against a full sort."""

from __future__ import annotations

import numpy as np
import pytest
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import GalleryIndex

RNG = np.random.default_rng(7)
TEMPLATES = l2_normalise(RNG.normal(size=(300, 16)).astype(np.float32))
LISTS = tuple(("vip", "banned", "staff")[i % 3] for i in range(300))
INDEX = GalleryIndex(tuple(f"s{i}" for i in range(300)), LISTS, TEMPLATES)
PROBES = l2_normalise(RNG.normal(size=(7, 16)).astype(np.float32))


def _sorted_reference(k: int, lists: set[str] | None) -> list[list[str]]:
    scores = PROBES @ TEMPLATES.T
    keep = [j for j in range(300) if lists is None or LISTS[j] in lists]
    return [[f"s{j}" for j in sorted(keep, key=lambda j: -row[j])[:k]] for row in scores]


@pytest.mark.parametrize("k", [1, 5, 300, 1000])
@pytest.mark.parametrize("lists", [None, ["vip"], ["banned", "staff"]])
def test_top_k_is_the_full_sort_best_first(k: int, lists: list[str] | None) -> None:
    found = INDEX.search(PROBES, k, lists)
    expected = _sorted_reference(k, None if lists is None else set(lists))
    assert [[c.subject_id for c in row] for row in found] == expected
    for row in found:
        scores = [c.score for c in row]
        assert scores == sorted(scores, reverse=True)
        assert lists is None or {c.watchlist for c in row} <= set(lists)


def test_unknown_or_no_list_finds_nothing_and_k_zero_is_empty() -> None:
    assert INDEX.search(PROBES[:2], 5, ["nobody"]) == [[], []]
    assert INDEX.search(PROBES[:2], 5, []) == [[], []]
    assert INDEX.search(PROBES[:2], 0) == [[], []]
    assert GalleryIndex.empty(16).search(PROBES[:1], 5) == [[]]
