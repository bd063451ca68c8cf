"""Offline checks of what an operator deploys: the Kustomize overlays, docker-compose.yml and
the Dockerfiles, without a cluster or a container runtime.

Rendering uses `kubectl kustomize`; core kinds are validated with PyPI kubernetes-validate,
custom resources against the CRD JSON Schemas in ../shared/k8s-crd-schemas (Strimzi, KEDA,
the Prometheus operator, CloudNativePG); the compose file is parsed by a real compose
implementation (docker-compose 1.29.2 in .venv-deploy); `policy` holds the house rules
(no root, resources, pinned images, probes, no inline secrets). `python -m
facescreen.devstack.deploycheck` runs them all (scripts/validate-deploy.sh).
"""
