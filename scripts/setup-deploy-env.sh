#!/usr/bin/env bash
# Create .venv-deploy: the virtualenv of the offline deployment checks (docker-compose's
# parser for docker-compose.yml, a PromQL parser for the dashboard and the alert rules).
# Apart from .venv because docker-compose 1.29.2 pins jsonschema<4 and PyYAML<6.
# Idempotent: exits at once when the stamp matches requirements-deploy.txt's hash.
#
#   bash scripts/setup-deploy-env.sh        (PY=python3.11 to choose the interpreter,
#                                            DEPLOY_VENV=DIR to put it elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-python3}"
VENV="${DEPLOY_VENV:-.venv-deploy}"
LOCK=requirements-deploy.txt
HASH="$(sha256sum "$LOCK" | cut -c1-12)"
STAMP="$VENV/.installed-$HASH"

if [ -f "$STAMP" ]; then
  echo "setup-deploy-env: $VENV is up to date ($HASH)"
  exit 0
fi

"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "the deploy env needs Python 3.11"'
rm -rf "$VENV"   # half-made, or made from another lock: start again
"$PY" -m venv "$VENV"
echo '*' > "$VENV/.gitignore"   # the folder keeps itself out of git
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --no-deps -r "$LOCK"
"$VENV/bin/docker-compose" version --short >/dev/null \
  || { echo "setup-deploy-env: docker-compose does not run in $VENV" >&2; exit 1; }
"$VENV/bin/python" -c 'import promql_parser; promql_parser.parse("up")' \
  || { echo "setup-deploy-env: promql_parser does not import in $VENV" >&2; exit 1; }

touch "$STAMP"
echo "setup-deploy-env: $VENV ready ($HASH)"
