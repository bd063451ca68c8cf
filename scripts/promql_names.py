"""List what PromQL expressions refer to, using Prometheus' grammar (PyPI promql-parser).

Runs in .venv-deploy (scripts/setup-deploy-env.sh), where promql-parser is installed:

    .venv-deploy/bin/python scripts/promql_names.py < exprs.json

Input: a JSON list of expressions. Output: a JSON list, one entry per expression, either
{"error": "..."} (it does not parse) or {"selectors": [{"metric", "labels"}],
"groupings": [{"labels", "metrics"}]}: every vector selector with the label names its
matchers use, and every `by`/`without`/`on`/`ignoring`/`group_*` clause with the metrics
below it (so a caller can check a grouping label exists on them).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import promql_parser as pp


def walk(node: Any, selectors: list[dict[str, Any]], groupings: list[dict[str, Any]]) -> list[str]:
    """Visit `node`; return the metric names below it."""
    if isinstance(node, pp.VectorSelector):
        labels = [m.name for m in node.matchers.matchers if m.name != "__name__"]
        for group in node.matchers.or_matchers or []:
            labels += [m.name for m in group if m.name != "__name__"]
        name = node.name or next((m.value for m in node.matchers.matchers
                                  if m.name == "__name__"), None)
        selectors.append({"metric": name, "labels": sorted(set(labels))})
        return [name] if name else []
    if isinstance(node, pp.MatrixSelector):
        return walk(node.vector_selector, selectors, groupings)
    if isinstance(node, pp.AggregateExpr):
        below = walk(node.expr, selectors, groupings)
        if node.param is not None:
            below += walk(node.param, selectors, groupings)
        if node.modifier is not None and node.modifier.labels:
            groupings.append({"labels": list(node.modifier.labels), "metrics": below})
        return below
    if isinstance(node, pp.BinaryExpr):
        below = walk(node.lhs, selectors, groupings) + walk(node.rhs, selectors, groupings)
        modifier = node.modifier
        if modifier is not None:
            labels = list(modifier.matching.labels) if modifier.matching is not None else []
            labels += list(modifier.group_labels or [])
            if labels:
                groupings.append({"labels": labels, "metrics": below})
        return below
    if isinstance(node, pp.Call):
        return [name for arg in node.args for name in walk(arg, selectors, groupings)]
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        return walk(node.expr, selectors, groupings)
    return []  # number and string literals


def describe(expr: str) -> dict[str, Any]:
    try:
        tree = pp.parse(expr)
    except Exception as exc:  # the parser raises plain ValueError/RuntimeError kinds
        return {"error": str(exc)}
    selectors: list[dict[str, Any]] = []
    groupings: list[dict[str, Any]] = []
    walk(tree, selectors, groupings)
    return {"selectors": selectors, "groupings": groupings}


def main() -> None:
    exprs = json.load(sys.stdin)
    json.dump([describe(str(e)) for e in exprs], sys.stdout)


if __name__ == "__main__":
    main()
