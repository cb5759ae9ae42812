# syntax=docker/dockerfile:1
# A ringkv node: `docker build -t ringkv .` then see compose.yaml or docs/deploy.md.
# Installs exactly the packages of requirements/runtime.lock (hash-checked, as scripts/bootstrap
# does), built in one stage and copied, without pip's caches, into a slim image run by a
# non-root user. Data lives on the volume /var/lib/ringkv.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A C compiler for the compiled hot path (setup.py); only this stage has it. Not pinned: the
# image tag fixes the Debian release, whose security updates replace exact package versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/build.lock requirements/runtime.lock requirements/
RUN python -m venv /opt/ringkv \
    && /opt/ringkv/bin/pip install --require-hashes -r requirements/build.lock \
    && /opt/ringkv/bin/pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml setup.py README.md LICENSE ./
COPY src ./src
# ringkv itself, built with the locked setuptools and Cython; its dependencies are all in the
# lock. The check fails the build if a hot-path module did not compile.
RUN /opt/ringkv/bin/pip install --no-deps --no-build-isolation . \
    && /opt/ringkv/bin/ringkv --help > /dev/null \
    && /opt/ringkv/bin/python -c "import importlib, ringkv.hotpath as h; [importlib.import_module(m) for m in h.MODULES]; s = h.status(); assert s['mode'] == 'compiled', s"

FROM ${PYTHON_IMAGE}
# The user the node runs as (uid/gid 10001, fixed so volumes and fsGroup can name it), and the
# directories it owns: data (a volume) and secrets (compose's init service writes them there).
RUN groupadd --system --gid 10001 ringkv \
    && useradd --system --uid 10001 --gid ringkv --home-dir /var/lib/ringkv --no-create-home \
       --shell /usr/sbin/nologin ringkv \
    && install -d -o ringkv -g ringkv -m 0750 /var/lib/ringkv \
    && install -d -o ringkv -g ringkv -m 0700 /etc/ringkv/secrets
COPY --from=build /opt/ringkv /opt/ringkv
COPY deploy/docker/ringkv-init-secrets /usr/local/bin/ringkv-init-secrets
ENV PATH=/opt/ringkv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RINGKV_HOST=0.0.0.0 \
    RINGKV_DATA_DIR=/var/lib/ringkv/data
USER 10001:10001
WORKDIR /var/lib/ringkv
VOLUME ["/var/lib/ringkv"]
# RESP (redis-cli, redis-py), HTTP (API, console, /metrics), inter-node RPC.
EXPOSE 7379 7380 7381
# Ready: the engine is open and no background flush or compaction failed (GET /readyz).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('RINGKV_HTTP_PORT', '7380'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["ringkv"]
CMD ["serve"]
