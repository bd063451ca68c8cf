"""What every command shares: the pipeline configuration, the analyzer and the store."""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path
from typing import Literal, overload

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.runtime import RuntimeUnavailableError, make_backend
from facescreen.config.environment import environment
from facescreen.config.pipeline import ConfigError, load_pipeline_config
from facescreen.core.specs import PipelineConfig
from facescreen.watchlist.base import WatchlistStore
from facescreen.watchlist.store import LocalWatchlistStore

REPO_ROOT = Path(__file__).resolve().parents[3]


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2, never a traceback."""


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with model/quality settings")
    parser.add_argument("--models-root", type=Path, default=REPO_ROOT,
                        help="folder that model paths in the config are relative to")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1),
                        help="inference threads")


def add_store_args(parser: argparse.ArgumentParser, *, remote: bool = False) -> None:
    """`--data-dir`; with `remote`, `--store redis://...` as the alternative (one required)."""
    if not remote:
        parser.add_argument("--data-dir", type=Path, required=True,
                            help="watchlist data directory")
        return
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="watchlist data directory")
    where.add_argument("--store", metavar="URL",
                       help="Redis with vector search: redis://host:port/db, or rediss://"
                            "user:password@host:port/db for TLS (instead of --data-dir); "
                            "env:NAME or file:PATH keeps a password off the command line")


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    if args.config is None:
        return PipelineConfig()
    if not args.config.exists():
        raise CommandError(f"config file {args.config} does not exist")
    try:
        return load_pipeline_config(args.config)
    except ConfigError as exc:
        raise CommandError(f"bad config: {exc}") from None


def build_analyzer(args: argparse.Namespace) -> FaceAnalyzer:
    if not 1 <= args.threads <= 256:
        raise CommandError(f"--threads must be between 1 and 256, got {args.threads}")
    config = pipeline_config(args)
    try:  # [inference]: auto picks the fastest runtime that passes the gates on this CPU
        backend = make_backend(config, args.models_root, args.threads)
    except RuntimeUnavailableError as exc:
        raise CommandError(str(exc)) from None
    return FaceAnalyzer(backend, config)


@overload
def open_store(args: argparse.Namespace, *, remote: Literal[False] = ...) -> LocalWatchlistStore:
    ...


@overload
def open_store(args: argparse.Namespace, *, remote: Literal[True]) -> WatchlistStore:
    ...


def open_store(args: argparse.Namespace, *, remote: bool = False) -> WatchlistStore:
    """The data directory's store, or with `remote` and `--store` the Redis one."""
    config = pipeline_config(args)
    given = getattr(args, "store", None) if remote else None
    url = None if given is None else secret_value(given, "--store")
    if url is None:
        return LocalWatchlistStore(args.data_dir, embedder=config.embedder.name,
                                   dim=config.embedder.dim, gallery=config.gallery)
    from facescreen.watchlist.redis_store import RedisWatchlistStore  # only when asked for

    return RedisWatchlistStore(url, embedder=config.embedder.name, dim=config.embedder.dim,
                               index_kind=_index_kind())


def secret_value(text: str, flag: str) -> str:
    """A value that may hold a credential, given so that it stays off the command line
    (`ps` shows every argument): `env:NAME` reads the environment, `file:PATH` the first
    line of a file; anything else is the value itself."""
    if text.startswith("env:"):
        value = os.environ.get(text[4:])
        if not value:
            raise CommandError(f"{flag} env:{text[4:]}: that environment variable is not set")
        return value
    if text.startswith("file:"):
        try:
            lines = Path(text[5:]).read_text().splitlines()
        except OSError as exc:
            raise CommandError(f"{flag} file:{text[5:]}: {exc.strerror}") from None
        if not lines or not lines[0].strip():
            raise CommandError(f"{flag} file:{text[5:]} is empty")
        return lines[0].strip()
    return text


def _index_kind() -> Literal["FLAT", "HNSW"]:
    """FLAT unless FACESCREEN_REDIS_INDEX=HNSW; an existing index must be of that kind."""
    return environment().redis_index


def actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or environment().actor or getpass.getuser()
