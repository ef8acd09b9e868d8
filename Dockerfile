# syntax=docker/dockerfile:1
#
# Every trailerlink service image, from one multi-stage build with a target per service:
#
#   docker build --target gateway -t <registry>/trailerlink/gateway:<version> .
#
# Targets: gateway codec uplink worklist (trailer), ingest (data centre), monitor (both).
# The build context is the repository root: the uv workspace has one lock file, and a
# service's image holds that service plus only the libs it depends on (uv sync --package).
# Why one file and not one per service folder: README.md, "Deployment".

# Pinned base. Override with a digest from your registry mirror for reproducible builds:
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-trixie@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

# ---------------------------------------------------------------------------------------
# build: the workspace, its generated event contracts, and the tools to install it
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN python -m pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
# strip (binutils) for trim_venv.py; the build stage only, never a runtime image.
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
    && rm -rf /var/lib/apt/lists/*
ENV UV_PYTHON_DOWNLOADS=never \
    UV_FROZEN=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY proto/ proto/
COPY scripts/gen_proto.py scripts/trim_venv.py scripts/
COPY libs/ libs/
COPY services/ services/
# The Python contracts are generated from proto/ and never committed. Generate them with
# the lock file's grpcio-tools (the dev group, in a throw-away venv) *before* any wheel is
# built: trailerlink-events ships them as wheel artifacts.
RUN UV_PROJECT_ENVIRONMENT=/tmp/gen-venv uv sync --only-group dev --no-install-workspace \
    && /tmp/gen-venv/bin/python scripts/gen_proto.py \
    && test -f libs/events/src/trailerlink_events/_generated/events_pb2.py \
    && rm -rf /tmp/gen-venv

# One virtualenv per service: the service and the libs it needs, installed as wheels
# (--no-editable) so the runtime image needs no source tree. Same path as at runtime.
# trim_venv.py then drops what never runs (unused imagecodecs codecs, test suites) and
# proves the lossless codecs still round-trip.
ENV UV_PROJECT_ENVIRONMENT=/opt/trailerlink/venv

FROM build AS venv-gateway
RUN uv sync --no-dev --no-editable --package trailerlink-gateway \
    && /opt/trailerlink/venv/bin/python scripts/trim_venv.py /opt/trailerlink/venv

FROM build AS venv-codec
RUN uv sync --no-dev --no-editable --package trailerlink-codec \
    && /opt/trailerlink/venv/bin/python scripts/trim_venv.py /opt/trailerlink/venv

FROM build AS venv-uplink
RUN uv sync --no-dev --no-editable --package trailerlink-uplink \
    && /opt/trailerlink/venv/bin/python scripts/trim_venv.py /opt/trailerlink/venv

FROM build AS venv-worklist
RUN uv sync --no-dev --no-editable --package trailerlink-worklist \
    && /opt/trailerlink/venv/bin/python scripts/trim_venv.py /opt/trailerlink/venv

FROM build AS venv-ingest
RUN uv sync --no-dev --no-editable --package trailerlink-ingest \
    && /opt/trailerlink/venv/bin/python scripts/trim_venv.py /opt/trailerlink/venv

FROM build AS venv-monitor
RUN uv sync --no-dev --no-editable --package trailerlink-monitor \
    && /opt/trailerlink/venv/bin/python scripts/trim_venv.py /opt/trailerlink/venv

# ---------------------------------------------------------------------------------------
# runtime: what every service image shares
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="trailerlink" \
      org.opencontainers.image.description="Mammograms from NHS breast-screening trailers to PACS" \
      org.opencontainers.image.version="${VERSION}"
# A fixed numeric uid/gid, so Kubernetes can verify runAsNonRoot and volumes can be
# group-owned (fsGroup 10001 in the charts).
RUN groupadd --system --gid 10001 trailerlink \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin trailerlink \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/trailerlink
# Read-only root filesystem: bytecode is compiled at build time and never written at
# run time; the only writable paths are volumes (TRAILERLINK_DATA_DIR and /tmp).
ENV PATH=/opt/trailerlink/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRAILERLINK_DATA_DIR=/var/lib/trailerlink
WORKDIR /var/lib/trailerlink
USER 10001:10001
# Every service finishes or abandons in-flight work on SIGTERM (TRAILERLINK_SHUTDOWN_GRACE_SECONDS).
STOPSIGNAL SIGTERM

# ---------------------------------------------------------------------------------------
# one target per service
# ---------------------------------------------------------------------------------------
FROM runtime AS gateway
COPY --from=venv-gateway /opt/trailerlink/venv /opt/trailerlink/venv
EXPOSE 9101 11112
ENTRYPOINT ["trailerlink-gateway"]

FROM runtime AS codec
COPY --from=venv-codec /opt/trailerlink/venv /opt/trailerlink/venv
EXPOSE 9102
ENTRYPOINT ["trailerlink-codec"]

FROM runtime AS uplink
COPY --from=venv-uplink /opt/trailerlink/venv /opt/trailerlink/venv
EXPOSE 9103
ENTRYPOINT ["trailerlink-uplink"]

FROM runtime AS worklist
COPY --from=venv-worklist /opt/trailerlink/venv /opt/trailerlink/venv
EXPOSE 9105 11113
ENTRYPOINT ["trailerlink-worklist"]

FROM runtime AS ingest
COPY --from=venv-ingest /opt/trailerlink/venv /opt/trailerlink/venv
EXPOSE 9104 8443
ENTRYPOINT ["trailerlink-ingest"]

FROM runtime AS monitor
COPY --from=venv-monitor /opt/trailerlink/venv /opt/trailerlink/venv
EXPOSE 9106
ENTRYPOINT ["trailerlink-monitor"]
