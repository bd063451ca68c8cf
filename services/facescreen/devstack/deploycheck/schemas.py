"""Schema validation of rendered objects, offline.

Core kinds: PyPI kubernetes-validate (the OpenAPI schemas of Kubernetes itself, strict:
an unknown field is an error, as `kubectl apply --validate=strict` would say). Custom
resources: the CRDs' JSON Schemas in the layout kubeconform uses
(`<group>/<kind>_<version>.json`), which ../shared/k8s-crd-schemas holds for Strimzi, KEDA,
the Prometheus operator and CloudNativePG. An object that no schema covers is a problem,
not a pass: nothing goes unchecked silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from facescreen.devstack.deploycheck.manifests import Obj, ident

# The oldest Kubernetes minor this deployment supports: fields valid there are valid later.
KUBERNETES_VERSION = "1.30"


@dataclass(frozen=True)
class Problem:
    """One object that does not validate, with where and why."""

    obj: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.obj}: {self.path or '(root)'}: {self.message}"


def is_custom(api_version: str) -> bool:
    """A custom resource's group has a dot and is not one of Kubernetes' own *.k8s.io."""
    group = api_version.rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def crd_schema_path(crd_root: Path, obj: Obj) -> Path:
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    return crd_root / group / f"{str(obj['kind']).lower()}_{version}.json"


@cache
def _crd_validator(path: Path) -> Any:
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def validate_object(obj: Obj, crd_root: Path, k8s_version: str = KUBERNETES_VERSION) -> list[Problem]:
    """Every schema error of one object (empty when it is valid)."""
    import kubernetes_validate as kv

    name = ident(obj)
    if is_custom(str(obj["apiVersion"])):
        path = crd_schema_path(crd_root, obj)
        if not path.is_file():
            return [Problem(name, "", f"no schema for {obj['apiVersion']} {obj['kind']} "
                            f"(looked for {path})")]
        errors = sorted(_crd_validator(path).iter_errors(obj), key=lambda e: list(e.absolute_path))
        return [Problem(name, _path(e.absolute_path), e.message) for e in errors]
    try:
        kv.validate(obj, k8s_version, strict=True)
    except kv.SchemaNotFoundError:
        return [Problem(name, "", f"Kubernetes {k8s_version} has no {obj['apiVersion']} "
                        f"{obj['kind']}")]
    except kv.ValidationError as exc:
        return [Problem(name, _path(exc.absolute_path), exc.message)]
    return []


def validate_all(objs: list[Obj], crd_root: Path,
                 k8s_version: str = KUBERNETES_VERSION) -> list[Problem]:
    return [p for obj in objs for p in validate_object(obj, crd_root, k8s_version)]


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts)
