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
    """House rules on a compose file: `resolved` is Compose's `config` output, `raw_text`
    the file as written. Credentials are looked for in what is written (where `${VAR}`
    interpolation keeps them out) and in what env_files bring in."""
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
        written_service = raw_services.get(name) or {}
        written = _environment(written_service.get("environment"))
        for key, value in written.items():
            text = "" if value is None else str(value)
            if SECRET_NAME.search(str(key)) and text and not text.startswith("${"):
                problems.append(Violation("inline-secret", where,
                                          f"environment {key} is written in the file: "
                                          "interpolate it (${VAR:?...}) or use an env_file"))
        from_files = {k: v for k, v in _environment(service.get("environment")).items()
                      if k not in written and k not in _anchored_keys(raw, written_service)}
        for path, why in [*secret_strings(written_service), *secret_strings(from_files)]:
            problems.append(Violation("inline-secret", where, f"{path}: {why}"))
    return problems


def _environment(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        return dict(str(item).partition("=")[::2] for item in value)
    return dict(value or {})


def _anchored_keys(raw: dict[str, Any], service: dict[str, Any]) -> set[str]:
    """Environment keys a service inherits through YAML merge keys (already in `service`
    after safe_load) or x- extension blocks: written in the file, not from an env_file."""
    keys = set(_environment(service.get("environment")))
    for key, block in raw.items():
        if str(key).startswith("x-") and isinstance(block, dict):
            keys |= set(_environment(block.get("environment")))
    return keys
