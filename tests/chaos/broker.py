"""A broker of its own for the restart test: tansu, the analyzer (in-process inference) and
the matcher (a data directory), and what an orchestrator does when a service exits.

tansu here has only memory storage: a restart brings back an empty broker, with no topic,
no record and no committed offset, while the services still hold their positions in the
old logs. The topics are created again as `facescreen topics create` does; after the
restart the frames come from the real `facescreen ingest` (a file, published whole).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from facescreen.bus.topics import create_topics
from facescreen.devstack.process import ServerProcess, free_port
from facescreen.devstack.tansu import bootstrap, start_broker

from tests.distributed.fixtures_kafka import TestTopics, make_topics
from tests.distributed.test_services import facescreen_cmd, http_get

BUS_CHECKS = {"FACESCREEN_BUS_CHECK_S": "1"}  # the bus checks every second, not every 5


@dataclass
class BrokerStack:
    workdir: Path
    data_dir: Path
    cameras: list[str]
    broker: ServerProcess | None = None
    topics: TestTopics | None = None
    ports: dict[str, int] = field(default_factory=lambda: {"analyzer": free_port(),
                                                           "matcher": free_port()})
    services: dict[str, ServerProcess] = field(default_factory=dict)
    incarnations: list[ServerProcess] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)  # services that exited and came again
    ingest_logs: list[Path] = field(default_factory=list)

    def start(self) -> BrokerStack:
        self.broker = start_broker(self.workdir / "tansu")
        self.topics = make_topics(bootstrap(self.broker), "restart")
        for role in ("matcher", "analyzer"):
            self.start_service(role)
        return self

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return bootstrap(self.broker)

    def argv(self, role: str) -> list[str]:
        assert self.topics is not None
        common = ["--bootstrap", self.bootstrap, "--topic-prefix", self.topics.prefix,
                  "--http-port", str(self.ports[role]), "--session-timeout", "2",
                  "--commit-interval", "0.5"]
        if role == "analyzer":
            cameras = [arg for name in self.cameras for arg in ("--camera", name)]
            return [*facescreen_cmd(), "analyzer", *common, "--inference", "onnx", "--threads",
                    "2", "--batch", "4", "--max-frame-age", "0", *cameras]
        return [*facescreen_cmd(), "matcher", *common, "--data-dir", str(self.data_dir)]

    def start_service(self, role: str) -> ServerProcess:
        port = self.ports[role]
        name = f"{role}-{sum(1 for s in self.incarnations if s.name.startswith(role)) + 1}"
        server = ServerProcess(name, self.argv(role), self.workdir / f"{name}.log",
                               {"http": port}, env=BUS_CHECKS,
                               ready=lambda: http_get(port, "/readyz")[0] == 200)
        self.incarnations.append(server)
        self.services[role] = server
        return server.start(timeout_s=90)

    def orchestrate(self) -> None:
        """Start again any service that exited, as Kubernetes would (without waiting)."""
        for role, server in list(self.services.items()):
            if server.process is not None and server.process.poll() is not None:
                self.restarts.append(f"{server.name} exited {server.process.returncode}")
                port = self.ports[role]
                name = f"{role}-{sum(1 for s in self.incarnations if s.name.startswith(role)) + 1}"
                again = ServerProcess(name, self.argv(role), self.workdir / f"{name}.log",
                                      {"http": port}, env=BUS_CHECKS,
                                      ready=lambda: True)
                self.incarnations.append(again)
                self.services[role] = again.start(timeout_s=10)

    def restart_broker(self) -> None:
        """Start the stopped broker again on its port (empty) and create the topics."""
        assert self.broker is not None and self.topics is not None
        self.broker.start(30)
        outcome = create_topics(self.bootstrap, self.topics.bus)
        assert set(outcome.values()) == {"created"}, outcome  # nothing survived the restart

    def ingest(self, clip: Path, fps: float) -> dict[str, int]:
        """`facescreen ingest` of `clip` on every camera (a new session), to its end;
        returns the frames it says it published per camera."""
        assert self.topics is not None
        run = sum(1 for p in self.workdir.glob("ingest-*.toml")) + 1
        config = self.workdir / f"ingest-{run}.toml"
        config.write_text("".join(f'[[cameras]]\nname = "{name}"\nuri = "{clip}"\n'
                                  f"fps = {fps}\n\n" for name in self.cameras))
        log = self.workdir / f"ingest-{run}.log"
        with log.open("wb") as out:
            done = subprocess.run([*facescreen_cmd(), "ingest", "--config", str(config),
                                   "--bootstrap", self.bootstrap, "--topic-prefix",
                                   self.topics.prefix, "--http-port", str(free_port())],
                                  stdout=out, stderr=subprocess.STDOUT, timeout=120,
                                  check=False)
        self.ingest_logs.append(log)
        assert done.returncode == 0, log.read_text()[-2000:]
        for line in log.read_text().splitlines():
            if '"ingest finished"' in line:
                return {str(k): int(v) for k, v in json.loads(line)["published"].items()}
        raise AssertionError(f"no 'ingest finished' line in {log}")

    def stop(self) -> None:
        for server in (*self.services.values(), self.broker):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()

    def log_paths(self) -> list[Path]:
        paths = [*self.ingest_logs, *(s.log_path for s in self.incarnations)]
        return paths + ([self.broker.log_path] if self.broker is not None else [])
