# syntax=docker/dockerfile:1
#
# enricher: the Socket.IO enrichment proxy, as a container image.
#
#   podman build -t enricher .        (or: docker build -t enricher .)
#   docker run --read-only -p 8080:8080 -p 9090:9090 enricher \
#       serve --upstream http://backend:3000 --admin-listen 0.0.0.0:9090
#
# Configuration (README "Configuration"; precedence: defaults < file < ENRICHER_* < flags):
#   - environment: ENRICHER_UPSTREAM__URL=http://backend:3000, ENRICHER_REST__HEADERS='{...}', ...
#   - a mounted file:  -v ./config.yaml:/etc/enricher/config.yaml:ro
#                      ... enricher serve --config /etc/enricher/config.yaml
#   - flags after the image name: serve --upstream URL --listen HOST:PORT --admin-listen HOST:PORT
# The admin address (/healthz, /readyz, /metrics) defaults to 127.0.0.1:9090, which nothing
# outside the container can reach: in a container give it, as `--admin-listen 0.0.0.0:9090`
# or `admin_listen: 0.0.0.0:9090` in the config file, and keep port 9090 private. The public
# address defaults to 0.0.0.0:8080. Neither is set as ENV here on purpose: the environment
# overrides the config file, so an ENV in the image would pin them for every deployment.
#
# Dependencies come from requirements.lock (runtime) and requirements-build.lock (setuptools,
# to build enricher's own wheel), both with the hashes of every file on PyPI, so amd64 and
# arm64 builds install the same versions. Regenerate both after changing pyproject.toml's
# [project] dependencies (Python 3.11, the python3 of Debian bookworm), with pip-tools:
#   pip-compile --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
#       --no-emit-find-links -o requirements.lock pyproject.toml
#   pip-compile --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
#       --no-emit-find-links --build-deps-for wheel --only-build-deps \
#       -o requirements-build.lock pyproject.toml
# (with a pip that sees only PyPI: PIP_CONFIG_FILE=/dev/null and no PIP_FIND_LINKS, else local
# wheels' hashes or paths end up in the files; CUSTOM_COMPILE_COMMAND sets the header line).
#
# Downloads use the build secret `ca` (a CA bundle) when one is given, for builds behind a
# TLS-intercepting proxy: podman build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt
# Without it they use the system's trust store.

# ---------------------------------------------------------------- build: the venv
FROM debian:bookworm-slim AS build

# Debian stable's packages are not pinned: the archive keeps only the current version of each,
# so a pin breaks the build at the next security update. The Python packages, what enricher
# is made of, are pinned by the lock files.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# /opt/build: pip and setuptools, to build and install. /opt/venv: what the image runs, made
# without pip and filled by /opt/build's pip (--python). Both use /usr/bin/python3, the same
# path as in the final stage, so /opt/venv works there as it is.
RUN python3 -m venv /opt/build \
    && python3 -m venv --without-pip /opt/venv

WORKDIR /src
COPY requirements.lock requirements-build.lock ./
RUN --mount=type=secret,id=ca,required=false \
    PIP_CERT=$([ -f /run/secrets/ca ] && echo /run/secrets/ca) \
    /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes --only-binary=:all: -r requirements-build.lock
RUN --mount=type=secret,id=ca,required=false \
    PIP_CERT=$([ -f /run/secrets/ca ] && echo /run/secrets/ca) \
    /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir \
        --disable-pip-version-check --require-hashes --only-binary=:all: -r requirements.lock

# enricher's own wheel, built with the locked setuptools (no build isolation: it would fetch
# an unpinned one), installed without dependencies (they are all above; `pip check` fails
# the build if pyproject.toml asks for one that requirements.lock lacks). pip compiles every
# module to bytecode as it installs, so nothing is written at run time.
COPY pyproject.toml README.md ./
COPY enricher ./enricher
RUN /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps \
        --no-build-isolation --no-index --wheel-dir /tmp/wheels . \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir \
        --disable-pip-version-check --no-deps --no-index /tmp/wheels/enricher-*.whl \
    && /opt/build/bin/pip --python /opt/venv/bin/python check

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim AS runtime

LABEL org.opencontainers.image.title="enricher" \
      org.opencontainers.image.description="Socket.IO enrichment proxy: complete rooms for chat sidebars, every other event passed through."

# Debian's python3 and nothing to build with: no pip, no compiler. ca-certificates so that an
# https:// or wss:// upstream can be verified. Not pinned, as above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 enricher \
    && useradd --uid 10001 --gid enricher --no-create-home --no-log-init \
        --home-dir /nonexistent --shell /usr/sbin/nologin enricher

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Numeric, so Kubernetes' runAsNonRoot can check it. Nothing is written at run time: the root
# filesystem can be read-only (readOnlyRootFilesystem: true), with no /tmp needed.
USER 10001:10001

# 8080: browsers (Socket.IO). 9090: admin, /healthz /readyz /metrics (see --admin-listen above).
EXPOSE 8080 9090

# No HEALTHCHECK: Kubernetes probes /healthz and /readyz on the admin port.
# enricher is PID 1 and handles SIGTERM/SIGINT itself (held rooms flushed, then exit).
ENTRYPOINT ["enricher"]
CMD ["serve"]
