"""Render Kustomize overlays and walk the objects they contain.

Rendering is `kubectl kustomize` (kustomize built into kubectl), the same code path that
`kubectl apply -k` takes, so what is checked is what an operator would apply.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


class RenderError(RuntimeError):
    """An overlay does not render (or kubectl is missing)."""


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise RenderError("kubectl (with its built-in kustomize) is not on PATH")
    return found


def render(overlay: Path, timeout_s: float = 60.0) -> list[Obj]:
    """Every object `kubectl kustomize overlay` produces, in order."""
    result = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True,
                            text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay} failed: {result.stderr.strip()}")
    return load_documents(result.stdout)


def load_documents(text: str) -> list[Obj]:
    """The non-empty YAML documents of a multi-document stream."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise RenderError(f"not a Kubernetes object: {str(doc)[:80]}")
    return docs


def overlays(k8s_root: Path) -> list[Path]:
    """The overlay folders (k8s/overlays/*) that hold a kustomization."""
    return sorted(p for p in (k8s_root / "overlays").iterdir()
                  if (p / "kustomization.yaml").is_file())


def ident(obj: Obj) -> str:
    """`Kind/name` of an object, for messages."""
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name', '?')}"


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload object (None for anything else)."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return dict(spec)
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    elif kind not in WORKLOAD_KINDS:
        return None
    template = spec.get("template") or {}
    inner = template.get("spec")
    return dict(inner) if isinstance(inner, dict) else None


@dataclass(frozen=True)
class Container:
    """One container of a workload, with where it sits."""

    owner: Obj
    pod: Obj
    spec: Obj
    init: bool

    @property
    def where(self) -> str:
        role = "initContainer" if self.init else "container"
        return f"{ident(self.owner)} {role} {self.spec.get('name', '?')}"


def containers(obj: Obj) -> Iterator[Container]:
    pod = pod_spec(obj)
    if pod is None:
        return
    for init, key in ((True, "initContainers"), (False, "containers")):
        for spec in pod.get(key) or []:
            yield Container(obj, pod, spec, init)


def find(objs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objs if o.get("kind") == kind
            and (name is None or o.get("metadata", {}).get("name") == name)]


def container_env(container: Container, objs: list[Obj]) -> dict[str, str]:
    """The literal environment a container gets: env `value`s and the data of the
    ConfigMaps it takes with envFrom (Secret values are unknown offline: given as
    `<secret NAME/KEY>`)."""
    env: dict[str, str] = {}
    for source in container.spec.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            for cm in find(objs, "ConfigMap", ref.get("name")):
                env.update({str(k): str(v) for k, v in (cm.get("data") or {}).items()})
    for item in container.spec.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
            env[item["name"]] = f"<secret {ref.get('name')}/{ref.get('key')}>"
    return env


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command and args (unknown names stay as they are)."""
    out, i = [], 0
    while i < len(arg):
        if arg.startswith("$$", i):
            out.append("$")
            i += 2
        elif arg.startswith("$(", i) and ")" in arg[i:]:
            end = arg.index(")", i)
            name = arg[i + 2:end]
            out.append(env.get(name, arg[i:end + 1]))
            i = end + 1
        else:
            out.append(arg[i])
            i += 1
    return "".join(out)
