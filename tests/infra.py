"""What a test does when a server, tool or data folder it needs is not there.

On a user's machine it skips with the reason. In CI (`CI=true`) it fails: a green run
that skipped the broker, Triton or the evaluation data would prove nothing.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str, *, module: bool = False) -> NoReturn:
    """Skip (user's machine) or fail (CI) because `reason`; `module=True` at import time."""
    if in_ci():
        pytest.fail(f"{reason} -- CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(reason, allow_module_level=module)
