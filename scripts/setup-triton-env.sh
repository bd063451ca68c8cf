#!/usr/bin/env bash
# Create .venv-triton: the virtualenv that the local tritonserver (PyPI nvidia-pytriton) and
# its python-backend models run in. Kept apart from .venv because nvidia-pytriton pins
# numpy<2. Idempotent: does nothing when the stamp matches requirements-triton.txt's hash.
#
#   bash scripts/setup-triton-env.sh          (PY=python3.11 to choose the interpreter)
#
# It also puts the python backend's stub for this Python version where tritonserver looks for
# it (backends/python/): the wheel ships the stubs apart, under python_backend_stubs/X.Y/.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-python3}"
VENV="${TRITON_VENV:-.venv-triton}"
REQ=requirements-triton.txt
HASH="$(sha256sum "$REQ" | cut -c1-12)"
STAMP="$VENV/.installed-$HASH"

if [ -f "$STAMP" ]; then
  echo "setup-triton-env: $VENV is up to date ($HASH)"
  exit 0
fi

"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "the Triton env needs Python 3.11"'
# A venv left half-made by an interrupted run, or made from other requirements, is rebuilt.
rm -rf "$VENV"
"$PY" -m venv "$VENV"
# A lock file installs with --no-deps: exactly these versions, no resolver (see its header).
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --no-deps -r "$REQ"
"$VENV/bin/python" -c 'import cv2, numpy, onnxruntime, tritonclient.grpc' \
  || { echo "setup-triton-env: $VENV cannot import its packages" >&2; exit 1; }

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
TS="$SITE/pytriton/tritonserver"
VER="$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
install -m 0755 "$TS/python_backend_stubs/$VER/triton_python_backend_stub" \
  "$TS/backends/python/triton_python_backend_stub"
chmod +x "$TS/bin/tritonserver"

touch "$STAMP"
echo "setup-triton-env: $VENV ready ($HASH)"
