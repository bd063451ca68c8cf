"""Every overlay renders and validates offline, and agrees with the code it deploys.

Schemas: core kinds with kubernetes-validate (strict), custom resources against the CRD
JSON Schemas of ../shared/k8s-crd-schemas. Agreement: the KafkaTopics are the topics of
bus/topics.py (names, partitions, retention, cleanup), KEDA never scales a worker past its
topic's partitions, every container's command line parses with facescreen's own argument
parser, every FACESCREEN_* variable given to a container is one the code reads, and every
Secret the manifests reference is one docs/operations.md tells the operator about.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
from facescreen.bus.topics import BusConfig
from facescreen.cli.main import parser as facescreen_parser
from facescreen.devstack.deploycheck import manifests, schemas
from facescreen.devstack.deploycheck.manifests import Obj
from facescreen.ingest.config import IngestConfig

from tests.conftest import REPO
from tests.deploy.conftest import one

OVERLAYS = ("dev", "gpu", "gpu-tensorrt")


def test_every_overlay_is_there(rendered_all: dict[str, list[Obj]]) -> None:
    assert sorted(rendered_all) == sorted(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(overlay: str, rendered_all: dict[str, list[Obj]],
                                crd_root: Path) -> None:
    objs = rendered_all[overlay]
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "StatefulSet", "NetworkPolicy", "Kafka", "KafkaNodePool",
            "KafkaTopic", "ScaledObject", "PodMonitor", "PrometheusRule", "Cluster"} <= kinds
    assert schemas.validate_all(objs, crd_root) == []


def _plant(objs: list[Obj], kind: str, name: str, path: list[str | int], value: object) -> None:
    node = one(objs, kind, name)
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]


@pytest.mark.parametrize(("kind", "name", "path", "value", "says"), [
    ("Deployment", "analyzer", ["spec", "replicas"], "one", "is not of type 'integer'"),
    ("Deployment", "analyzer", ["spec", "template", "spec", "containers", 0, "imagePullPolcy"],
     "Always", "Additional properties"),
    ("NetworkPolicy", "default-deny", ["spec", "podSelector"], "all", "is not of type 'object'"),
    ("KafkaTopic", "facescreen.frames", ["spec", "partitions"], "twelve", "not of type 'integer'"),
    ("KafkaTopic", "facescreen.faces", ["spec", "partitionz"], 3, "Additional properties"),
    ("ScaledObject", "analyzer", ["spec", "maxReplicaCount"], "12", "not of type 'integer'"),
    ("PrometheusRule", "facescreen", ["spec", "groups", 0, "rules", 0, "expr"], None, "None"),
    ("Cluster", "facescreen-alerts", ["spec", "instances"], "three", "not of type 'integer'"),
])
def test_a_planted_schema_error_is_caught(dev_objects: list[Obj], crd_root: Path, kind: str,
                                          name: str, path: list[str | int], value: object,
                                          says: str) -> None:
    _plant(dev_objects, kind, name, path, value)
    problems = schemas.validate_all(dev_objects, crd_root)
    assert [p.obj for p in problems] == [f"{kind}/{name}"], problems
    assert says in problems[0].message


def test_an_object_no_schema_covers_is_a_problem(crd_root: Path) -> None:
    widget = {"apiVersion": "widgets.example.com/v1", "kind": "Widget",
              "metadata": {"name": "w"}}
    gone = {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "i"}}
    problems = schemas.validate_all([widget, gone], crd_root)
    assert [p.obj for p in problems] == ["Widget/w", "Ingress/i"]
    assert "no schema" in problems[0].message and "has no" in problems[1].message


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_topics_are_the_bus_topics(overlay: str, rendered_all: dict[str, list[Obj]]) -> None:
    objs = rendered_all[overlay]
    prefix = one(objs, "ConfigMap", "facescreen")["data"]["FACESCREEN_TOPIC_PREFIX"]
    bus = BusConfig().with_prefix(prefix)
    topics = {o["spec"].get("topicName", o["metadata"]["name"]): o["spec"]
              for o in manifests.find(objs, "KafkaTopic")}
    assert sorted(topics) == sorted(s.name for s in bus.topics().values())
    brokers = sum(p["spec"]["replicas"] for p in manifests.find(objs, "KafkaNodePool")
                  if "broker" in p["spec"]["roles"])
    for spec in bus.topics().values():
        got = topics[spec.name]
        assert got["partitions"] == spec.partitions, spec.name
        assert {k: str(v) for k, v in got["config"].items()} == spec.kafka_configs(), spec.name
        assert 1 <= got["replicas"] <= brokers, spec.name
    assert brokers >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_never_scales_past_the_partitions(overlay: str,
                                               rendered_all: dict[str, list[Obj]]) -> None:
    objs = rendered_all[overlay]
    config = one(objs, "ConfigMap", "facescreen")["data"]
    bus = BusConfig().with_prefix(config["FACESCREEN_TOPIC_PREFIX"])
    partitions = {s.name: s.partitions for s in bus.topics().values()}
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in manifests.find(objs, "ScaledObject")}
    assert sorted(scaled) == ["analyzer", "matcher"]
    consumes = {"analyzer": bus.frames.name, "matcher": bus.faces.name}
    for target, obj in scaled.items():
        one(objs, "Deployment", target)
        (trigger,) = obj["spec"]["triggers"]
        meta = trigger["metadata"]
        assert meta["topic"] == consumes[target]
        assert meta["consumerGroup"] == f"{config['FACESCREEN_TOPIC_PREFIX']}facescreen-{target}"
        assert meta["bootstrapServers"] == config["FACESCREEN_BOOTSTRAP"]
        assert 1 <= obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"]
        assert obj["spec"]["maxReplicaCount"] <= partitions[meta["topic"]]
        if "authenticationRef" in trigger:
            one(objs, "TriggerAuthentication", trigger["authenticationRef"]["name"])


def _facescreen_containers(objs: list[Obj]) -> list[manifests.Container]:
    return [c for o in objs for c in manifests.containers(o)
            if "/facescreen:" in str(c.spec.get("image")) and not c.spec.get("command")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_command_line_parses(overlay: str, rendered_all: dict[str, list[Obj]],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    objs = rendered_all[overlay]
    seen = set()
    for container in _facescreen_containers(objs):
        env = manifests.container_env(container, objs)
        for key, value in env.items():
            monkeypatch.setenv(key, value)  # the parser reads FACESCREEN_* defaults
        args = [manifests.expand(a, env) for a in container.spec["args"]]
        assert not any("$(" in a for a in args), f"{container.where}: unexpanded {args}"
        try:
            parsed = facescreen_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"{container.where}: facescreen refuses {args}")
        assert isinstance(parsed, argparse.Namespace)
        seen.add(args[0])
    assert seen == {"ingest", "analyzer", "matcher", "alert-store", "alerts"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cameras_file_loads(overlay: str, rendered_all: dict[str, list[Obj]],
                                monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = one(rendered_all[overlay], "ConfigMap", "facescreen")["data"]["cameras.toml"]
    (tmp_path / "cameras.toml").write_text(text)
    monkeypatch.setenv("ENTRANCE1_URI", "rtsp://camera.invalid/stream1")
    assert IngestConfig.from_toml(tmp_path / "cameras.toml").names == ["entrance-1"]


def _source_text() -> str:
    return "\n".join(p.read_text() for p in (REPO / "services").rglob("*.py"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_facescreen_variable_is_read_by_the_code(overlay: str,
                                                       rendered_all: dict[str, list[Obj]]) -> None:
    """A variable is used when the code reads it or some container's args expand it (the
    shared ConfigMap reaches every service through envFrom)."""
    objs = rendered_all[overlay]
    containers = _facescreen_containers(objs)
    args = " ".join(a for c in containers for a in c.spec.get("args", []))
    names = {k for c in containers for k in manifests.container_env(c, objs)
             if k.startswith("FACESCREEN_")}
    assert "FACESCREEN_BOOTSTRAP" in names
    source = _source_text()
    unread = sorted(n for n in names
                    if f'"{n}"' not in source and f"$({n})" not in args)
    assert unread == [], f"variables nothing reads: {unread}"


def _secret_refs(obj: Obj) -> set[str]:
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key in ("secretKeyRef", "secretRef"):
                if isinstance(node.get(key), dict):
                    found.add(node[key]["name"])
            if isinstance(node.get("secret"), dict) and "secretName" in node["secret"]:
                found.add(node["secret"]["secretName"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(obj)
    if obj["kind"] == "TriggerAuthentication":
        found |= {ref["name"] for ref in obj["spec"].get("secretTargetRef", [])}
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_secret_is_documented(overlay: str,
                                               rendered_all: dict[str, list[Obj]]) -> None:
    refs = set().union(*(_secret_refs(o) for o in rendered_all[overlay]))
    assert {"facescreen-cameras", "facescreen-redis", "facescreen-redis-acl"} <= refs
    docs = (REPO / "docs" / "operations.md").read_text()
    assert sorted(r for r in refs if f"`{r}`" not in docs) == []


def test_a_secret_reference_is_found_wherever_it_is(dev_objects: list[Obj]) -> None:
    matcher = copy.deepcopy(one(dev_objects, "Deployment", "matcher"))
    assert "facescreen-redis" in _secret_refs(matcher)
    matcher["spec"]["template"]["spec"]["containers"][0]["env"] = []
    assert "facescreen-redis" not in _secret_refs(matcher)
