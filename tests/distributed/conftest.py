"""Real servers for the distributed tests: each fixture module owns one server kind."""

pytest_plugins = [
    "tests.distributed.fixtures_triton",
    "tests.distributed.fixtures_redis",
    "tests.distributed.fixtures_kafka",
]
