"""A real tritonserver on this machine: the CPU form of the production model repository.

Production serves `triton_models/` with Triton's onnxruntime backend on a GPU. The server
from PyPI's nvidia-pytriton (its own virtualenv, `.venv-triton`, because it pins numpy<2)
has only the python backend, so `build_cpu_repository` rewrites each production config for
the python backend, keeping its names, dims and batching, and runs the same ONNX files with
ONNX Runtime inside it (`triton_models/python_backend/onnx_model.py`). It also adds
`face_pipeline`, the server-side pre/post-processing model (`face_pipeline.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import facescreen
from facescreen.config.environment import environment
from facescreen.devstack.process import ServerError, ServerProcess, free_port

REPO = Path(facescreen.__file__).resolve().parents[2]
PYTHON_BACKEND = REPO / "triton_models" / "python_backend"
ONNX_MODELS = ("detector", "embedder")
PIPELINE_MODEL = "face_pipeline"
# The parts of the package that face_pipeline imports inside the server (numpy + cv2 only).
# face_pipeline runs the pure core and the config loader (specs pulls in the decision
# policies, so the whole core goes: numpy, scipy and pydantic are in the Triton venv).
_LIB_PACKAGES = ("core", "config")


class TritonEnvError(RuntimeError):
    """`.venv-triton` is missing or broken; the message says how to make it."""


@dataclass(frozen=True)
class TritonEnv:
    """Where the tritonserver of a `.venv-triton` and its pieces are."""

    venv: Path
    server: Path
    backends: Path
    python_lib: Path | None  # the venv interpreter's libpython folder, for the backend stub

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def default_venv() -> Path:
    return environment().triton_venv or REPO / ".venv-triton"


def ensure_triton_env(venv: Path | None = None) -> TritonEnv:
    """Create or refresh the venv with the project's script (a no-op when its stamp matches)."""
    venv = venv or default_venv()
    script = REPO / "scripts" / "setup-triton-env.sh"
    if not script.is_file():
        raise TritonEnvError(f"{script} not found: create {venv} from requirements-triton.txt")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False,
                            env={**os.environ, "TRITON_VENV": str(venv)})
    if result.returncode != 0:
        raise TritonEnvError(f"{script} failed ({result.returncode}):\n"
                             f"{(result.stdout + result.stderr)[-3000:]}")
    return triton_env(venv)


def triton_env(venv: Path | None = None) -> TritonEnv:
    """Locate tritonserver in the venv and put the python backend's stub where it is looked for.

    The wheel ships one stub a Python version under `python_backend_stubs/X.Y/`; the server
    looks for it next to `libtriton_python.so` and fails every python model without it.
    """
    venv = venv or default_venv()
    python = venv / "bin" / "python"
    if not python.exists():
        raise TritonEnvError(f"{venv} does not exist: run `bash scripts/setup-triton-env.sh`")
    probe = ("import json, sys, sysconfig; print(json.dumps([sysconfig.get_paths()['purelib'], "
             "f'{sys.version_info[0]}.{sys.version_info[1]}', sysconfig.get_config_var('LIBDIR'), "
             "sysconfig.get_config_var('INSTSONAME')]))")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise TritonEnvError(f"{python} does not run: {out.stderr.strip()}")
    purelib, version, libdir, soname = json.loads(out.stdout)
    ts = Path(purelib) / "pytriton" / "tritonserver"
    server = ts / "bin" / "tritonserver"
    if not server.is_file():
        raise TritonEnvError(f"{server} missing: is nvidia-pytriton installed in {venv}?")
    stub = ts / "backends" / "python" / "triton_python_backend_stub"
    if not stub.is_file():
        source = ts / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not source.is_file():
            raise TritonEnvError(f"nvidia-pytriton ships no python backend stub for Python {version}")
        shutil.copy2(source, stub)
        stub.chmod(0o755)
    lib = Path(libdir) if libdir and soname and (Path(libdir) / soname).exists() else None
    return TritonEnv(venv=venv, server=server, backends=ts / "backends", python_lib=lib)


# ---------------------------------------------------------------------------------------------
# the CPU model repository


def _read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _write_config(config: mc.ModelConfig, path: Path, header: str) -> None:
    path.write_text(f"# {header}\n" + text_format.MessageToString(config))


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link the (large) ONNX file when on the same file system, else copy it."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _set_param(config: mc.ModelConfig, key: str, value: str | int) -> None:
    config.parameters[key].string_value = str(value)


