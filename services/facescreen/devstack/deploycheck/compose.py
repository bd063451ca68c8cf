"""docker-compose.yml, checked with a real Compose implementation and the house rules.

`docker-compose config` (PyPI docker-compose 1.29.2, in .venv-deploy) parses the file,
resolves anchors, `extends` and interpolation, and validates it against Compose's own
schema, all without a Docker daemon. Its output (the resolved file) is what the house
rules read: pinned images, no credential written into the file.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from facescreen.devstack.deploycheck.policy import (
    SECRET_NAME,
    Violation,
    image_problem,
    secret_strings,
)


class ComposeError(RuntimeError):
    """Compose refuses the file (the message is Compose's own)."""


def compose_config(compose_bin: Path, compose_file: Path, env: Mapping[str, str] | None = None,
                   timeout_s: float = 60.0) -> dict[str, Any]:
    """The file as Compose resolves it (`docker-compose -f FILE config`)."""
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
               **(env or {})}
    result = subprocess.run([str(compose_bin), "--project-directory", str(compose_file.parent),
                             "-f", str(compose_file), "config"], capture_output=True,
                            text=True, timeout=timeout_s, env=environ, check=False)
    if result.returncode != 0:
        raise ComposeError((result.stderr or result.stdout).strip())
    loaded = yaml.safe_load(result.stdout)
    if not isinstance(loaded, dict):
        raise ComposeError("docker-compose config printed no mapping")
    return loaded


def check_compose(resolved: dict[str, Any], raw_text: str) -> list[Violation]:
    """House rules on a resolved compose file; `raw_text` is the file as written (its
    interpolations, e.g. `${GRAFANA_ADMIN_PASSWORD:?...}`, are what keeps secrets out)."""
    problems: list[Violation] = []
    raw = yaml.safe_load(raw_text) or {}
    raw_services = raw.get("services") or {}
    for name, service in (resolved.get("services") or {}).items():
        where = f"compose service {name}"
        image = service.get("image")
        if image is None and "build" not in service:
            problems.append(Violation("image-tag", where, "no image and no build"))
        elif image is not None and "build" not in service:
            why = image_problem(str(image))
            if why:
                problems.append(Violation("image-tag", where, why))
        written = (raw_services.get(name) or {}).get("environment") or {}
        if isinstance(written, list):
            written = dict(item.partition("=")[::2] for item in written)
        for key, value in written.items():
            text = "" if value is None else str(value)
            if SECRET_NAME.search(str(key)) and text and not text.startswith("${"):
                problems.append(Violation("inline-secret", where,
                                          f"environment {key} is written in the file: "
                                          "interpolate it (${VAR:?...}) or use an env_file"))
        for path, why in secret_strings(service):
            problems.append(Violation("inline-secret", where, f"{path}: {why}"))
    return problems
