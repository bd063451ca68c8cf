"""Schemathesis against the running server, from its own /openapi.json: no input it
generates (valid by the schema, or deliberately not) gets a 5xx, and every 4xx is the
JSON one-liner the contract promises.

Bounded: a fixed number of examples per operation and mode (derandomized, so a run is
reproducible), and a wall-clock budget after which the remaining examples are not sent
(the test then fails if an operation got none, so a slow machine is noticed, not hidden).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.api import ApiLimits
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.generation.case import Case

from tests.api.conftest import Api, alert_doc, enrol, running_api

EXAMPLES = 30  # per operation and generation mode
BUDGET_S = 90.0
SKIP = {("GET", "/api/v1/alerts/stream")}  # never ends by design; tested in test_alerts.py


@pytest.fixture
def fuzzed(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[Api]:
    limits = ApiLimits(enrol_burst=10_000, enrol_per_minute=10_000, search_burst=10_000,
                       search_per_minute=10_000, max_request_bytes=2_000_000)
    with running_api(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", analyzer, limits) as api:
        assert enrol(api, "franck", ["franck_01829.jpg"]).status_code == 201
        api.ctx.alerts.ingest(alert_doc())
        yield api


def fuzz(operation: Any, mode: GenerationMode, check: Callable[[Case[Any], str], None]) -> None:
    label = f"{operation.method.upper()} {operation.path} {mode.value}"

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case[Any]) -> None:
        check(case, label)

    try:
        run()
    except Unsatisfiable:
        # Negative mode for an operation without inputs (health, me, ...): nothing to break.
        assert mode == GenerationMode.NEGATIVE, label


def test_no_server_error_from_generated_requests(fuzzed: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    headers = fuzzed.auth("admin")
    started = time.monotonic()
    sent: dict[str, int] = {}
    failures: list[str] = []

    def check(case: Case[Any], label: str) -> None:
        if time.monotonic() - started > BUDGET_S:
            return
        response = case.call(base_url=fuzzed.url, headers=headers, timeout=30)
        sent[label] = sent.get(label, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")
        elif response.status_code >= 400:
            body = response.json()
            if not isinstance(body.get("detail"), str) or not body["detail"]:
                failures.append(f"{label}: {response.status_code} without a one-line detail")

    operations = [op.ok() for op in schema.get_all_operations()]  # type: ignore[union-attr]
    for operation in operations:
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, check)
    elapsed = time.monotonic() - started
    print(f"schemathesis: {sum(sent.values())} requests in {elapsed:.1f} s", sent)
    assert not failures, failures
    assert len(operations) == 24
    assert elapsed < BUDGET_S + 30, f"took {elapsed:.0f} s"
    covered = {label.rsplit(" ", 1)[0] for label in sent}
    assert len(covered) == len(operations) - len(SKIP), sorted(covered)
    assert fuzzed.call("GET", "/api/v1/health", who=None).status_code == 200
