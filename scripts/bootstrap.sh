#!/usr/bin/env bash
# Installs what trailerlink needs on a fresh machine of this project's kind:
# Debian packages (scripts/system-packages.txt), uv, the Python workspace, the
# generated event contracts and the Kafka broker's jars. Idempotent and quiet when
# everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each line of system-packages.txt: "<command> <package>" (install the package when the
# command is missing, whoever installed it before) or just "<package>" (check dpkg).
missing=()
while read -r first second _; do
  [[ -z "$first" || "$first" == \#* ]] && continue
  if [[ -n "${second:-}" ]]; then
    command -v "$first" >/dev/null 2>&1 || missing+=("$second")
  else
    dpkg-query -W -f='${Status}' "$first" 2>/dev/null | grep -q "install ok installed" || missing+=("$first")
  fi
done < scripts/system-packages.txt
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  # Another apt run (an unattended upgrade, a parallel job) may hold the lock: wait.
  apt_get() { $SUDO apt-get -o DPkg::Lock::Timeout=600 "$@"; }
  apt_get update -qq
  DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv from PyPI"
  python3 -m pip install --quiet "uv==0.13.9"
fi

export UV_PYTHON_DOWNLOADS=never
uv sync --all-packages --frozen --quiet 2>/dev/null || uv sync --all-packages --quiet
.venv/bin/python scripts/gen_proto.py >/dev/null
.venv/bin/python -m trailerlink_testing.kafka fetch >/dev/null
scripts/install-tools.sh
# The single-machine Kubernetes the cluster tests install the charts on (built once).
scripts/cluster-tools.sh >/dev/null
