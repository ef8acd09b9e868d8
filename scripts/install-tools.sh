#!/usr/bin/env bash
# Installs the tools the chart tests (tests/charts) use, at pinned versions:
#   helm       built from source with `go install` (the Go module proxy is reachable
#              where prebuilt release downloads are not); cached in $(go env GOPATH)/bin
#   promtool   Debian's prometheus package (alert rules: promtool check/test rules)
# kubernetes-validate (Kubernetes' JSON schemas, offline) is a Python dev dependency in
# uv.lock. Idempotent: a tool already at its pinned version is left alone, so the slow
# Go build happens once per machine.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION="v3.22.0"

gobin() {
  local dir
  dir="$(go env GOBIN 2>/dev/null || true)"
  [[ -n "$dir" ]] || dir="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
  echo "$dir"
}

helm_ok() {
  # A helm built by `go install` reports its module version in its build info.
  local bin="$1"
  [[ -x "$bin" ]] || return 1
  go version -m "$bin" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+helm.sh/helm/v3[[:space:]]+${HELM_VERSION}([[:space:]]|$)"
}

# Go from the official tarball lives outside the default PATH on some machines.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi

if command -v go >/dev/null 2>&1; then
  HELM_BIN="$(gobin)/helm"
  if ! helm_ok "$HELM_BIN"; then
    echo "install-tools: building helm ${HELM_VERSION} with go install (slow on 2 cores; once per machine)"
    go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  fi
else
  echo "install-tools: no Go toolchain: cannot build helm ${HELM_VERSION}; the chart tests will say so" >&2
fi

if ! command -v promtool >/dev/null 2>&1; then
  echo "install-tools: installing promtool (Debian package prometheus)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi

# tusd, the reference tus server the uplink's tests and benchmarks upload to (issue #6).
TUSD_VERSION="v2.9.1"
tusd_ok() {
  local bin="$1"
  [[ -x "$bin" ]] || return 1
  go version -m "$bin" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/tus/tusd/v2[[:space:]]+${TUSD_VERSION}([[:space:]]|$)"
}
if command -v go >/dev/null 2>&1; then
  TUSD_BIN="$(gobin)/tusd"
  if ! tusd_ok "$TUSD_BIN"; then
    echo "install-tools: building tusd ${TUSD_VERSION} with go install (slow on 2 cores; once per machine)"
    go install "github.com/tus/tusd/v2/cmd/tusd@${TUSD_VERSION}"
  fi
else
  echo "install-tools: no Go toolchain: cannot build tusd ${TUSD_VERSION}; the uplink's tus tests will skip" >&2
fi
