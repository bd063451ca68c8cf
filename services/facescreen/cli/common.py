"""What every command shares: the pipeline configuration, the analyzer and the store."""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import OnnxRuntimeBackend
from facescreen.core.specs import PipelineConfig
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


def add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, required=True, help="watchlist data directory")


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    if args.config is None:
        return PipelineConfig()
    if not args.config.exists():
        raise CommandError(f"config file {args.config} does not exist")
    try:
        return PipelineConfig.from_toml(args.config)
    except (ValueError, TypeError) as exc:
        raise CommandError(f"bad config {args.config}: {exc}") from exc


def build_analyzer(args: argparse.Namespace) -> FaceAnalyzer:
    config = pipeline_config(args)
    backend = OnnxRuntimeBackend(config.detector, config.embedder, args.models_root, args.threads)
    return FaceAnalyzer(backend, config)


def open_store(args: argparse.Namespace) -> LocalWatchlistStore:
    config = pipeline_config(args)
    return LocalWatchlistStore(args.data_dir, embedder=config.embedder.name,
                               dim=config.embedder.dim)


def actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or os.environ.get("FACESCREEN_ACTOR") or getpass.getuser()
