"""House rules for what runs in the cluster, checked on rendered objects.

Each rule has a name, so a test can plant one violation and see exactly that rule fire:

- `no-root`: a pod runs as a non-root user (runAsNonRoot, no runAsUser 0), never
  privileged, never escalating privileges;
- `read-only-root`: read-only root filesystem, every capability dropped;
- `resources`: every container requests cpu and memory and has a memory limit (a pod
  without them is evicted first and can starve its node);
- `image-tag`: every image names a tag or digest, and the tag is not `latest`;
- `probes`: every container of a long-running workload has readiness and liveness probes;
- `inline-secret`: no Secret with data in the manifests, no credential-like environment
  variable with a literal value, no `user:password@` in any string, no private key;
- `default-deny`: a NetworkPolicy denies ingress and egress to every pod of a namespace
  that has workloads.

Credentials belong in Secrets that the site or an operator creates and the manifests
only reference: a literal in a manifest ends up in git, in `kubectl get -o yaml` and in CI
logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from facescreen.devstack.deploycheck.manifests import (
    LONG_RUNNING_KINDS,
    Container,
    Obj,
    containers,
    ident,
    pod_spec,
)

SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|"
                         r"CREDENTIAL|ACCESS_?KEY)", re.IGNORECASE)
# user:password@ in a URL, unless the password is a reference ($(VAR) in Kubernetes,
# ${VAR} in compose) that is filled from a Secret or the environment at run time.
URL_CREDENTIAL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:(?!\$)[^/\s@]+@", re.IGNORECASE)
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
ALL_RULES = ("no-root", "read-only-root", "resources", "image-tag", "probes", "inline-secret",
             "default-deny")


@dataclass(frozen=True)
class Violation:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


def image_problem(image: str) -> str | None:
    """Why an image reference is not pinned (None when it is)."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (means latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} is tagged latest"
    return None


def secret_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, why) for every string under `value` that carries a credential."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from secret_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from secret_strings(item, f"{path}[{i}]")
    elif isinstance(value, str):
        if URL_CREDENTIAL.search(value):
            yield path, "a URL with user:password@"
        if PRIVATE_KEY.search(value):
            yield path, "a private key"


def _container_rules(c: Container) -> Iterator[Violation]:
    pod_sc = c.pod.get("securityContext") or {}
    sc = c.spec.get("securityContext") or {}
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if non_root is not True:
        yield Violation("no-root", c.where, "runAsNonRoot is not true")
    if user == 0:
        yield Violation("no-root", c.where, "runAsUser is 0 (root)")
    if sc.get("privileged") is True:
        yield Violation("no-root", c.where, "privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        yield Violation("no-root", c.where, "allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        yield Violation("read-only-root", c.where, "readOnlyRootFilesystem is not true")
    dropped = [str(x).upper() for x in (sc.get("capabilities") or {}).get("drop") or []]
    if "ALL" not in dropped:
        yield Violation("read-only-root", c.where, "capabilities do not drop ALL")
    resources = c.spec.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for kind, table, key in (("request", requests, "cpu"), ("request", requests, "memory"),
                             ("limit", limits, "memory")):
        if key not in table:
            yield Violation("resources", c.where, f"no {key} {kind}")
    image = str(c.spec.get("image", ""))
    why = image_problem(image)
    if why:
        yield Violation("image-tag", c.where, why)
    if not c.init and c.owner.get("kind") in LONG_RUNNING_KINDS:
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in c.spec:
                yield Violation("probes", c.where, f"no {probe}")
    for item in c.spec.get("env") or []:
        if "value" in item and SECRET_NAME.search(str(item.get("name", ""))):
            yield Violation("inline-secret", c.where,
                            f"env {item['name']} has a literal value: use secretKeyRef")


def check_objects(objs: list[Obj]) -> list[Violation]:
    """Every violation of the house rules in a rendered set of objects."""
    found: list[Violation] = []
    for obj in objs:
        for c in containers(obj):
            found.extend(_container_rules(c))
        pod = pod_spec(obj)
        if pod is not None and (pod.get("hostNetwork") or pod.get("hostPID")):
            found.append(Violation("no-root", ident(obj), "shares the host's network or PIDs"))
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            found.append(Violation("inline-secret", ident(obj),
                                   "a Secret with data in the manifests: create it out of band "
                                   "and reference it"))
        if obj.get("kind") == "ConfigMap":
            for key in obj.get("data") or {}:
                if SECRET_NAME.search(str(key)):
                    found.append(Violation("inline-secret", ident(obj),
                                           f"ConfigMap key {key} looks like a credential"))
        for path, why in secret_strings(obj):
            found.append(Violation("inline-secret", ident(obj), f"{path}: {why}"))
    found.extend(_default_deny(objs))
    return found


def _default_deny(objs: list[Obj]) -> Iterator[Violation]:
    namespaces = {o.get("metadata", {}).get("namespace", "default") for o in objs
                  if pod_spec(o) is not None}
    for ns in sorted(namespaces):
        denies = [o for o in objs if o.get("kind") == "NetworkPolicy"
                  and o.get("metadata", {}).get("namespace", "default") == ns
                  and not (o.get("spec") or {}).get("podSelector")
                  and {"Ingress", "Egress"} <= set((o.get("spec") or {}).get("policyTypes") or [])
                  and not (o.get("spec") or {}).get("ingress")
                  and not (o.get("spec") or {}).get("egress")]
        if not denies:
            yield Violation("default-deny", f"namespace {ns}",
                            "no NetworkPolicy denies all ingress and egress by default")