def _cpu_form(production: mc.ModelConfig, threads: int) -> mc.ModelConfig:
    """The production config with the python backend on CPU instances; names and dims kept."""
    config = mc.ModelConfig()
    config.CopyFrom(production)
    config.backend = "python"
    config.ClearField("platform")
    del config.instance_group[:]
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    config.ClearField("optimization")  # GPU execution accelerators do not apply to python
    _set_param(config, "onnx_model", "model.onnx")
    _set_param(config, "intra_op_threads", threads)
    return config


def _pipeline_config(detector: mc.ModelConfig, embedder: mc.ModelConfig,
                     pipeline_toml: str, instances: int) -> mc.ModelConfig:
    """face_pipeline: JPEG frames in, every face out; no batch dim (faces per frame vary)."""
    text = f"""
name: "{PIPELINE_MODEL}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "jpeg" data_type: TYPE_STRING dims: [ -1 ] }},
  {{ name: "policy" data_type: TYPE_STRING dims: [ 1 ] optional: true }}
]
output [
  {{ name: "frame_error" data_type: TYPE_STRING dims: [ -1 ] }},
  {{ name: "frame_hw" data_type: TYPE_INT32 dims: [ -1, 2 ] }},
  {{ name: "frame_index" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "boxes" data_type: TYPE_FP32 dims: [ -1, 4 ] }},
  {{ name: "landmarks" data_type: TYPE_FP32 dims: [ -1, 5, 2 ] }},
  {{ name: "scores" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "quality" data_type: TYPE_STRING dims: [ -1 ] }},
  {{ name: "embeddings" data_type: TYPE_FP32 dims: [ -1, -1 ] }}
]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
"""
    config = text_format.Parse(text, mc.ModelConfig())
    _set_param(config, "python_path", "lib")
    _set_param(config, "pipeline_config", pipeline_toml)
    _set_param(config, "detector_model", detector.name)
    _set_param(config, "embedder_model", embedder.name)
    _set_param(config, "detector_max_batch", max(1, detector.max_batch_size))
    _set_param(config, "embedder_max_batch", max(1, embedder.max_batch_size))
    _set_param(config, "detector_outputs", ",".join(o.name for o in detector.output))
    return config


def build_cpu_repository(models_root: Path, out: Path, *, pipeline_toml: Path | None = None,
                         onnx_threads: int = 2, pipeline_instances: int = 1) -> Path:
    """Write the CPU model repository for `models_root` (production `triton_models/`) to `out`.

    detector and embedder keep their production inputs, outputs, `max_batch_size` and
    `dynamic_batching`; `face_pipeline` gets a copy of the pure core (`facescreen.core`) in
    `1/lib` so the repository is self-contained, and optionally a PipelineConfig TOML.
    Returns `out`.
    """
    out.mkdir(parents=True, exist_ok=True)
    configs: dict[str, mc.ModelConfig] = {}
    for name in ONNX_MODELS:
        production = _read_config(models_root / name / "config.pbtxt")
        onnx = models_root / name / "1" / "model.onnx"
        if not onnx.is_file():
            raise FileNotFoundError(f"{onnx} is missing: run `facescreen models build`")
        version = out / name / "1"
        version.mkdir(parents=True, exist_ok=True)
        configs[name] = _cpu_form(production, onnx_threads)
        _write_config(configs[name], out / name / "config.pbtxt",
                      f"CPU form of {models_root / name / 'config.pbtxt'} (written by facescreen)")
        shutil.copyfile(PYTHON_BACKEND / "onnx_model.py", version / "model.py")
        _link_or_copy(onnx, version / "model.onnx")

    version = out / PIPELINE_MODEL / "1"
    lib = version / "lib" / "facescreen"
    shutil.rmtree(version / "lib", ignore_errors=True)
    package = Path(facescreen.__file__).resolve().parent
    lib.mkdir(parents=True)
    shutil.copyfile(package / "__init__.py", lib / "__init__.py")
    for sub in _LIB_PACKAGES:
        (lib / sub).mkdir()
        for source in (package / sub).glob("*.py"):
            shutil.copyfile(source, lib / sub / source.name)
    shutil.copyfile(PYTHON_BACKEND / "face_pipeline.py", version / "model.py")
    toml = ""
    if pipeline_toml is not None:
        shutil.copyfile(pipeline_toml, version / "pipeline.toml")
        toml = "pipeline.toml"
    _write_config(_pipeline_config(configs["detector"], configs["embedder"], toml,
                                   pipeline_instances),
                  out / PIPELINE_MODEL / "config.pbtxt", "server-side pre/post-processing (BLS)")
    return out


