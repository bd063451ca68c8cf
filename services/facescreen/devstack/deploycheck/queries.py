"""The PromQL of the Grafana dashboard and the alert rules, and what it refers to.

Parsing is Prometheus' grammar through PyPI promql-parser, which lives in .venv-deploy:
`describe` runs scripts/promql_names.py there on every expression at once. Grafana's
macros ($__rate_interval and friends) are replaced by a plain range first; template
variables such as $camera only appear inside label-matcher strings, which PromQL accepts.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from facescreen.devstack.deploycheck.manifests import Obj

GRAFANA_MACROS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+),\s*)?([A-Za-z_]\w*)\s*\)\s*$")


@dataclass(frozen=True)
class Query:
    where: str
    expr: str


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every panel target (rows' nested panels too) and every query variable."""
    found: list[Query] = []

    def panels(items: list[dict[str, Any]]) -> None:
        for panel in items:
            for target in panel.get("targets") or []:
                if target.get("expr"):
                    found.append(Query(f"panel {panel.get('title')!r} {target.get('refId')}",
                                       str(target["expr"])))
            panels(panel.get("panels") or [])

    panels(dashboard.get("panels") or [])
    for var in (dashboard.get("templating") or {}).get("list") or []:
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if var.get("type") != "query" or not text:
            continue
        match = LABEL_VALUES.match(str(text))
        # label_values(METRIC_SELECTOR, label) is Grafana's; its selector part is PromQL.
        expr = match.group(1) if match and match.group(1) else str(text)
        found.append(Query(f"variable {var.get('name')!r}", expr))
    return found


def rule_queries(objs: list[Obj]) -> list[Query]:
    """Every rule expression of the PrometheusRule objects among `objs`."""
    found = []
    for obj in objs:
        if obj.get("kind") != "PrometheusRule":
            continue
        for group in (obj.get("spec") or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                name = rule.get("alert") or rule.get("record")
                found.append(Query(f"rule {name}", str(rule["expr"])))
    return found


def variable_labels(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric selector, label) of every label_values() variable."""
    out = []
    for var in (dashboard.get("templating") or {}).get("list") or []:
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        match = LABEL_VALUES.match(str(text or ""))
        if var.get("type") == "query" and match and match.group(1):
            out.append((match.group(1).strip(), match.group(2)))
    return out


def for_parsing(expr: str) -> str:
    return GRAFANA_MACROS.sub("5m", expr)


def describe(queries: list[Query], deploy_python: Path, script: Path,
             timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """What each query refers to (see scripts/promql_names.py), in order."""
    payload = json.dumps([for_parsing(q.expr) for q in queries])
    result = subprocess.run([str(deploy_python), str(script)], input=payload,
                            capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed: {result.stderr.strip()}")
    described: list[dict[str, Any]] = json.loads(result.stdout)
    return described


def load_rules_file(path: Path) -> list[Obj]:
    """A plain Prometheus rules file, as a PrometheusRule-shaped object (for rule_queries)."""
    data = yaml.safe_load(path.read_text()) or {}
    return [{"kind": "PrometheusRule", "spec": {"groups": data.get("groups") or []}}]
