"""The house rules hold on every overlay, the Dockerfiles and the compose file, and each
rule catches its violation when one is planted (and only that rule fires)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from facescreen.devstack.deploycheck import dockerfile, policy
from facescreen.devstack.deploycheck.manifests import Obj

from tests.conftest import REPO
from tests.deploy.conftest import one


@pytest.mark.parametrize("overlay", ["dev", "gpu", "gpu-tensorrt"])
def test_every_overlay_keeps_the_rules(overlay: str, rendered_all: dict[str, list[Obj]]) -> None:
    assert policy.check_objects(rendered_all[overlay]) == []


def _analyzer(objs: list[Obj]) -> dict[str, Any]:
    pod: dict[str, Any] = one(objs, "Deployment", "analyzer")["spec"]["template"]["spec"]
    return pod


def _container(objs: list[Obj]) -> dict[str, Any]:
    container: dict[str, Any] = _analyzer(objs)["containers"][0]
    return container


def _set(getter: Callable[[list[Obj]], dict[str, Any]], path: str, value: Any) -> Callable[[list[Obj]], None]:
    def plant(objs: list[Obj]) -> None:
        node = getter(objs)
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return plant


DELETE = object()


def _add(obj: Obj) -> Callable[[list[Obj]], None]:
    return lambda objs: objs.append(copy.deepcopy(obj))


def _drop(kind: str, name: str) -> Callable[[list[Obj]], None]:
    return lambda objs: objs.remove(one(objs, kind, name))


PLANTED = {
    "pod allows root": ("no-root", _set(_analyzer, "securityContext.runAsNonRoot", False)),
    "runs as uid 0": ("no-root", _set(_container, "securityContext.runAsUser", 0)),
    "privileged": ("no-root", _set(_container, "securityContext.privileged", True)),
    "may escalate": ("no-root", _set(_container, "securityContext.allowPrivilegeEscalation", True)),
    "host network": ("no-root", _set(_analyzer, "hostNetwork", True)),
    "writable root": ("read-only-root", _set(_container, "securityContext.readOnlyRootFilesystem", False)),
    "keeps capabilities": ("read-only-root", _set(_container, "securityContext.capabilities", {})),
    "no cpu request": ("resources", _set(_container, "resources.requests.cpu", DELETE)),
    "no memory limit": ("resources", _set(_container, "resources.limits", {})),
    "latest tag": ("image-tag", _set(_container, "image", "registry.example.com/facescreen:latest")),
    "no tag": ("image-tag", _set(_container, "image", "registry.example.com/facescreen")),
    "no readiness probe": ("probes", _set(_container, "readinessProbe", DELETE)),
    "no liveness probe": ("probes", _set(_container, "livenessProbe", DELETE)),
    "Secret with data": ("inline-secret", _add({"apiVersion": "v1", "kind": "Secret",
                                                "metadata": {"name": "s", "namespace": "facescreen"},
                                                "stringData": {"TOKEN": "abc"}})),
    "password in env": ("inline-secret", _set(_container, "env", [
        {"name": "REDIS_PASSWORD", "value": "hunter2"}])),
    "credential in a URL": ("inline-secret", _set(_container, "args", [
        "matcher", "--store", "redis://facescreen:hunter2@redis:6379/0"])),
    "private key in a ConfigMap": ("inline-secret", _add({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "facescreen"},
        "data": {"tls.pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n"}})),
    "no default deny": ("default-deny", _drop("NetworkPolicy", "default-deny")),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_a_planted_violation_is_caught(case: str, dev_objects: list[Obj]) -> None:
    rule, plant = PLANTED[case]
    plant(dev_objects)
    found = policy.check_objects(dev_objects)
    assert found, f"{case}: nothing caught"
    assert {v.rule for v in found} == {rule}, found


def test_every_rule_has_a_planted_case() -> None:
    assert {rule for rule, _ in PLANTED.values()} == set(policy.ALL_RULES)


def test_a_reference_in_a_url_is_no_credential() -> None:
    assert list(policy.secret_strings({"a": "postgresql://u:$(PGPASSWORD)@db/x",
                                       "b": "postgresql://u:${PGPASSWORD}@db/x",
                                       "c": "rtsp://camera.local:554/stream1"})) == []
    assert [p for p, _ in policy.secret_strings({"d": ["http://u:p@h/"]})] == ["d[0]"]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.triton"])
def test_the_dockerfiles_keep_the_rules(name: str) -> None:
    assert dockerfile.check_dockerfile((REPO / name).read_text(), name) == []


def test_the_image_drops_pip_and_runs_as_a_user() -> None:
    _args, stages = dockerfile.stages((REPO / "Dockerfile").read_text())
    final = stages[-1]
    assert [rest for word, rest in final.lines if word == "USER"] == ["10001:10001"]
    runs = " ".join(rest for word, rest in final.lines if word == "RUN")
    assert "pip uninstall" in runs
    assert any(s.name == "models" for s in stages)


DOCKER_PLANTED: dict[str, tuple[str, Callable[[str], str]]] = {
    "latest base": ("image-tag", lambda t: t.replace("python:3.11.13-slim-bookworm", "python:latest")),
    "untagged base": ("image-tag", lambda t: t.replace("python:3.11.13-slim-bookworm", "python")),
    "root at the end": ("no-root", lambda t: t.replace("USER 10001:10001", "USER root")),
    "no user": ("no-root", lambda t: t.replace("USER 10001:10001\n", "")),
    "unpinned pip": ("pinned-install", lambda t: t.replace("pip install -c constraints.txt -e .",
                                                            "pip install -e .")),
    "compiler in the final stage": ("build-tools", lambda t: t.replace(
        "USER 10001:10001", "USER 0\nRUN apt-get install -y gcc\nUSER 10001:10001")),
}


@pytest.mark.parametrize("case", sorted(DOCKER_PLANTED))
def test_a_planted_dockerfile_violation_is_caught(case: str) -> None:
    rule, plant = DOCKER_PLANTED[case]
    text = (REPO / "Dockerfile").read_text()
    changed = plant(text)
    assert changed != text, f"{case}: the plant did not apply"
    found = dockerfile.check_dockerfile(changed)
    assert {v.rule for v in found} == {rule}, found


def test_continuation_lines_and_comments_are_read_as_docker_does(tmp_path: Path) -> None:
    text = ("ARG BASE=alpine:3.20\nFROM ${BASE} AS a\n# a comment\nRUN pip \\\n"
            "    install \\\n    requests\nFROM a\nUSER 1000\n")
    assert [(v.rule, v.where) for v in dockerfile.check_dockerfile(text, "D")] == [
        ("pinned-install", "D stage a")]
