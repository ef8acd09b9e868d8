#!/usr/bin/env bash
# `make images`: every service image, built on this machine with podman from the
# repository's Dockerfile, tagged localhost/trailerlink/<service>:<version>.
#
# No image registry is reachable here, so the Dockerfile's base (ARG PYTHON_IMAGE, the
# pinned upstream python:3.11 slim image for production builds) is replaced by a local
# one made from Debian's packages with mmdebstrap: bookworm's python3 (3.11, as
# .python-version), pip, ca-certificates and passwd, carrying this host's CA bundle
# (HTTPS leaves this machine through an intercepting proxy that the host trusts; pip and
# uv inside the build must trust it too). It is made once and kept by podman.
#
# podman reads a private containers.conf (CONTAINERS_CONF): runtime runc (crun refuses
# this host's hybrid cgroups) and nofile/nproc limits root may set here.
# Builds use the host network (never podman's bridge, which rewrites iptables) and
# podman's layer cache: a second run with nothing changed takes seconds.
#
#   scripts/images.sh [service ...]      default: all six
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES=(gateway codec uplink worklist ingest monitor)
((${#@})) && SERVICES=("$@")
# Not services but what a real node needs that no registry can give here (make cluster
# NODE=real): "kafka", the trailer chart's broker (images/kafka), and "pause", the pod
# sandbox (images/pause). Built only when named.
CACHE="${TRAILERLINK_CACHE:-$HOME/.cache/trailerlink}"
SUITE=bookworm
BASE_PACKAGES="python3,python3-pip,python3-venv,python-is-python3,ca-certificates,passwd"
# A base is remade when its recipe or the host's CA bundle changes: its tag says both.
recipe_hash() {  # <packages>
  (echo "$1"; cat /etc/ssl/certs/ca-certificates.crt) | sha256sum | cut -c1-12
}
BASE="localhost/trailerlink/python-base:3.11-${SUITE}-$(recipe_hash "$BASE_PACKAGES")"
JRE_PACKAGES="openjdk-17-jre-headless,passwd,ca-certificates"
VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open("services/gateway/pyproject.toml", "rb"))["project"]["version"])')"

fail() { echo "images: $*" >&2; exit 3; }
for tool in podman mmdebstrap runc; do
  command -v "$tool" >/dev/null 2>&1 \
    || fail "$tool is missing: run 'make setup' (or apt-get install podman buildah runc mmdebstrap uidmap)"
done

mkdir -p "$CACHE/containers"
export CONTAINERS_CONF="$CACHE/containers/containers.conf"
# Limits the containers start with: podman's defaults (nofile 1048576, nproc 4194304)
# are above what root may set here (runc: "error setting rlimit ... not permitted"); a
# service needs far less.
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF

# A base made from Debian packages, carrying this host's CA bundle, once; kept by podman
# under its tag (tags are keyed by the recipe and the bundle, so either change remakes it).
make_base() {  # <tag> <packages> [podman import --change ...]
  local tag="$1" packages="$2" tarball change
  shift 2
  podman image exists "$tag" && return 0
  echo "images: making the base image $tag from Debian packages (mmdebstrap; once)"
  tarball="$(mktemp --suffix=.tar)"
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$tarball" \
    || { rm -f "$tarball"; fail "mmdebstrap could not make $tag (Debian's mirror unreachable?); nothing built"; }
  local changes=(--change 'CMD ["/bin/bash"]')
  for change in "$@"; do changes+=(--change "$change"); done
  podman import --quiet "${changes[@]}" "$tarball" "$tag" >/dev/null \
    || { rm -f "$tarball"; fail "podman import of $tag failed; nothing built"; }
  rm -f "$tarball"
}
make_base "$BASE" "$BASE_PACKAGES" \
  'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  'ENV PIP_BREAK_SYSTEM_PACKAGES=1'

# What goes into the images: the build context as .dockerignore leaves it (tracked and
# new files, tests and docs excluded) plus the base. An image built from this digest (a
# stamp per service beside the containers.conf: digest and image id) is up to date and
# not built again: podman's own cache would still send the context and replay every
# step, half a minute for the six.
context_digest="$(
  { echo "$BASE"
    git ls-files -z --cached --others --exclude-standard -- Dockerfile .dockerignore \
        pyproject.toml uv.lock proto scripts/gen_proto.py scripts/trim_venv.py libs services \
      | grep -zv -e '/tests/' -e '^tests/' -e '/_generated/' -e '^libs/testing/src/' \
          -e '^services/ctl/src/' \
      | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16)"
mkdir -p "$CACHE/images"

build_kafka() {
  local kafka_version jars context tag
  kafka_version="$(sed -n 's/^KAFKA_VERSION = "\(.*\)"$/\1/p' libs/testing/src/trailerlink_testing/kafka/__init__.py)"
  tag="localhost/trailerlink/kafka:${kafka_version}"
  local jre="localhost/trailerlink/jre-base:17-${SUITE}-$(recipe_hash "$JRE_PACKAGES")"
  make_base "$jre" "$JRE_PACKAGES"
  jars="$(.venv/bin/python -c 'from trailerlink_testing.kafka import ensure_kafka_jars; print(ensure_kafka_jars())')"
  context="$(mktemp -d)"
  cp -r "$jars" "$context/libs"
  rm -f "$context/libs/.complete"
  cp -r images/kafka/bin images/kafka/Containerfile "$context/"
  echo "images: building $tag"
  podman build --quiet --network=host --layers --build-arg JRE_IMAGE="$jre" \
    --tag "$tag" --file "$context/Containerfile" "$context" >/dev/null \
    || { rm -rf "$context"; fail "building $tag failed"; }
  rm -rf "$context"
}

build_pause() {
  local context tag="localhost/trailerlink/pause:1"
  command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
  context="$(mktemp -d)"
  (cd images/pause && CGO_ENABLED=0 GOFLAGS= go build -trimpath -ldflags "-s -w" \
      -o "$context/pause" pause.go) || { rm -rf "$context"; fail "building pause failed"; }
  cp images/pause/Containerfile "$context/"
  echo "images: building $tag"
  podman build --quiet --network=host --tag "$tag" --file "$context/Containerfile" \
    "$context" >/dev/null || { rm -rf "$context"; fail "building $tag failed"; }
  rm -rf "$context"
}

for service in "${SERVICES[@]}"; do
  case "$service" in
    kafka) build_kafka; continue ;;
    pause) build_pause; continue ;;
  esac
  tag="localhost/trailerlink/${service}:${VERSION}"
  stamp="$CACHE/images/${service}.stamp"
  image_id="$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
  if [[ -n "$image_id" && -f "$stamp" && "$(cat "$stamp")" == "$context_digest $image_id" ]]; then
    echo "images: $tag is up to date"
    continue
  fi
  echo "images: building $tag"
  rm -f "$stamp"
  podman build --quiet --network=host --layers --target "$service" \
    --build-arg PYTHON_IMAGE="$BASE" --build-arg VERSION="$VERSION" \
    --tag "$tag" --file Dockerfile . >/dev/null \
    || fail "building $tag failed (run: CONTAINERS_CONF=$CONTAINERS_CONF podman build --network=host --target $service --build-arg PYTHON_IMAGE=$BASE .)"
  echo "$context_digest $(podman image inspect --format '{{.Id}}' "$tag")" >"$stamp"
done
podman images --filter reference='localhost/trailerlink/*' \
  --format '{{.Repository}}:{{.Tag}} {{.Size}}' | sort
