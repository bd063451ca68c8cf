"""Fixtures for Redis with vector search: one real valkey + RediSearch for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from facescreen.devstack.process import ServerProcess
from facescreen.devstack.valkey import start_valkey, valkey_url


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """valkey-server with redisearch.so, started once, in its own temporary directory."""
    server = start_valkey(tmp_path_factory.mktemp("valkey"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def valkey(valkey_server: ServerProcess) -> str:
    """The session server's URL (db 0)."""
    return valkey_url(valkey_server)


@pytest.fixture
def redis_url(valkey: str) -> Iterator[str]:
    """The session server, emptied (keys and search indexes) before each test."""
    client = redis.Redis.from_url(valkey)
    try:
        client.flushall()
        yield valkey
    finally:
        client.close()
