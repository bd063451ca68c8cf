"""ROC and DET charts from the result dicts of `run_verify` and `run_identify`.

Uses matplotlib's object API with the Agg canvas directly, so plotting never touches a
display or the process-wide backend that other code may have chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_roc(result: dict[str, Any], path: Path) -> Path:
    """TAR against FAR (log x) with the reported TAR@FAR operating points marked."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    curve = result["curve"]
    ax.step(curve["far"], curve["tar"], where="post", label=result.get("embedder", "embedder"))
    for op in result.get("tar_at_far", []):
        if op["far"] > 0:
            ax.plot([op["far"]], [op["tar"]], "o",
                    label=f"TAR {op['tar']:.3f} @ FAR {op['far_target']:g}")
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    acc = result.get("accuracy", {})
    ax.set_title(f"Verification ROC: {result['pairs']['genuine']}+{result['pairs']['impostor']} "
                 f"pairs, 10-fold acc {acc.get('mean', float('nan')):.4f}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_det(result: dict[str, Any], path: Path) -> Path:
    """FNIR against FPIR, log-log, with the reported FNIR@FPIR points marked.

    Points with FNIR 0 cannot sit on a log axis and are left out of the line.
    """
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    curve = result["curve"]
    xy = [(x, y) for x, y in zip(curve["fpir"], curve["fnir"], strict=True) if x > 0 and y > 0]
    if xy:
        xs, ys = zip(*xy, strict=True)
        ax.step(xs, ys, where="post", label=f"enrol {result['enrol_n']} photo(s)")
    for op in result.get("fnir_at_fpir", []):
        if op["fpir"] > 0 and op["fnir"] > 0:
            ax.plot([op["fpir"]], [op["fnir"]], "o",
                    label=f"FNIR {op['fnir']:.3f} @ FPIR {op['fpir_target']:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive identification rate (FPIR)")
    ax.set_ylabel("false negative identification rate (FNIR)")
    subjects = result["subjects"]
    ax.set_title(f"Open-set DET: {subjects['enrolled']} enrolled, "
                 f"{subjects['strangers']} strangers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)
