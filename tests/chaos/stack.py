"""The pipeline a chaos test may break: its own Triton, its own valkey (AOF, a password),
the analyzer and the matcher as real processes, and a readiness monitor.

The session's Triton and valkey serve other tests, so a test that kills them starts its
own. Each component is killed with SIGKILL and restarted by the test, as an orchestrator
would: a service as a new process on the same port (its own log), a server on the same
ports and folder (`ServerProcess.start()` again).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from facescreen.devstack.process import ServerError, ServerProcess, free_port
from facescreen.devstack.triton import (
    TritonEnvError,
    TritonServer,
    ensure_triton_env,
    start_triton,
)
from facescreen.devstack.valkey import redisearch_module_path, valkey_server_path

from tests.conftest import REPO
from tests.distributed.fixtures_kafka import TestTopics
from tests.distributed.test_services import facescreen_cmd, http_get, metric
from tests.infra import missing

STORE_ENV = "FACESCREEN_CHAOS_STORE"  # the matcher reads the store URL (with its password) here


def own_triton(workdir: Path) -> TritonServer:
    try:
        ensure_triton_env()
    except TritonEnvError as exc:
        missing(f".venv-triton is missing and could not be created: {exc}")
    return start_triton(workdir, REPO / "triton_models")


def own_valkey(workdir: Path, password: str) -> ServerProcess:
    """valkey + RediSearch with the AOF on and a password (in a config file, not argv)."""
    try:
        server_bin, search = valkey_server_path(), redisearch_module_path()
    except ServerError as exc:
        missing(f"valkey with RediSearch is not installed: {exc}")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "valkey.conf"
    conf.write_text(f"requirepass {password}\n")
    conf.chmod(0o600)
    port = free_port()
    argv = [str(server_bin), str(conf), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(workdir), "--save", "", "--appendonly", "yes",
            "--appendfsync", "everysec", "--daemonize", "no", "--logfile", "",
            "--loadmodule", str(search), "ON_TIMEOUT", "FAIL"]

    def ready() -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, password=password,
                             socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(client.ping()) and bool(client.execute_command("MODULE", "LIST"))
        finally:
            client.close()

    server = ServerProcess("valkey", argv, workdir / "valkey.log", {"redis": port},
                           ready=ready)
    return server.start(30)


@dataclass
class ReadinessMonitor:
    """Polls `/readyz` of the services every `period_s` s: (time, service, status) samples,
    status 0 when nothing answers (the process is dead)."""

    ports: dict[str, int]
    period_s: float = 0.25
    samples: list[tuple[float, str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ReadinessMonitor:
        self._thread = threading.Thread(target=self._run, name="readyz-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            for service, port in self.ports.items():
                try:
                    status = http_get(port, "/readyz")[0]
                except OSError:
                    status = 0
                self.samples.append((time.time(), service, status))

    def not_ready_between(self, service: str, start: float, end: float) -> int:
        """How many samples of `service` in [start, end] were not 200."""
        return sum(1 for t, s, status in self.samples
                   if s == service and start <= t <= end and status != 200)


@dataclass
class Outage:
    """One kill: when it came, when the restart began and when the component was ready."""

    component: str
    killed_at: float
    restarted_at: float
    ready_at: float


@dataclass
class ChaosStack:
    workdir: Path
    topics: TestTopics
    cameras: list[str]
    triton: TritonServer
    valkey: ServerProcess
    password: str
    analyzer_port: int = field(default_factory=free_port)
    matcher_port: int = field(default_factory=free_port)
    analyzer_commit_s: float = 2.0
    services: dict[str, ServerProcess] = field(default_factory=dict)
    incarnations: list[ServerProcess] = field(default_factory=list)

    @property
    def store_url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.valkey.ports['redis']}/0"

    def _common(self, port: int, commit_s: float) -> list[str]:
        return ["--bootstrap", self.topics.bootstrap, "--topic-prefix", self.topics.prefix,
                "--http-port", str(port), "--session-timeout", "2", "--commit-interval",
                str(commit_s)]

    def _start(self, role: str, argv: list[str], port: int,
               env: dict[str, str] | None = None) -> ServerProcess:
        name = f"{role}-{sum(1 for s in self.incarnations if s.name.startswith(role)) + 1}"
        server = ServerProcess(name, argv, self.workdir / f"{name}.log", {"http": port},
                               env=env or {}, ready=lambda: http_get(port, "/readyz")[0] == 200)
        self.incarnations.append(server)
        self.services[role] = server
        return server.start(timeout_s=90)

    def start_analyzer(self) -> ServerProcess:
        cameras = [arg for name in self.cameras for arg in ("--camera", name)]
        argv = [*facescreen_cmd(), "analyzer",
                *self._common(self.analyzer_port, self.analyzer_commit_s),
                "--inference", f"triton://{self.triton.grpc_url}", "--batch", "4",
                # Freshness off: with it (2 s by default) an outage's backlog is skipped by
                # design; here every frame must come out, however late.
                "--max-frame-age", "0", *cameras]
        return self._start("analyzer", argv, self.analyzer_port)

    def start_matcher(self) -> ServerProcess:
        argv = [*facescreen_cmd(), "matcher", *self._common(self.matcher_port, 0.5),
                "--store", f"env:{STORE_ENV}"]
        return self._start("matcher", argv, self.matcher_port, {STORE_ENV: self.store_url})

    def component(self, name: str) -> tuple[ServerProcess, Callable[[], object]]:
        """The process of a component and how to start it again."""
        if name == "analyzer":
            return self.services["analyzer"], self.start_analyzer
        if name == "matcher":
            return self.services["matcher"], self.start_matcher
        if name == "triton":
            return self.triton, lambda: self.triton.start(timeout_s=120)
        if name == "valkey":
            return self.valkey, lambda: self.valkey.start(30)
        raise ValueError(name)

    def kill_and_restart(self, name: str, down_s: float = 1.0,
                         noticed: Callable[[float], bool] | None = None,
                         notice_s: float = 15.0) -> Outage:
        """SIGKILL, at least `down_s` with the component gone, then a restart, ready when it
        returns. `noticed(killed_at)`, when given, holds the restart back (at most
        `notice_s`) until the service that uses the component has noticed: a dependency
        back before anyone asked for it would not have been an outage.

        `down_s` also separates the dying component's last output (work that was done
        before the kill, acknowledged just after it) from the restarted one's first."""
        server, restart = self.component(name)
        killed_at = time.time()
        server.kill()
        time.sleep(down_s)
        deadline = time.monotonic() + notice_s
        while noticed is not None and not noticed(killed_at) and time.monotonic() < deadline:
            time.sleep(0.1)
        restarted_at = time.time()
        restart()
        return Outage(name, killed_at, restarted_at, time.time())

    def progress(self, name: str) -> float:
        """A counter that grows while the stage after `name` works (this process's own)."""
        if name in ("analyzer", "triton"):
            return metric(self.analyzer_port, "facescreen_analyzer_frames_total")
        return metric(self.matcher_port, "facescreen_matcher_events_total",
                      outcome="screened")

    def diagnose(self) -> str:
        """Log tails of the services and servers, for a failure message."""
        parts = []
        for server in (*self.services.values(), self.triton, self.valkey):
            alive = server.process is not None and server.process.poll() is None
            parts.append(f"--- {server.name} (alive: {alive}):\n{server.log_tail(12)}")
        return "\n".join(parts)

    def stop(self) -> None:
        for server in (*self.services.values(), self.triton, self.valkey):
            with contextlib.suppress(Exception):
                server.stop()

    def log_paths(self) -> list[Path]:
        return [*(s.log_path for s in self.incarnations), self.triton.log_path,
                self.valkey.log_path]


def new_password() -> str:
    return secrets.token_urlsafe(18)
