"""House rules for the Dockerfiles, read from the files themselves (no daemon needed).

- `image-tag`: every FROM names a tag or digest (or an earlier stage, or an ARG whose
  default does), never `latest`;
- `no-root`: the final stage ends as a non-root USER;
- `pinned-install`: every `pip install` is constrained by constraints.txt (`-c`) or
  installs a lock file with `--no-deps -r`;
- `build-tools`: the final stage installs no compiler or build tool and runs no package
  manager install (what it needs is copied from earlier stages).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from facescreen.devstack.deploycheck.policy import Violation, image_problem

BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|cmake|build-essential|npm|git|cargo|"
                         r"rustc|python3?-dev|libc6?-dev)\b")
PIP = re.compile(r"(.*/)?pip3?(\.\d+)?")
PACKAGE_INSTALL = re.compile(r"\b(apt-get|apt|apk|dnf|yum|microdnf)\s+(-\S+\s+)*"
                             r"(install|add)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    lines: list[tuple[str, str]] = field(default_factory=list)  # (instruction, arguments)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments gone."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    if pending:
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in order."""
    args: dict[str, str] = {}
    found: list[Stage] = []
    for word, rest in instructions(text):
        if word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            found.append(Stage(parts[0], name))
        elif found:
            found[-1].lines.append((word, rest))
        elif word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip().strip('"')
    return args, found


def _resolve(base: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base)


def check_dockerfile(text: str, name: str = "Dockerfile") -> list[Violation]:
    args, found = stages(text)
    problems: list[Violation] = []
    if not found:
        return [Violation("image-tag", name, "no FROM")]
    names = {s.name for s in found if s.name}
    for stage in found:
        where = f"{name} stage {stage.name or stage.base}"
        base = _resolve(stage.base, args)
        if base not in names and base != "scratch":
            why = image_problem(base)
            if why:
                problems.append(Violation("image-tag", where, f"FROM {why}"))
        for word, rest in stage.lines:
            if word == "RUN":
                problems.extend(_pip_rules(rest, where))
    final = found[-1]
    where = f"{name} final stage"
    users = [rest for word, rest in final.lines if word == "USER"]
    if not users:
        problems.append(Violation("no-root", where, "no USER: the container runs as root"))
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(Violation("no-root", where, f"USER {users[-1]} is root"))
    for word, rest in final.lines:
        if word == "RUN" and PACKAGE_INSTALL.search(rest):
            tools = BUILD_TOOLS.findall(rest)
            what = f" (build tools: {', '.join(tools)})" if tools else ""
            problems.append(Violation("build-tools", where,
                                      f"installs packages in the final stage{what}"))
    return problems


def _pip_rules(command: str, where: str) -> list[Violation]:
    problems = []
    for part in re.split(r"&&|;|\|\|", command):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        if "install" not in words or not any(PIP.fullmatch(w) for w in words):
            continue
        constrained = any(w in ("-c", "--constraint") or w.startswith("--constraint=")
                          for w in words)
        locked = "--no-deps" in words and any(w in ("-r", "--requirement") for w in words)
        if not (constrained or locked):
            problems.append(Violation("pinned-install", where,
                                      f"pip install without -c constraints.txt: {part.strip()}"))
    return problems
