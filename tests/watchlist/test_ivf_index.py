"""The IVF watchlist index: the exact index's answers where it looks everywhere, close to
them where it does not, per-list filters, and deletion through the data directory."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from facescreen.config.pipeline import ConfigError, pipeline_from_mapping
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import GalleryIndex
from facescreen.core.specs import GallerySpec
from facescreen.watchlist.ivf_index import IvfGalleryIndex, build_index
from facescreen.watchlist.live import LiveLocalWatchlist
from facescreen.watchlist.store import EnrolledImage, LocalWatchlistStore, Subject, _State

DIM = 32


def clustered(n: int, seed: int, groups: int = 8) -> np.ndarray:
    """Unit vectors around a shared direction and a few group directions (as face
    templates are), so that cells mean something and top-1 is not trivial."""
    rng = np.random.default_rng(seed)
    common = l2_normalise(rng.normal(size=DIM).astype(np.float32))
    centres = l2_normalise(rng.normal(size=(groups, DIM)).astype(np.float32))
    own = l2_normalise(rng.normal(size=(n, DIM)).astype(np.float32))
    return l2_normalise(0.7 * common + 0.4 * centres[rng.integers(0, groups, n)] + 0.6 * own)


def rows(n: int, lists: tuple[str, ...] = ("big",)) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (tuple(f"s{i}" for i in range(n)), tuple(lists[i % len(lists)] for i in range(n)))


def noisy(templates: np.ndarray, picks: np.ndarray, seed: int) -> np.ndarray:
    """New captures of some templates: what a genuine probe looks like."""
    noise = np.random.default_rng(seed).normal(size=(len(picks), DIM)).astype(np.float32)
    return l2_normalise(templates[picks] + 0.05 * noise)


def test_probing_every_cell_gives_the_exact_answer() -> None:
    templates = clustered(3000, 1)
    ids, lists = rows(3000)
    exact = GalleryIndex(ids, lists, templates)
    ivf = build_index(ids, lists, templates, GallerySpec("ivf", ivf_min_rows=1000,
                                                         ivf_lists=16, ivf_probe=16))
    assert isinstance(ivf, IvfGalleryIndex) and ivf.cells == {"big": 16}
    probes = clustered(50, 2)
    for got, want in zip(ivf.search(probes, 5), exact.search(probes, 5), strict=True):
        assert [c.subject_id for c in got] == [c.subject_id for c in want]
        np.testing.assert_allclose([c.score for c in got], [c.score for c in want], atol=1e-5)


def test_few_cells_probed_still_find_genuine_mates_with_exact_scores() -> None:
    templates = clustered(5000, 3)
    ids, lists = rows(5000)
    spec = GallerySpec("ivf", ivf_min_rows=1000, ivf_probe=4)  # 71 cells, 4 probed
    ivf = build_index(ids, lists, templates, spec)
    assert isinstance(ivf, IvfGalleryIndex) and ivf.cells == {"big": 71}
    picks = np.random.default_rng(4).choice(5000, 200, replace=False)
    found = ivf.search(noisy(templates, picks, 5), 3)
    assert sum(row[0].subject_id == f"s{p}" for row, p in zip(found, picks, strict=True)) >= 196
    probe = noisy(templates, picks[:1], 5)
    for c in ivf.search(probe, 3)[0]:  # the scores are cosines, not estimates
        assert c.score == pytest.approx(float(probe[0] @ templates[int(c.subject_id[1:])]),
                                        abs=1e-5)
    assert all(len(row) == 3 and row[0].score >= row[1].score >= row[2].score for row in found)


def test_lists_are_searched_apart_and_merged_best_first() -> None:
    big = clustered(2400, 6)
    ids, lists = rows(2400, ("vip", "staff", "vip"))  # vip 1600 rows (IVF), staff 800 (exact)
    ivf = build_index(ids, lists, big, GallerySpec("ivf", ivf_min_rows=1000, ivf_probe=64))
    assert isinstance(ivf, IvfGalleryIndex) and set(ivf.cells) == {"vip"}
    exact = GalleryIndex(ids, lists, big)
    probes = noisy(big, np.arange(0, 2400, 97), 7)
    for chosen in (None, ["staff"], ["vip"], ["vip", "staff"], ["nobody"]):
        got = ivf.search(probes, 4, chosen)
        want = exact.search(probes, 4, chosen)
        assert [[c.subject_id for c in r] for r in got] == [[c.subject_id for c in r]
                                                           for r in want], chosen
        if chosen:
            assert all(c.watchlist in chosen for r in got for c in r)


def test_small_galleries_and_the_exact_setting_keep_the_exact_index() -> None:
    templates = clustered(1500, 8)
    ids, lists = rows(1500)
    assert isinstance(build_index(ids, lists, templates, GallerySpec()), GalleryIndex)
    assert isinstance(build_index(ids, lists, templates, GallerySpec("ivf")), GalleryIndex)
    assert build_index(ids, lists, templates, GallerySpec("ivf", ivf_min_rows=1000)).search(
        templates[:0], 5) == []


def _store_of(path: Path, templates: np.ndarray, spec: GallerySpec) -> LocalWatchlistStore:
    """A data directory of one subject per template, written in one save (enrolling 1,500
    subjects one by one would rewrite the embeddings file 1,500 times)."""
    store = LocalWatchlistStore(path, embedder="test", dim=DIM, gallery=spec)
    state = _State(embedder="test", dim=DIM)
    now = time.time()
    for i, vector in enumerate(templates):
        state.subjects[f"s{i}"] = Subject(f"s{i}", ["big"], now,
                                          images=[EnrolledImage(f"i{i}", "x.jpg", 1.0, now)])
        state.embeddings[f"i{i}"] = vector
    store._save(state)
    store.set_watchlist("big", actor="op", threshold=0.9)
    return store


def test_a_removed_subject_leaves_the_live_ivf_index(tmp_path: Path) -> None:
    templates = clustered(1500, 9)
    store = _store_of(tmp_path, templates, GallerySpec("ivf", ivf_min_rows=1000))
    live = LiveLocalWatchlist(store, check_every_s=0.0)
    assert isinstance(live.index, IvfGalleryIndex)
    assert live.search(templates[7:8], 1)[0][0].subject_id == "s7"
    store.remove_subject("s7", actor="op", reason="request")
    assert live.search(templates[7:8], 5)[0][0].subject_id != "s7"
    assert all(c.subject_id != "s7" for c in live.search(templates[7:8], 50)[0])
    assert len(live.index) == 1499 and isinstance(live.index, IvfGalleryIndex)


@pytest.mark.parametrize(("table", "message"), [
    ({"index": "hnsw"}, "gallery.index must be one of"),
    ({"ivf_probe": 0}, "gallery.ivf_probe must be >= 1"),
    ({"ivf_min_rows": 10}, "gallery.ivf_min_rows must be >= 1000"),
    ({"ivf_lists": -1}, "gallery.ivf_lists must be >= 0"),
    ({"ivf_probes": 3}, "unknown key(s) ['ivf_probes']"),
])
def test_bad_gallery_settings_are_one_line_errors(table: dict[str, object],
                                                  message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        pipeline_from_mapping({"gallery": table}, "p.toml")
    assert message in str(caught.value) and "[gallery]" in str(caught.value)


def test_the_gallery_table_reaches_the_config() -> None:
    config = pipeline_from_mapping({"gallery": {"index": "ivf", "ivf_probe": 48}})
    assert config.gallery == GallerySpec("ivf", ivf_probe=48)


def test_the_config_file_reaches_the_data_directory_store(tmp_path: Path) -> None:
    import argparse

    from facescreen.cli.common import open_store

    config = tmp_path / "pipeline.toml"
    config.write_text('[gallery]\nindex = "ivf"\nivf_min_rows = 1000\nivf_probe = 8\n')
    store = open_store(argparse.Namespace(config=config, data_dir=tmp_path / "data"))
    assert store.gallery == GallerySpec("ivf", ivf_min_rows=1000, ivf_probe=8)
