#!/usr/bin/env bash
# Validate what an operator deploys, offline: render every Kustomize overlay and validate
# each object (Kubernetes schemas, CRD schemas from ../shared/k8s-crd-schemas), the house
# policy (no root, resources, pinned images, probes, no inline secrets, default-deny
# NetworkPolicies), the Dockerfiles, docker-compose.yml (docker-compose's own parser) and
# the PromQL of the dashboard and alert rules. Needs kubectl and .venv (make setup);
# makes .venv-deploy if missing. The test suite runs the same checks (tests/deploy).
#   bash scripts/validate-deploy.sh [--crd-schemas DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deploy-env.sh >/dev/null
exec .venv/bin/python -m facescreen.devstack.deploycheck "$@"
