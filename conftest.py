"""The real servers the tests share, one of each per test session.

Declared here, at the rootdir, as plugins: a session fixture imported into several
conftest or test modules would be one fixture per module, and start one broker, one
valkey and one Triton each.
"""

pytest_plugins = [
    "tests.distributed.fixtures_kafka",
    "tests.distributed.fixtures_redis",
    "tests.distributed.fixtures_triton",
]