# ---------------------------------------------------------------------------------------------
# the server


@dataclass
class TritonServer(ServerProcess):
    """A started tritonserver with the addresses clients need."""

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"

    def kill(self) -> None:
        """SIGKILL, then delete the python backend's /dev/shm regions it can no longer free.

        A graceful stop unlinks them; after SIGKILL each model instance would leave 1-3 MB
        in /dev/shm for good.
        """
        regions = self._shm_regions()
        super().kill()
        for region in regions:
            region.unlink(missing_ok=True)

    def _shm_regions(self) -> set[Path]:
        """Shared-memory files mapped by this server's process group (server and stubs)."""
        if self.process is None:
            return set()
        found: set[Path] = set()
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                stat = (proc / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[2]) != self.process.pid:  # pgrp
                    continue
                maps = (proc / "maps").read_text()
            except (OSError, ValueError, IndexError):
                continue
            for line in maps.splitlines():
                path = line.split()[-1]
                if path.startswith("/dev/shm/triton_python_backend_shm_region"):
                    found.add(Path(path))
        return found


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except OSError:
        return False


def start_triton(workdir: Path, models_root: Path, *, venv: Path | None = None,
                 timeout_s: float = 120.0, pipeline_toml: Path | None = None,
                 onnx_threads: int = 2, pipeline_instances: int = 1) -> TritonServer:
    """Build the CPU repository under `workdir` and start tritonserver on free loopback ports.

    Ready when `/v2/health/ready` answers 200 and every model of the repository is ready.
    Raises TritonEnvError when `.venv-triton` is absent, ServerError when the server fails.
    """
    env = triton_env(venv)
    repository = build_cpu_repository(models_root, workdir / "model_repository",
                                      pipeline_toml=pipeline_toml, onnx_threads=onnx_threads,
                                      pipeline_instances=pipeline_instances)
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    argv = [
        str(env.server), f"--model-repository={repository}",
        f"--backend-directory={env.backends}",
        "--http-address=127.0.0.1", f"--http-port={ports['http']}",
        "--grpc-address=127.0.0.1", f"--grpc-port={ports['grpc']}",
        "--metrics-address=127.0.0.1", f"--metrics-port={ports['metrics']}",
        "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0",  # no CUDA here
        "--strict-readiness=true", "--exit-timeout-secs=5",
        "--log-verbose=0",
    ]
    # The python backend's stub embeds the interpreter: it finds the venv's packages only when
    # the venv's bin/ is first on PATH, and a caller's PYTHONPATH/PYTHONHOME (say, .venv with
    # numpy 2) must not leak in. LD_LIBRARY_PATH points the stub at the venv interpreter's own
    # libpython rather than whatever libpython3.11 the system has (the binaries' RPATH already
    # covers nvidia_pytriton.libs).
    child_env = {
        "PATH": f"{env.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": "", "PYTHONHOME": "", "VIRTUAL_ENV": str(env.venv),
        "PYTHONNOUSERSITE": "1",
    }
    if env.python_lib is not None:
        child_env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(env.python_lib), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    models = [p.name for p in sorted(repository.iterdir()) if (p / "config.pbtxt").is_file()]
    base = f"http://127.0.0.1:{ports['http']}"

    def ready() -> bool:
        return _answers_200(f"{base}/v2/health/ready") and all(
            _answers_200(f"{base}/v2/models/{m}/ready") for m in models)

    server = TritonServer(name="tritonserver", argv=argv, log_path=workdir / "tritonserver.log",
                          ports=ports, env=child_env, ready=ready)
    server.start(timeout_s=timeout_s)
    return server


def main(argv: list[str] | None = None) -> int:
    """`python -m facescreen.devstack.triton [WORKDIR]`: serve the CPU repository until stopped.

    Ctrl-C or SIGTERM stops the server too: it runs in its own session, so nothing else would.
    """
    import signal
    import tempfile
    import threading

    args = argv if argv is not None else sys.argv[1:]
    workdir = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="triton-"))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        ensure_triton_env()
        server = start_triton(workdir, REPO / "triton_models")
    except (TritonEnvError, ServerError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"tritonserver ready: grpc {server.grpc_url}, http {server.http_url}, "
          f"metrics {server.metrics_url}; log {server.log_path}", flush=True)
    try:
        while not done.wait(0.5):
            if server.process is None or server.process.poll() is not None:
                print(f"tritonserver exited:\n{server.log_tail()}", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
