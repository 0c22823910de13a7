# syntax=docker/dockerfile:1
#
# cleanup-worker image: one image for every program (`run`, `migrate`, `backfill`,
# `replay`, `dlq`); the command is the container's arguments.
#
#   docker build -t cleanup-worker .
#   docker run --rm cleanup-worker --help
#
# For a production build, pin both FROM lines by digest (python:3.11-slim@sha256:…).

# --- builder: build our wheel and install it, with the pinned dependencies, into /opt/venv
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# README.md is the package's long description (a glob, so its absence is only a warning).
COPY pyproject.toml constraints.txt README.md* ./
COPY src ./src

# Every runtime dependency in constraints.txt ships a manylinux wheel (x86_64 and aarch64),
# so --only-binary keeps compilers out of even this stage: a missing wheel fails loudly
# instead of compiling. The venv has no pip of its own; the builder's pip installs into it.
RUN pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --only-binary=:all: \
        -c constraints.txt /dist/*.whl \
 && /opt/venv/bin/cleanup-worker --version

# --- runtime: the interpreter, the venv, an unprivileged user; nothing else
FROM python:3.11-slim

LABEL org.opencontainers.image.title="cleanup-worker" \
      org.opencontainers.image.description="Revokes the API keys of users removed from an account, from Kafka membership events." \
      org.opencontainers.image.licenses="Apache-2.0"

# uid/gid 10001: the Kubernetes manifests run as this user (runAsUser: 10001).
RUN groupadd --system --gid 10001 cleanup \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin cleanup

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CLEANUP_LOG_FORMAT=json \
    CLEANUP_HTTP_PORT=8080

# An empty, root-owned working directory: Settings reads an optional `.env` from here,
# and the process writes nothing to it (the root filesystem may be read-only).
WORKDIR /srv/cleanup-worker
USER 10001:10001

# /livez, /readyz and /metrics of `cleanup-worker run`.
EXPOSE 8080

# Liveness of `run` (slim has no curl). Other commands have no HTTP server: compose and
# Kubernetes disable this check for them and use their own probes for `run`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CLEANUP_HTTP_PORT', '8080') + '/livez', timeout=4)"]

# SIGTERM starts the drain; the process exits 0 within CLEANUP_SHUTDOWN_GRACE_S.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cleanup-worker"]
CMD ["run"]
