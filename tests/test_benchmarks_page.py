"""docs/benchmarks.md is what bench/write_benchmarks.py makes of the committed JSON figures:
no figure on the page is typed in by hand or left behind by a re-run."""

from __future__ import annotations

import importlib.util
import sys

from tests.conftest import REPO


def test_the_page_is_generated_from_the_committed_figures() -> None:
    sys.path.insert(0, str(REPO / "bench"))  # the bench scripts import their neighbours
    try:
        spec = importlib.util.spec_from_file_location("write_benchmarks",
                                                      REPO / "bench" / "write_benchmarks.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        page = module.render(REPO / "docs" / "figures")
    finally:
        sys.path.remove(str(REPO / "bench"))
    assert page == (REPO / "docs" / "benchmarks.md").read_text(), (
        "docs/benchmarks.md is stale: run .venv/bin/python bench/write_benchmarks.py")
