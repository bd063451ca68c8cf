"""The `facescreen` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from facescreen.analyzer.backends import ModelMissingError
from facescreen.bus.security import KafkaSecurityError
from facescreen.cli import (
    alert_store_cmd,
    alerts_cmd,
    api_cmd,
    demo_cmd,
    eval_cmd,
    models_cmd,
    run_cmd,
    services_cmd,
    stack_cmd,
    tokens_cmd,
    watchlist_cmd,
)
from facescreen.cli.common import CommandError
from facescreen.config.environment import EnvironmentConfigError, environment
from facescreen.ingest.images import ImageError
from facescreen.ingest.sources import SourceError
from facescreen.models.sources import SourceError as ModelSourceError
from facescreen.watchlist.enrol import EnrolmentError
from facescreen.watchlist.store import WatchlistError

USER_ERRORS = (CommandError, EnvironmentConfigError, KafkaSecurityError, EnrolmentError,
               WatchlistError, ImageError, SourceError, ModelMissingError, ModelSourceError)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facescreen", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    run_cmd.register(sub)
    watchlist_cmd.register(sub)
    alerts_cmd.register(sub)
    api_cmd.register(sub)
    models_cmd.register(sub)
    eval_cmd.register(sub)
    demo_cmd.register(sub)
    services_cmd.register(sub)
    stack_cmd.register(sub)
    alert_store_cmd.register(sub)
    tokens_cmd.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:  # every FACESCREEN_* variable, before the flags' defaults read them
        environment()
    except EnvironmentConfigError as exc:
        print(f"facescreen: error: {exc}", file=sys.stderr)
        return 2
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not args.verbose:  # kafka-python narrates every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        return int(args.handler(args))
    except USER_ERRORS as exc:
        print(f"facescreen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
