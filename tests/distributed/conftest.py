"""Real servers for the distributed tests: each fixture module owns one server kind.

(pytest allows `pytest_plugins` only in the rootdir's conftest, so the fixtures are
imported here by name.)
"""

from tests.distributed.fixtures_kafka import broker, topics
from tests.distributed.fixtures_redis import redis_url, valkey, valkey_server
from tests.distributed.fixtures_triton import triton

__all__ = ["broker", "redis_url", "topics", "triton", "valkey", "valkey_server"]
