"""`python -m facescreen.devstack.deploycheck`: every offline deployment check, one report.

    python -m facescreen.devstack.deploycheck [--repo DIR] [--crd-schemas DIR]
        [--deploy-venv DIR]

Renders every overlay under k8s/overlays, validates each object (core kinds and CRDs),
applies the house rules to the objects, the Dockerfiles and docker-compose.yml (parsed by
docker-compose's `config`), and parses every PromQL query of the dashboard and the alert
rules. Exit status 0 when all is clean, 1 when something is wrong, 2 when a tool or the
CRD schemas are missing. (Whether the queries' metrics exist is checked against running
services by tests/deploy/test_dashboard_metrics.py.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facescreen.devstack.deploycheck import compose, dockerfile, manifests, policy, queries, schemas

REPO = Path(__file__).resolve().parents[4]
# Compose interpolates required variables; the check gives them placeholder values.
COMPOSE_ENV = {"GRAFANA_ADMIN_PASSWORD": "placeholder", "POSTGRES_PASSWORD": "placeholder"}


def run(repo: Path, crd_root: Path, deploy_venv: Path) -> list[str]:
    problems: list[str] = []
    rule_objs: list[manifests.Obj] = []
    for overlay in manifests.overlays(repo / "k8s"):
        objs = manifests.render(overlay)
        rule_objs += objs
        found = [str(p) for p in schemas.validate_all(objs, crd_root)]
        found += [str(v) for v in policy.check_objects(objs)]
        problems += [f"{overlay.relative_to(repo)}: {p}" for p in found]
        print(f"{overlay.relative_to(repo)}: {len(objs)} objects, {len(found)} problems")
    for name in ("Dockerfile", "Dockerfile.triton"):
        found = [str(v) for v in dockerfile.check_dockerfile((repo / name).read_text(), name)]
        problems += found
        print(f"{name}: {len(found)} problems")
    compose_file = repo / "docker-compose.yml"
    try:
        resolved = compose.compose_config(deploy_venv / "bin" / "docker-compose", compose_file,
                                          COMPOSE_ENV)
        found = [str(v) for v in compose.check_compose(resolved, compose_file.read_text())]
    except compose.ComposeError as exc:
        found = [f"docker-compose config: {exc}"]
    problems += found
    print(f"docker-compose.yml: {len(found)} problems")
    dashboard = json.loads((repo / "deploy" / "grafana" / "facescreen.json").read_text())
    qs = queries.dashboard_queries(dashboard) + queries.rule_queries(rule_objs)
    described = queries.describe(qs, deploy_venv / "bin" / "python",
                                 repo / "scripts" / "promql_names.py")
    bad = [f"{q.where}: {d['error']}" for q, d in zip(qs, described, strict=True) if "error" in d]
    problems += bad
    print(f"PromQL: {len(qs)} queries, {len(bad)} do not parse")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facescreen.devstack.deploycheck",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--crd-schemas", type=Path, default=REPO.parent / "shared" / "k8s-crd-schemas")
    parser.add_argument("--deploy-venv", type=Path, default=REPO / ".venv-deploy",
                        help="made by scripts/setup-deploy-env.sh")
    args = parser.parse_args(argv)
    if not args.crd_schemas.is_dir():
        print(f"deploycheck: CRD schemas not found at {args.crd_schemas}", file=sys.stderr)
        return 2
    if not (args.deploy_venv / "bin" / "docker-compose").is_file():
        print(f"deploycheck: {args.deploy_venv} has no docker-compose: run "
              "scripts/setup-deploy-env.sh", file=sys.stderr)
        return 2
    try:
        problems = run(args.repo.resolve(), args.crd_schemas, args.deploy_venv)
    except (manifests.RenderError, RuntimeError) as exc:
        print(f"deploycheck: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"  {problem}")
    print("deploycheck: ok" if not problems else f"deploycheck: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
