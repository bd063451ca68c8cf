"""docker-compose.yml as Compose itself reads it (docker-compose 1.29.2's `config`, no
daemon), the house rules on it, and the compose Prometheus' rules file kept equal to the
PrometheusRule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from facescreen.cli.main import parser as facescreen_parser
from facescreen.devstack.deploycheck import compose
from facescreen.devstack.deploycheck.__main__ import COMPOSE_ENV

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


def _config(deploy_venv: Path, path: Path = COMPOSE, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    return compose.compose_config(deploy_venv / "bin" / "docker-compose", path,
                                  COMPOSE_ENV if env is None else env)


def test_compose_parses_the_file(deploy_venv: Path) -> None:
    resolved = _config(deploy_venv)
    assert {"kafka", "redis", "triton", "ingest", "analyzer", "matcher", "alert-store",
            "postgres", "prometheus", "grafana"} <= set(resolved["services"])
    assert resolved["services"]["matcher"]["image"] == "facescreen:0.1.0"
    assert compose.check_compose(resolved, COMPOSE.read_text()) == []


def test_compose_refuses_a_missing_secret(deploy_venv: Path) -> None:
    with pytest.raises(compose.ComposeError, match="GRAFANA_ADMIN_PASSWORD"):
        _config(deploy_venv, env={"POSTGRES_PASSWORD": "x"})


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = COMPOSE.read_text()
    assert old in text
    path = tmp_path / "docker-compose.yml"
    path.write_text(text.replace(old, new, 1))
    for name in ("deploy", "Dockerfile", "Dockerfile.triton"):
        (tmp_path / name).symlink_to(REPO / name)
    return path


@pytest.mark.parametrize(("old", "new", "says"), [
    ("condition: service_healthy", "condition: when_it_likes", "when_it_likes"),
    ("restart: unless-stopped", "restart: [unless-stopped]", "restart"),
    ("services:\n", "servicez:\n", "servicez"),
])
def test_compose_refuses_a_broken_file(deploy_venv: Path, tmp_path: Path, old: str, new: str,
                                       says: str) -> None:
    with pytest.raises(compose.ComposeError, match=says):
        _config(deploy_venv, _variant(tmp_path, old, new))


@pytest.mark.parametrize(("old", "new", "rule"), [
    ("image: redis:8.0.2", "image: redis:latest", "image-tag"),
    ("image: prom/prometheus:v2.55.1", "image: prom/prometheus", "image-tag"),
    ("GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD}",
     "GF_SECURITY_ADMIN_PASSWORD: admin", "inline-secret"),
    ('"redis://redis:6379/0"', '"redis://facescreen:hunter2@redis:6379/0"', "inline-secret"),
])
def test_a_planted_compose_violation_is_caught(deploy_venv: Path, tmp_path: Path, old: str,
                                               new: str, rule: str) -> None:
    path = _variant(tmp_path, old, new)
    found = compose.check_compose(_config(deploy_venv, path), path.read_text())
    assert {v.rule for v in found} == {rule}, found


def test_a_credential_in_an_env_file_is_caught(deploy_venv: Path, tmp_path: Path) -> None:
    path = _variant(tmp_path, "env_file: [deploy/cameras.env]", "env_file: [cameras.env]")
    (tmp_path / "cameras.env").write_text("ENTRANCE1_URI=rtsp://admin:admin@cam.local/s1\n")
    found = compose.check_compose(_config(deploy_venv, path), path.read_text())
    assert [(v.rule, v.where) for v in found] == [("inline-secret", "compose service ingest")]


def test_every_facescreen_command_parses(deploy_venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolved = _config(deploy_venv)
    seen = set()
    for name, service in resolved["services"].items():
        if service.get("image") != "facescreen:0.1.0" or "command" not in service:
            continue
        for key, value in (service.get("environment") or {}).items():
            monkeypatch.setenv(key, str(value))
        try:
            facescreen_parser().parse_args(service["command"])
        except SystemExit:
            pytest.fail(f"compose service {name}: facescreen refuses {service['command']}")
        seen.add(service["command"][0])
    assert seen == {"topics", "ingest", "analyzer", "matcher", "alert-store"}


def test_the_compose_rules_are_the_prometheusrule() -> None:
    rule = yaml.safe_load((REPO / "deploy" / "monitoring" / "prometheusrule.yaml").read_text())
    plain = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yml").read_text())
    assert plain == {"groups": rule["spec"]["groups"]}, (
        "deploy/prometheus/rules.yml differs from deploy/monitoring/prometheusrule.yaml: "
        "copy the groups over")
